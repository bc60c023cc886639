"""The checkpoint node against a real master on 127.0.0.1: joining (empty master, a master with
history and a snapshot), following a stream under load to the master's digest, periodic
checkpoints that verify, `--once`, and its status endpoint."""

from __future__ import annotations

import os
import time

from mwcluster.engine import Engine, load_snapshot
from mwcluster.storage import snapshot as snapshots
from mwcluster.storage.epoch import read_epoch
from mwcluster.testing import MasterProcess, RawDealer, wait_for
from mwcluster.testing.checkpoint import (CheckpointProcess, checkpoint_once, idle_master_status,
                                          in_step, write)
from mwcluster.wire.protocol import ErrorCode, Op

# The master heartbeats every 0.05 s when idle (its loop looks every 0.25 s, so in practice
# every 0.25 s); the node allows three of its intervals of silence.
MASTER_ENV = {**os.environ, "MWCLUSTER_HEARTBEAT_INTERVAL_S": "0.05"}
NODE_HB_S = 0.25


def test_joins_an_empty_master_follows_it_and_checkpoints(tmp_path):
    with MasterProcess(tmp_path / "m", env=MASTER_ENV) as master, \
            RawDealer(master.client_endpoint) as dealer, \
            CheckpointProcess(tmp_path / "c", master, period_s=0.3,
                              heartbeat_interval_s=NODE_HB_S) as node:
        wait_for(lambda: node.status()["state"] == "following", what="joined")
        assert node.status()["replica_txid"] == 0
        write(dealer, "/a", 300)
        status = idle_master_status(dealer)
        wait_for(lambda: in_step(node, status), what="the replica at the master's digest")
        wait_for(lambda: node.status()["last_checkpoint_txid"] == status["txid"],
                 what="a checkpoint of the newest txid")
        wait_for(lambda: node.status()["checks_passed"] >= 1, what="a digest check")
        s = node.status()
        assert s["epoch_seen"] == master.epoch and s["last_digest_check"]["ok"]
        assert s["checks_failed"] == 0 and s["checkpoint_failures"] == 0
        assert s["last_checkpoint_size_bytes"] > 0
        wait_for(lambda: node.status()["upload"]["last_upload_txid"] == 300,
                 what="the checkpoint uploaded to the master")
        assert dealer.status()["last_snapshot_txid"] == 300
        path = tmp_path / "c" / "snapshots" / snapshots.snapshot_name(status["txid"])
        state = load_snapshot(path)
        assert (state.txid, state.digest) == (status["txid"], status["digest"])
        reply = RawDealer(node.status_endpoint)
        try:
            assert reply.call(Op.PING).status == 0
            assert reply.call(Op.GET, ["/a/1"]).status == ErrorCode.UNKNOWN_OP
        finally:
            reply.close()
        assert node.terminate() == 0
        assert not list((tmp_path / "c" / "snapshots").glob(".*.tmp"))


def test_joins_a_master_with_history_from_its_snapshot_and_log(tmp_path):
    data = tmp_path / "m"
    with MasterProcess(data, env=MASTER_ENV) as master, \
            RawDealer(master.client_endpoint) as dealer:
        write(dealer, "/old", 500)
        assert master.terminate() == 0
    engine = Engine(data, epoch=read_epoch(data), segment_bytes=4096)   # the master's own
    engine.open()                                                      # snapshot at 500
    engine.snapshot(created_ms=int(time.time() * 1000))
    engine.close()
    with MasterProcess(data, env=MASTER_ENV) as master, \
            RawDealer(master.client_endpoint) as dealer:
        write(dealer, "/new", 200)              # in the journal after the snapshot
        with CheckpointProcess(tmp_path / "c", master, heartbeat_interval_s=NODE_HB_S,
                               txns=250) as node:
            write(dealer, "/live", 300)         # on the stream while it joins
            status = idle_master_status(dealer)
            wait_for(lambda: in_step(node, status), what="joined and caught up")
            s = node.status()
            assert s["snapshot_fetches"] == 1 and s["started_from"] is None
            assert s["fetches"] >= 1
            wait_for(lambda: node.status()["checkpoints_total"] >= 1, what="a checkpoint")
            assert node.terminate() == 0
        for txid, path in snapshots.list_snapshots(tmp_path / "c" / "snapshots"):
            assert load_snapshot(path).txid == txid > 500


