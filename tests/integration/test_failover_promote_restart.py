"""A promoted master that restarts (kill -9) still answers a retry of a request the old
master applied: the snapshot the promotion writes carries the replica's table of recent
requests, and the restarted master recovers it from there (its journal starts after it)."""

from __future__ import annotations

import msgpack

from mwcluster.testing import MasterProcess, RawDealer, wait_for
from mwcluster.testing.checkpoint import write
from mwcluster.testing.failover import StandbyProcess
from mwcluster.wire.protocol import Op

CLIENT_ID = b"retrying-client"
SYNC = 2


def put(dealer: RawDealer, key: str, request_id: int):
    return dealer.call(Op.PUT, [key, msgpack.packb({"k": key}), None], SYNC,
                       request_id=request_id, client_id=CLIENT_ID)


def test_a_promoted_master_restarted_answers_a_retry_of_the_old_masters_request(tmp_path):
    with MasterProcess(tmp_path / "m", durability="sync") as master, \
            StandbyProcess(tmp_path / "c", master) as standby:
        with RawDealer(master.client_endpoint) as dealer:
            first = put(dealer, "/once", 10_000)
            assert first.status == 0, first
            write(dealer, "/after", 50)
        wait_for(lambda: standby.status()["replica_txid"] >= first.txid + 50,
                 what="standby caught up")
        report = standby.promote()
        assert report["promoted"] and report["recent_requests_adopted"] >= 51, report
        with RawDealer(standby.promote_client_endpoint) as dealer:
            own = put(dealer, "/new", 30_000)          # the promoted master's own journal
            assert own.status == 0 and own.txid > report["txid"], own
            before = dealer.status()
            assert before["durable_txid"] == before["txid"]
        assert standby.kill() < 0                      # the promoted master dies with it
        with MasterProcess(tmp_path / "c" / "master") as again, \
                RawDealer(again.client_endpoint) as dealer:
            status = dealer.status()
            assert again.epoch > report["epoch"]
            assert status["recovery"]["snapshot_txid"] == report["txid"]
            assert (status["txid"], status["digest"]) == (before["txid"], before["digest"])
            for original, request_id, key in ((first, 10_000, "/once"), (own, 30_000, "/new")):
                retry = put(dealer, key, request_id)
                assert (retry.status, retry.txid, retry.result) == \
                    (0, original.txid, original.result)
            assert dealer.status()["txid"] == before["txid"]          # nothing applied again
            assert dealer.call(Op.STAT, ["/once"]).result[0] == 1     # still version 1
            assert again.terminate() == 0
