"""One `mwcluster status` for the whole cluster, with real processes: the checkpoint node
tells the master its status endpoint (CHECKPOINT_HELLO, and in each upload's BEGIN), the
master lists it in `checkpoint_nodes`, and `mwcluster status` asks it too; a node that does
not answer is shown as unreachable, not as an error."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from mwcluster.testing import PACKAGE_ROOT, MasterProcess, RawDealer, wait_for
from mwcluster.testing.checkpoint import CheckpointProcess, write

MASTER_ENV = {**os.environ, "MWCLUSTER_HEARTBEAT_INTERVAL_S": "0.1"}
UNREACHABLE = "tcp://127.0.0.1:9"     # the discard port: nothing answers a ZeroMQ peer there


def cli_status(master: MasterProcess, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": PACKAGE_ROOT}
    return subprocess.run([sys.executable, "-m", "mwcluster.cli", "status", "--master",
                           master.client_endpoint, "--timeout", "2", *args],
                          capture_output=True, text=True, env=env, timeout=60)


def known_nodes(dealer: RawDealer) -> list[dict]:
    return dealer.status()["checkpoint_nodes"]


def test_status_shows_the_master_and_the_checkpoint_node_it_discovered(tmp_path):
    master = MasterProcess(tmp_path / "m", env=MASTER_ENV)
    with master, RawDealer(master.client_endpoint) as dealer:
        assert known_nodes(dealer) == []
        write(dealer, "/a", 200)
        node = CheckpointProcess(tmp_path / "c", master, period_s=0.3,
                                 heartbeat_interval_s=0.1)
        with node:
            endpoint = node.status_endpoint
            # the master heard the node's hello and, after a checkpoint, its upload
            wait_for(lambda: any(n["endpoint"] == endpoint and n["last_upload_txid"]
                                 for n in known_nodes(dealer)), timeout_s=30,
                     what="the master to list the node with an upload")
            listed = next(n for n in known_nodes(dealer) if n["endpoint"] == endpoint)
            # the node checkpoints at the end of a published batch: the master knew its digest
            assert dealer.status()["digest_unverified_uploads"] == 0
            assert listed["last_seen_age_s"] < 10
            assert listed["replica_txid"] <= dealer.status()["txid"]
            assert listed["last_upload_txid"] <= listed["replica_txid"]

            r = cli_status(master, "--json")
            assert r.returncode == 0, r.stderr
            out = json.loads(r.stdout)
            assert out["epoch"] == master.epoch and "checkpoint_nodes" in out
            [entry] = out["checkpoint_node_status"]
            assert entry["endpoint"] == endpoint and entry["source"] == "master"
            assert entry["reachable"] and entry["error"] is None
            assert entry["status"]["role"] == "checkpoint"
            assert entry["status"]["replica_txid"] >= 200

            # named on the command line too (and once only), plus one that is not there
            r = cli_status(master, "--json", "--checkpoint", endpoint,
                           "--checkpoint", UNREACHABLE)
            assert r.returncode == 0, r.stderr
            entries = {e["endpoint"]: e for e in json.loads(r.stdout)["checkpoint_node_status"]}
            assert set(entries) == {endpoint, UNREACHABLE}
            assert entries[endpoint]["source"] == "option" and entries[endpoint]["reachable"]
            assert not entries[UNREACHABLE]["reachable"]
            assert "timeout" in entries[UNREACHABLE]["error"]

            r = cli_status(master)
            assert r.returncode == 0, r.stderr
            assert f"master at {master.client_endpoint}" in r.stdout
            assert f"checkpoint node at {endpoint} (from master)" in r.stdout
            assert "replica_txid" in r.stdout and "checkpoint_nodes" in r.stdout
            assert node.terminate() == 0

        # the node is gone: the master still lists it, status shows it unreachable, exit 0
        assert any(n["endpoint"] == endpoint for n in known_nodes(dealer))
        r = cli_status(master)
        assert r.returncode == 0, r.stderr
        assert f"checkpoint node at {endpoint} (from master): unreachable" in r.stdout
        r = cli_status(master, "--json", "--no-discover")
        assert r.returncode == 0 and "checkpoint_node_status" not in json.loads(r.stdout)
        assert master.terminate() == 0


def test_status_of_an_unreachable_master_still_shows_the_named_nodes(tmp_path):
    master = MasterProcess(tmp_path / "m", env=MASTER_ENV)
    with master:
        node = CheckpointProcess(tmp_path / "c", master, heartbeat_interval_s=0.1)
        with node:
            env = {**os.environ, "PYTHONPATH": PACKAGE_ROOT}
            r = subprocess.run([sys.executable, "-m", "mwcluster.cli", "status", "--json",
                                "--master", UNREACHABLE, "--timeout", "0.3",
                                "--checkpoint", node.status_endpoint],
                               capture_output=True, text=True, env=env, timeout=60)
            assert r.returncode == 1 and "timeout" in r.stderr
            out = json.loads(r.stdout)
            assert "timeout" in out["error"]
            [entry] = out["checkpoint_node_status"]
            assert entry["reachable"] and entry["status"]["role"] == "checkpoint"
            assert node.terminate() == 0
        assert master.terminate() == 0
