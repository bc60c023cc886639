"""Snapshot uploads interrupted by crashes, with real processes: the checkpoint node killed
with kill -9 in the middle of an upload (held there by the uploader's fault seam), the master
killed in the middle of one, and the master killed and restarted while the node runs."""

from __future__ import annotations

import os

import pytest

from mwcluster.storage import snapshot as snapshots
from mwcluster.testing import MasterProcess, RawDealer, wait_for
from mwcluster.testing.checkpoint import CheckpointProcess, idle_master_status, in_step, write

pytestmark = pytest.mark.fault

STALL_ENV = "MWCLUSTER_FAULT_UPLOAD_STALL_AFTER_BYTES"
MASTER_ENV = {**os.environ, "MWCLUSTER_HEARTBEAT_INTERVAL_S": "0.05"}
NODE_HB_S = 0.25


def ipc(directory, name: str) -> str:
    """A Unix socket address: the same after a restart, and no other process can take it."""
    return f"ipc://{directory}/{name}.sock"


def master_endpoints(directory) -> tuple[str, ...]:
    return ("--client-endpoint", ipc(directory, "client"),
            "--pub-endpoint", ipc(directory, "pub"))


def write_values(dealer: RawDealer, prefix: str, count: int, value_bytes: int = 600) -> int:
    """PUT `prefix/i` with `value_bytes` of payload each (128 in flight); the last txid."""
    return write(dealer, prefix, count, window=128, value_bytes=value_bytes)


def temp_files(directory) -> list:
    return sorted(directory.glob(".snap-*.mws.tmp"))


def mid_upload(dealer: RawDealer) -> dict | None:
    up = dealer.status()["upload_in_progress"]
    return up if up is not None and 0 < up["received"] < up["size"] else None


def test_node_killed_mid_upload_master_serves_on_and_the_restarted_node_uploads(tmp_path):
    """kill -9 of the node while its upload is half sent: the master keeps serving with no
    error; the restarted node (same status endpoint) replaces the dead upload with its first
    BEGIN, uploads, and no temporary file is left on either side."""
    master_snaps = tmp_path / "m" / "snapshots"
    node_snaps = tmp_path / "c" / "snapshots"
    node_args = ("--status-endpoint", ipc(tmp_path, "node"))
    with MasterProcess(tmp_path / "m", env=MASTER_ENV) as master, \
            RawDealer(master.client_endpoint) as dealer:
        write_values(dealer, "/a", 2500)             # a snapshot of about 1.6 MB: 2 chunks
        node = CheckpointProcess(tmp_path / "c", master, heartbeat_interval_s=NODE_HB_S,
                                 period_s=0.2, extra_args=node_args,
                                 env={**os.environ, STALL_ENV: "1"})
        with node:
            wait_for(lambda: mid_upload(dealer), timeout_s=30, what="an upload half sent")
            stuck = mid_upload(dealer)
            assert stuck["endpoint"] == ipc(tmp_path, "node") and not stuck["installing"]
            assert len(temp_files(master_snaps)) == 1
            errors_before = dealer.status()["errors_total"]     # (the node's NO_SNAPSHOT)
            node.kill()
            # the master serves on, with no error, while the dead upload is still listed
            write_values(dealer, "/b", 300)
            status = idle_master_status(dealer)
            assert status["errors_total"] == errors_before and status["uploads_ok"] == 0
            assert status["upload_in_progress"]["txid"] == stuck["txid"]
            assert not temp_files(node_snaps)
            node._env = {k: v for k, v in node._env.items() if k != STALL_ENV}
            node.restart()
            assert not temp_files(node_snaps)
            wait_for(lambda: dealer.status()["uploads_ok"] >= 1, timeout_s=30,
                     what="the restarted node's upload")
            s = dealer.status()
            assert s["upload_in_progress"] is None and s["uploads_rejected"] == 0
            assert s["last_snapshot_txid"] >= stuck["txid"]
            assert s["digest_unverified_uploads"] == 0
            assert not temp_files(master_snaps)
            # its first BEGIN was accepted (not BAD_STATE for the dead upload's 30 s)
            assert node.status()["upload"]["upload_failures"] == 0
            wait_for(lambda: in_step(node, idle_master_status(dealer)), what="in step")
            assert node.terminate() == 0
        assert master.terminate() == 0


