"""Snapshot upload from the checkpoint node to the master, with real processes: the master
installs the snapshot, deletes the journal segments it covers, and recovers from it."""

from __future__ import annotations

import os
import zlib

from mwcluster.storage import snapshot as snapshots
from mwcluster.testing import MasterProcess, RawDealer, wait_for
from mwcluster.testing.checkpoint import checkpoint_once, idle_master_status, write
from mwcluster.wire.protocol import ErrorCode, Op

MASTER_ENV = {**os.environ, "MWCLUSTER_HEARTBEAT_INTERVAL_S": "0.05",
              "MWCLUSTER_SEGMENT_BYTES": "4096"}
NODE_HB_S = 0.25


def write_in_steps(dealer: RawDealer, prefix: str, count: int, step: int) -> None:
    """Sync writes in steps, so the journal has many small segments."""
    for start in range(0, count, step):
        write(dealer, f"{prefix}{start}", step, window=step, durability=2)


def test_checkpoint_once_uploads_and_the_master_truncates_its_journal(tmp_path):
    master = MasterProcess(tmp_path / "m", env=MASTER_ENV)
    with master, RawDealer(master.client_endpoint) as dealer:
        write_in_steps(dealer, "/a", 600, 50)
        status = idle_master_status(dealer)
        segments_before = status["journal_segments"]
        assert segments_before > 4, status
        # no checkpoint yet: status says why the journal only grows
        assert status["records_since_snapshot"] == status["txid"]
        assert status["journal_bytes_since_snapshot"] == status["journal_bytes"]
        assert "no snapshot yet" in status["journal_truncation"]
        assert dealer.call(Op.SNAPSHOT_INFO).status == ErrorCode.NO_SNAPSHOT
        result = checkpoint_once(tmp_path / "c", master, heartbeat_interval_s=NODE_HB_S)
        assert result.returncode == 0, result.stderr
        assert "uploaded the snapshot at txid" in result.stderr, result.stderr
        info = dealer.call(Op.SNAPSHOT_INFO)
        assert info.status == 0 and info.result[0] == status["txid"]
        assert info.result[2] == status["digest"]
        s = dealer.status()
        assert s["uploads_ok"] == 1 and s["uploads_rejected"] == 0
        assert s["last_snapshot_txid"] == status["txid"]
        assert s["journal_segments"] < segments_before
        assert s["journal_segments_after_purge"] == s["journal_segments"]
        assert s["records_since_snapshot"] == 0
        assert f"txid {status['txid']}" in s["journal_truncation"]
        assert s["first_txid"] is None or s["first_txid"] > 1
        # the same snapshot again: "have", nothing sent
        local = snapshots.list_snapshots(tmp_path / "c" / "snapshots")[0][1]
        data = local.read_bytes()
        h = snapshots.read_header(local)
        r = dealer.call(Op.SNAPSHOT_UPLOAD_BEGIN,
                        [h.txid, h.epoch, h.digest, len(data), zlib.crc32(data)])
        assert r.status == 0 and r.result[1] == "have"
        write(dealer, "/b", 30, durability=2)
        after = idle_master_status(dealer)
        assert master.terminate() == 0
        master.restart()
        with RawDealer(master.client_endpoint) as again:
            s = again.status()
            assert s["recovery"]["snapshot_txid"] == status["txid"]
            assert (s["txid"], s["digest"]) == (after["txid"], after["digest"])


