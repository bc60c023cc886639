"""Manual promotion with real processes: under a load of sync writes from a client that knows
both endpoints, the standby is promoted; it fences the old master, takes its last records,
and serves under a higher epoch; no acknowledged sync write is lost and the client switches."""

from __future__ import annotations

import pytest

from mwcluster import Client, errors
from mwcluster.testing import MasterProcess, RawDealer, wait_for
from mwcluster.testing.checkpoint import write
from mwcluster.testing.failover import StandbyProcess, SyncWriter


def test_promote_under_sync_load_loses_no_acknowledged_write(tmp_path):
    with MasterProcess(tmp_path / "m", durability="sync") as master, \
            StandbyProcess(tmp_path / "c", master) as standby:
        with RawDealer(master.client_endpoint) as dealer:
            write(dealer, "/before", 300)
        wait_for(lambda: standby.status()["replica_txid"] >= 300, what="standby caught up")
        endpoints = [master.client_endpoint, standby.promote_client_endpoint]
        writer = SyncWriter(endpoints, "/load", count=20_000, max_s=60).start()
        try:
            wait_for(lambda: len(writer.acked) >= 200 or writer.error, 30, "writes acked")
            assert writer.error is None, writer.error
            report = standby.promote()
            at_promotion = len(writer.acked)
            wait_for(lambda: len(writer.acked) >= at_promotion + 200 or writer.error, 30,
                     "writes acked by the new master")
        finally:
            writer.stop()
        assert writer.error is None, writer.error
        assert report["epoch"] > master.epoch and report["promoted"]
        assert report["old_master_fenced"] is True
        assert report["records_missing"] == 0
        assert report["client"] == standby.promote_client_endpoint
        assert report["durability"] == "sync"       # the old master's, read at the promotion
        assert writer.highest_epoch == report["epoch"]
        with RawDealer(master.client_endpoint) as dealer:
            old = dealer.status()
        assert old["fenced"] and old["fenced_by"] == report["epoch"]
        # the new master holds every acknowledged write, and everything from before
        with Client([standby.promote_client_endpoint], timeout_s=10) as client:
            status = client.status()
            assert status["epoch"] == report["epoch"] and not status["fenced"]
            assert status["durability"] == "sync"
            assert status["txid"] >= report["txid"] >= old["txid"]
            missing = [k for k in writer.acked if client.get(k) is None]
            assert missing == [], missing[:10]
            assert client.get("/before/299") == {"i": 299}
        assert standby.master_info()["epoch"] == report["epoch"]
        assert standby.terminate() == 0


def test_a_standby_that_never_heard_a_master_refuses_to_promote(tmp_path):
    master = MasterProcess(tmp_path / "m")
    with master:
        master.kill()                     # gone before the standby ever hears it
        with StandbyProcess(tmp_path / "c", master) as standby:
            with pytest.raises(errors.BadState, match="never heard from a master"):
                standby.promote()
            assert standby.status()["standby"] == "following"
            assert standby.terminate() == 0


def test_a_retry_after_a_promotion_is_answered_not_applied_again(tmp_path):
    """A request the old master applied (and the standby received) that the client retries
    on the new master, with the same request id, gets the first answer: the standby hands the
    requests behind its records to the master it becomes."""
    import msgpack

    from mwcluster.wire.protocol import Op

    client_id = b"retrying-client"
    with MasterProcess(tmp_path / "m", durability="sync") as master, \
            StandbyProcess(tmp_path / "c", master) as standby:
        with RawDealer(master.client_endpoint, client_id=client_id) as dealer:
            first = dealer.call(Op.PUT, ["/once", msgpack.packb({"n": 1}), None], 2,
                                request_id=10_000)
            assert first.status == 0, first
            write(dealer, "/after", 50)
        wait_for(lambda: standby.status()["replica_txid"] >= first.txid + 50,
                 what="standby caught up")
        report = standby.promote()
        assert report["recent_requests_adopted"] >= 51, report
        with RawDealer(standby.promote_client_endpoint, client_id=client_id) as dealer:
            before = dealer.status()["txid"]
            again = dealer.call(Op.PUT, ["/once", msgpack.packb({"n": 1}), None], 2,
                                request_id=10_000)
            assert (again.status, again.txid, again.result) == (0, first.txid, first.result)
            assert dealer.status()["txid"] == before          # nothing applied again
            assert dealer.call(Op.STAT, ["/once"]).result[0] == 1   # still version 1
        assert standby.terminate() == 0
