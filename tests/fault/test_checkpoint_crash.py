"""Crashes around the checkpoint node, with real processes: kill -9 of the node mid-run and
during a checkpoint (the forked child writing), a master restart (new epoch) under it, and a
master that loses its data directory (less history than the replica)."""

from __future__ import annotations

import os
import signal

import pytest

from mwcluster.engine import load_snapshot
from mwcluster.storage import snapshot as snapshots
from mwcluster.testing import MasterProcess, RawDealer, wait_for
from mwcluster.testing.checkpoint import (CheckpointProcess, idle_master_status, in_step, write)

pytestmark = pytest.mark.fault

PAUSE_ENV = "MWCLUSTER_FAULT_CHECKPOINT_PAUSE_S"
MASTER_ENV = {**os.environ, "MWCLUSTER_HEARTBEAT_INTERVAL_S": "0.05"}
NODE_HB_S = 0.25


def ipc_endpoints(directory) -> tuple[str, ...]:
    """Master options binding Unix sockets in `directory`: a restarted master gets the same
    address back, which no other process can take in between (a TCP port could be)."""
    return ("--client-endpoint", f"ipc://{directory}/client.sock",
            "--pub-endpoint", f"ipc://{directory}/pub.sock")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:                       # a zombie is not alive; /proc tells (Linux)
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_kill9_mid_run_then_resume_from_its_own_snapshot_and_the_masters_log(tmp_path):
    with MasterProcess(tmp_path / "m", env=MASTER_ENV) as master, \
            RawDealer(master.client_endpoint) as dealer, \
            CheckpointProcess(tmp_path / "c", master, heartbeat_interval_s=NODE_HB_S,
                              txns=1000) as node:
        write(dealer, "/a", 2500, window=256)
        wait_for(lambda: node.status()["last_checkpoint_txid"] is not None
                 and node.status()["checkpoint_running"] is None, what="a checkpoint")
        node.kill()
        newest = snapshots.list_snapshots(tmp_path / "c" / "snapshots")[0][0]
        write(dealer, "/b", 1500, window=256)      # the master serves on without it
        status = idle_master_status(dealer)
        node.restart()
        wait_for(lambda: in_step(node, status), what="resumed and caught up")
        s = node.status()
        assert s["started_from"]["txid"] == newest and s["snapshot_fetches"] == 0
        wait_for(lambda: node.status()["checks_passed"] >= 1, what="a digest check")
        assert node.status()["checks_failed"] == 0
        assert node.terminate() == 0


def test_kill9_during_a_checkpoint_leaves_no_usable_partial_file(tmp_path):
    env = {**os.environ, PAUSE_ENV: "60"}            # the child stalls mid-write
    snap_dir = tmp_path / "c" / "snapshots"
    with MasterProcess(tmp_path / "m", env=MASTER_ENV) as master, \
            RawDealer(master.client_endpoint) as dealer:
        write(dealer, "/a", 300)
        node = CheckpointProcess(tmp_path / "c", master, heartbeat_interval_s=NODE_HB_S,
                                 period_s=0.2, env=env)
        with node:
            wait_for(lambda: node.status()["checkpoint_running"] is not None,
                     what="a checkpoint in progress")
            child = node.status()["checkpoint_running"]
            wait_for(lambda: list(snap_dir.glob(".snap-*.mws.tmp")), what="its temp file")
            node.kill()
            # the child dies with its parent (PR_SET_PDEATHSIG): no orphan finishes the file
            wait_for(lambda: not alive(child["pid"]), what="the child to die")
            assert list(snap_dir.glob(".snap-*.mws.tmp"))
            assert snapshots.list_snapshots(snap_dir) == []
            write(dealer, "/b", 100)
            status = idle_master_status(dealer)
            node._env = {k: v for k, v in node._env.items() if k != PAUSE_ENV}
            node.restart()
            assert not list(snap_dir.glob(".snap-*.mws.tmp"))   # cleaned at start
            wait_for(lambda: in_step(node, status), what="caught up after the restart")
            wait_for(lambda: node.status()["last_checkpoint_txid"] == status["txid"],
                     what="a complete checkpoint")
            state = load_snapshot(snap_dir / snapshots.snapshot_name(status["txid"]))
            assert state.digest == status["digest"]
            assert node.terminate() == 0


