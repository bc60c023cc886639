"""A retry after a master restart from an uploaded snapshot, with real processes: the
request's record is covered by the snapshot (so recovery does not replay it), yet the
restarted master answers the retry with the first txid and result instead of applying it
again, because the snapshot carries the table of recent requests."""

from __future__ import annotations

import os

import msgpack
import pytest

from mwcluster.testing import MasterProcess, RawDealer, wait_for
from mwcluster.testing.checkpoint import CheckpointProcess, idle_master_status, write
from mwcluster.wire.protocol import Op

pytestmark = pytest.mark.fault

MASTER_ENV = {**os.environ, "MWCLUSTER_HEARTBEAT_INTERVAL_S": "0.05"}
CLIENT_ID = b"retrying-client"
SYNC = 2


def put_once(dealer: RawDealer):
    return dealer.call(Op.PUT, ["/once", msgpack.packb({"n": 1}), None], SYNC,
                       request_id=10_000, client_id=CLIENT_ID)


def submit_once(dealer: RawDealer):
    return dealer.call(Op.JOB_SUBMIT, [None, "once", "noop", 0, 1, [[1, {}]]], SYNC,
                       request_id=10_001, client_id=CLIENT_ID)


def multi_once(dealer: RawDealer):
    ops = [[1, "/m1", msgpack.packb(1), None], [4, "/once", 1]]
    return dealer.call(Op.MULTI, [ops], SYNC, request_id=10_002, client_id=CLIENT_ID)


def put_after_snapshot(dealer: RawDealer):
    return dealer.call(Op.PUT, ["/later", msgpack.packb(2), None], SYNC,
                       request_id=20_000, client_id=CLIENT_ID)


def test_a_retry_after_a_restart_from_a_snapshot_is_answered_not_applied_again(tmp_path):
    data = tmp_path / "m"
    with MasterProcess(data, env=MASTER_ENV) as master, \
            RawDealer(master.client_endpoint) as dealer:
        firsts = [put_once(dealer), submit_once(dealer), multi_once(dealer)]
        assert [f.status for f in firsts] == [0, 0, 0], firsts
        write(dealer, "/fill", 150)                    # past txns: a checkpoint
        with CheckpointProcess(tmp_path / "c", master, heartbeat_interval_s=0.25,
                               txns=100) as node:
            wait_for(lambda: dealer.status()["uploads_ok"] >= 1, timeout_s=30,
                     what="a snapshot uploaded to the master")
            assert node.terminate() == 0
        covered = dealer.status()["last_snapshot_txid"]
        assert covered >= max(f.txid for f in firsts)
        later = put_after_snapshot(dealer)              # in the journal after the snapshot
        assert later.status == 0 and later.txid > covered
        before = idle_master_status(dealer)
        assert master.kill() < 0
    with MasterProcess(data, env=MASTER_ENV) as again, \
            RawDealer(again.client_endpoint) as dealer:
        status = dealer.status()
        # the three requests' records are in the snapshot, not replayed from the journal
        assert status["recovery"]["snapshot_txid"] == covered
        assert (status["txid"], status["digest"]) == (before["txid"], before["digest"])
        retries = [put_once(dealer), submit_once(dealer), multi_once(dealer),
                   put_after_snapshot(dealer)]
        for first, retry in zip(firsts + [later], retries):
            assert (retry.status, retry.txid, retry.result) == \
                (first.status, first.txid, first.result)
        after = dealer.status()
        assert after["txid"] == before["txid"]           # nothing applied again
        assert after["retried_requests"] == 4
        assert dealer.call(Op.STAT, ["/once"]).result[0] == 1      # still version 1
        assert again.terminate() == 0


def test_the_table_travels_through_every_snapshot_loader_and_writer(tmp_path):
    """The requests ride along: node A checkpoints them (forked writer) and uploads; node B,
    with no local snapshot, joins from the master's snapshot and checkpoints again; node A
    restarts from its local snapshot and checkpoints again; the master, killed and restarted
    from that last upload, still answers the retries with their first answers."""
    data = tmp_path / "m"
    with MasterProcess(data, env=MASTER_ENV) as master, \
            RawDealer(master.client_endpoint) as dealer:
        firsts = [put_once(dealer), submit_once(dealer), multi_once(dealer)]
        assert [f.status for f in firsts] == [0, 0, 0], firsts
        uploads = 0
        for name, restart in (("a", False), ("b", False), ("a", True)):
            write(dealer, f"/fill-{name}-{uploads}", 150)       # past txns: a checkpoint
            node = CheckpointProcess(tmp_path / name, master, heartbeat_interval_s=0.25,
                                     txns=100)
            with node:
                uploads += 1
                wait_for(lambda: dealer.status()["uploads_ok"] >= uploads, timeout_s=30,
                         what=f"upload {uploads} (node {name})")
                started = node.status()["started_from"]
                assert (started is not None) == restart, started
                assert node.terminate() == 0
            joined = "loaded the master's snapshot at txid" in node.stderr_text()
            assert joined == (name == "b"), node.stderr_text()[-2000:]
        covered = dealer.status()["last_snapshot_txid"]
        assert covered > 450
        before = idle_master_status(dealer)
        assert master.kill() < 0
    with MasterProcess(data, env=MASTER_ENV) as again, \
            RawDealer(again.client_endpoint) as dealer:
        assert dealer.status()["recovery"]["snapshot_txid"] == covered
        retries = [put_once(dealer), submit_once(dealer), multi_once(dealer)]
        for first, retry in zip(firsts, retries):
            assert (retry.status, retry.txid, retry.result) == \
                (first.status, first.txid, first.result)
        assert dealer.status()["txid"] == before["txid"]          # nothing applied again
        assert again.terminate() == 0