def test_master_killed_mid_upload_cleans_its_temp_file_at_start(tmp_path):
    """kill -9 of the master while an upload is half received: the restarted master removes
    the temporary file at start, and the node's next upload, in the new epoch, is accepted."""
    data = tmp_path / "m"
    endpoints = master_endpoints(tmp_path)
    with MasterProcess(data, env=MASTER_ENV, extra_args=endpoints) as master, \
            RawDealer(master.client_endpoint) as dealer:
        write_values(dealer, "/a", 2500)
        node = CheckpointProcess(tmp_path / "c", master, heartbeat_interval_s=NODE_HB_S,
                                 period_s=0.2, env={**os.environ, STALL_ENV: "1"})
        with node:
            wait_for(lambda: mid_upload(dealer), timeout_s=30, what="an upload half sent")
            [leftover] = temp_files(data / "snapshots")
            master.kill()
            dealer.close()
            assert leftover.exists()
            node.kill()           # its uploader is held by the seam: start it without
            node._env = {k: v for k, v in node._env.items() if k != STALL_ENV}
            with MasterProcess(data, env=MASTER_ENV, extra_args=endpoints) as again, \
                    RawDealer(again.client_endpoint) as dealer2:
                assert again.epoch == master.epoch + 1
                assert not leftover.exists() and not temp_files(data / "snapshots")
                node.restart()
                wait_for(lambda: dealer2.status()["uploads_ok"] >= 1, timeout_s=30,
                         what="the upload in the new epoch")
                assert dealer2.status()["uploads_rejected"] == 0
                assert node.terminate() == 0
                assert again.terminate() == 0


def test_master_killed_and_restarted_loads_the_last_upload_and_accepts_the_next(tmp_path):
    """The restarted master recovers from the snapshot the node uploaded last plus the
    journal after it; the node follows the new epoch and its next upload is accepted."""
    data = tmp_path / "m"
    endpoints = master_endpoints(tmp_path)
    with MasterProcess(data, env=MASTER_ENV, extra_args=endpoints) as master, \
            RawDealer(master.client_endpoint) as dealer:
        write_values(dealer, "/a", 1100, value_bytes=50)          # past txns: a checkpoint
        node = CheckpointProcess(tmp_path / "c", master, heartbeat_interval_s=NODE_HB_S,
                                 txns=1000)
        with node:
            wait_for(lambda: dealer.status()["uploads_ok"] >= 1, timeout_s=30,
                     what="a first upload")
            uploaded = node.status()["upload"]["last_upload_txid"]
            assert dealer.status()["last_snapshot_txid"] == uploaded
            # 500 records after it: fewer than txns, so no newer checkpoint comes meanwhile
            write_values(dealer, "/b", 500, value_bytes=50)
            before = idle_master_status(dealer)
            assert before["last_snapshot_txid"] == uploaded
            master.kill()
            dealer.close()
            with MasterProcess(data, env=MASTER_ENV, extra_args=endpoints) as again, \
                    RawDealer(again.client_endpoint) as dealer2:
                s = dealer2.status()
                assert s["epoch"] == before["epoch"] + 1
                assert s["recovery"]["snapshot_txid"] == uploaded
                assert s["recovery"]["replayed_records"] == before["txid"] - uploaded
                assert (s["txid"], s["digest"]) == (before["txid"], before["digest"])
                write_values(dealer2, "/c", 1200, value_bytes=50)   # past txns: a checkpoint
                status = idle_master_status(dealer2)
                wait_for(lambda: in_step(node, status), what="following epoch 2")
                assert node.status()["epoch_changes"] >= 1
                wait_for(lambda: dealer2.status()["uploads_ok"] >= 1, timeout_s=30,
                         what="the node's upload in the new epoch")
                after = dealer2.status()
                assert after["uploads_rejected"] == 0
                assert after["last_snapshot_txid"] > uploaded
                assert snapshots.list_snapshots(data / "snapshots")[0][0] == \
                    after["last_snapshot_txid"]
                assert node.terminate() == 0
                assert again.terminate() == 0