def test_sigterm_during_a_checkpoint_stops_cleanly(tmp_path):
    env = {**os.environ, PAUSE_ENV: "60"}
    snap_dir = tmp_path / "c" / "snapshots"
    with MasterProcess(tmp_path / "m", env=MASTER_ENV) as master, \
            RawDealer(master.client_endpoint) as dealer:
        write(dealer, "/a", 100)
        with CheckpointProcess(tmp_path / "c", master, heartbeat_interval_s=NODE_HB_S,
                               period_s=0.2, env=env) as node:
            wait_for(lambda: node.status()["checkpoint_running"] is not None,
                     what="a checkpoint in progress")
            child = node.status()["checkpoint_running"]["pid"]
            assert node._signal(signal.SIGINT, 30) == 0
            assert not alive(child)
            assert not list(snap_dir.glob(".snap-*.mws.tmp"))
            assert "stopping the checkpoint of txid 100" in node.stderr_text()


@pytest.mark.parametrize("how", ["kill", "terminate"])
def test_a_master_restart_is_a_new_epoch_and_the_node_resyncs(tmp_path, how):
    data = tmp_path / "m"
    endpoints = ipc_endpoints(tmp_path)          # the same address after the restart
    with MasterProcess(data, env=MASTER_ENV, extra_args=endpoints) as master, \
            RawDealer(master.client_endpoint) as dealer:
        write(dealer, "/a", 500, durability=2)
        with CheckpointProcess(tmp_path / "c", master, heartbeat_interval_s=NODE_HB_S,
                               txns=300) as node:
            status = idle_master_status(dealer)
            wait_for(lambda: in_step(node, status), what="following epoch 1")
            getattr(master, how)()
            dealer.close()
            with MasterProcess(data, env=MASTER_ENV, extra_args=endpoints) as again, \
                    RawDealer(again.client_endpoint) as dealer2:
                assert again.epoch == 2 and again.client_endpoint == master.client_endpoint
                write(dealer2, "/b", 700)
                status = idle_master_status(dealer2)
                wait_for(lambda: in_step(node, status), what="re-synced with epoch 2")
                s = node.status()
                assert s["epoch_seen"] == 2 and s["epoch_changes"] == 1
                wait_for(lambda: node.status()["last_digest_check"] is not None
                         and node.status()["last_digest_check"]["epoch"] == 2,
                         what="a digest check in epoch 2")
                assert node.status()["checks_failed"] == 0
                assert node.terminate() == 0


def test_a_master_with_less_history_than_the_replica_is_reloaded_from(tmp_path):
    endpoints = ipc_endpoints(tmp_path)
    with MasterProcess(tmp_path / "m1", env=MASTER_ENV, extra_args=endpoints) as master, \
            RawDealer(master.client_endpoint) as dealer:
        write(dealer, "/a", 400)
        with CheckpointProcess(tmp_path / "c", master, heartbeat_interval_s=NODE_HB_S) \
                as node:
            status = idle_master_status(dealer)
            wait_for(lambda: in_step(node, status), what="following")
            master.terminate()
            dealer.close()
            # an operator starts a master on a new, empty data directory at the same address
            with MasterProcess(tmp_path / "m2", env=MASTER_ENV, extra_args=endpoints) as new, \
                    RawDealer(new.client_endpoint) as dealer2:
                write(dealer2, "/fresh", 50)
                status = idle_master_status(dealer2)
                wait_for(lambda: in_step(node, status), what="reloaded from the new master")
                s = node.status()
                assert s["reloads"] >= 1 and s["replica_txid"] == 50
                assert node.terminate() == 0