def test_wrong_checksum_is_rejected_and_a_second_begin_gets_bad_state(tmp_path):
    with MasterProcess(tmp_path / "m", env=MASTER_ENV) as master, \
            RawDealer(master.client_endpoint) as dealer, \
            RawDealer(master.client_endpoint) as other:
        write(dealer, "/a", 100, durability=2)
        status = idle_master_status(dealer)
        result = checkpoint_once(tmp_path / "c", master, heartbeat_interval_s=NODE_HB_S)
        assert result.returncode == 0, result.stderr
        write(dealer, "/b", 50, durability=2)
        idle_master_status(dealer)
        result = checkpoint_once(tmp_path / "c2", master, heartbeat_interval_s=NODE_HB_S)
        assert result.returncode == 0, result.stderr
        local = snapshots.list_snapshots(tmp_path / "c2" / "snapshots")[0][1]
        h = snapshots.read_header(local)
        assert h.txid == 150
        # another node's upload of a snapshot the master already has: "have"
        master_snaps = [t for t, _ in snapshots.list_snapshots(tmp_path / "m" / "snapshots")]
        assert master_snaps == [150, status["txid"]]
        # a file announced with the wrong crc32 is refused at END; nothing is installed
        (tmp_path / "m" / "snapshots" / snapshots.snapshot_name(150)).unlink()
        data = local.read_bytes()
        r = dealer.call(Op.SNAPSHOT_UPLOAD_BEGIN,
                        [h.txid, h.epoch, h.digest, len(data), zlib.crc32(data) ^ 1])
        assert r.status == 0 and r.result[1] == "accepted", r
        uid = r.result[0]
        busy = other.call(Op.SNAPSHOT_UPLOAD_BEGIN,
                          [h.txid, h.epoch, h.digest, len(data), zlib.crc32(data)])
        assert busy.status == ErrorCode.BAD_STATE, busy
        assert dealer.call(Op.SNAPSHOT_UPLOAD_CHUNK, [uid, 0, data]).result == [len(data)]
        end = dealer.call(Op.SNAPSHOT_UPLOAD_END, [uid])
        assert end.status == ErrorCode.INVALID and "crc32" in end.result[1], end
        assert [t for t, _ in snapshots.list_snapshots(tmp_path / "m" / "snapshots")] == [
            status["txid"]]
        assert not list((tmp_path / "m" / "snapshots").glob(".snap-*"))
        s = dealer.status()
        assert s["uploads_rejected"] == 1 and "crc32" in s["last_upload_error"]
        # the right file now goes in
        r = other.call(Op.SNAPSHOT_UPLOAD_BEGIN,
                       [h.txid, h.epoch, h.digest, len(data), zlib.crc32(data)])
        assert r.status == 0 and r.result[1] == "accepted", r
        assert other.call(Op.SNAPSHOT_UPLOAD_CHUNK, [r.result[0], 0, data]).status == 0
        end = other.call(Op.SNAPSHOT_UPLOAD_END, [r.result[0]])
        assert end.status == 0 and end.result[0] == [150, status["txid"]], end
        wait_for(lambda: dealer.status()["uploads_ok"] == 3, what="three installs")


def test_the_node_retries_with_backoff_while_another_upload_holds_the_master(tmp_path):
    from mwcluster.testing.checkpoint import CheckpointProcess

    with MasterProcess(tmp_path / "m", env=MASTER_ENV) as master, \
            RawDealer(master.client_endpoint) as dealer:
        write(dealer, "/a", 100, durability=2)
        status = idle_master_status(dealer)
        held = dealer.call(Op.SNAPSHOT_UPLOAD_BEGIN,
                           [status["txid"], 0, status["digest"], 1000, 0])
        assert held.status == 0 and held.result[1] == "accepted", held
        with CheckpointProcess(tmp_path / "c", master, period_s=0.2,
                               heartbeat_interval_s=NODE_HB_S) as node:
            wait_for(lambda: node.status()["upload"]["upload_failures"] >= 2,
                     what="failed upload attempts")
            up = node.status()["upload"]
            assert "in progress" in up["last_upload_failure"] and up["last_upload_txid"] is None
            assert dealer.call(Op.SNAPSHOT_UPLOAD_ABORT, [held.result[0]]).status == 0
            wait_for(lambda: node.status()["upload"]["last_upload_txid"] == status["txid"],
                     timeout_s=20, what="the upload after the other one was aborted")
            assert node.status()["upload"]["last_upload_duration_s"] is not None
            assert dealer.status()["last_snapshot_txid"] == status["txid"]
            assert node.terminate() == 0