def test_follows_a_stream_under_load_with_checkpoints_during_it(tmp_path):
    with MasterProcess(tmp_path / "m", env=MASTER_ENV) as master, \
            RawDealer(master.client_endpoint) as dealer, \
            CheckpointProcess(tmp_path / "c", master, heartbeat_interval_s=NODE_HB_S,
                              txns=4000) as node:
        wait_for(lambda: node.status()["state"] == "following", what="joined")
        write(dealer, "/load", 20_000, window=512)
        status = idle_master_status(dealer)
        wait_for(lambda: in_step(node, status), timeout_s=30, what="caught up after the load")
        wait_for(lambda: node.status()["checkpoint_running"] is None, what="checkpoint done")
        s = node.status()
        assert s["checkpoints_total"] >= 2 and s["checkpoint_failures"] == 0
        assert s["checks_failed"] == 0 and s["lag_records"] == 0
        kept = snapshots.list_snapshots(tmp_path / "c" / "snapshots")
        assert len(kept) == 2                   # keep_snapshots
        for txid, path in kept:
            assert load_snapshot(path).txid == txid
        assert node.terminate() == 0


def test_once_writes_one_snapshot_with_the_masters_digest_and_exits(tmp_path):
    with MasterProcess(tmp_path / "m", env=MASTER_ENV) as master, \
            RawDealer(master.client_endpoint) as dealer:
        write(dealer, "/x", 400, durability=2)
        status = idle_master_status(dealer)
        result = checkpoint_once(tmp_path / "c", master, heartbeat_interval_s=NODE_HB_S)
        assert result.returncode == 0, result.stderr
        kept = snapshots.list_snapshots(tmp_path / "c" / "snapshots")
        assert [txid for txid, _ in kept] == [status["txid"]]
        state = load_snapshot(kept[0][1])
        assert state.digest == status["digest"] == snapshots.read_header(kept[0][1]).digest
        write(dealer, "/y", 10, durability=2)   # a second run starts from the first one
        result = checkpoint_once(tmp_path / "c", master, heartbeat_interval_s=NODE_HB_S)
        assert result.returncode == 0, result.stderr
        assert "from the local snapshot at txid 400" in result.stderr
        assert [t for t, _ in snapshots.list_snapshots(tmp_path / "c" / "snapshots")] == [
            410, 400]


def free_port() -> int:
    import socket

    with socket.socket() as s:      # (port 0 means "no metrics" in the config)
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_metrics_on_the_metrics_port(tmp_path):
    import urllib.request

    with MasterProcess(tmp_path / "m", env=MASTER_ENV) as master, \
            RawDealer(master.client_endpoint) as dealer, \
            CheckpointProcess(tmp_path / "c", master, heartbeat_interval_s=NODE_HB_S,
                              period_s=0.2,
                              extra_args=("--metrics-port", str(free_port()))) as node:
        write(dealer, "/m", 50)
        status = idle_master_status(dealer)
        wait_for(lambda: in_step(node, status) and node.status()["last_checkpoint_txid"] == 50,
                 what="a checkpoint")
        url = f"http://127.0.0.1:{node.metrics_port}/metrics"

        def scraped() -> bool:
            with urllib.request.urlopen(url, timeout=5) as response:
                text = response.read().decode()
            return ("mwcluster_checkpoint_replica_txid 50.0" in text
                    and "mwcluster_checkpoint_last_checkpoint_txid 50.0" in text
                    and 'mwcluster_checkpoint_state{state="following"} 1.0' in text)

        wait_for(scraped, what="the metrics to show the checkpoint")
        assert node.terminate() == 0


def test_a_second_node_on_the_same_data_directory_is_refused(tmp_path):
    with MasterProcess(tmp_path / "m", env=MASTER_ENV) as master, \
            CheckpointProcess(tmp_path / "c", master, heartbeat_interval_s=NODE_HB_S) as node:
        result = checkpoint_once(tmp_path / "c", master, heartbeat_interval_s=NODE_HB_S)
        assert result.returncode == 1 and f"(pid {node.pid})" in result.stderr
        result = checkpoint_once(tmp_path / "m", master, heartbeat_interval_s=NODE_HB_S)
        assert result.returncode == 1 and "another process" in result.stderr   # the master's
        assert node.terminate() == 0
