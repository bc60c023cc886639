"""A worker process can be observed: its status endpoint (STATUS, PING, error replies to
anything else), its Prometheus metrics, the master's STATUS listing it, and `mwcluster
status` showing it. A real master and a real worker on 127.0.0.1 with random ports, running a
task whose handler waits for the test to release it (a file). Every process is stopped."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

from mwcluster.client import Client
from mwcluster.testing.cluster import WorkerProcess
from mwcluster.testing import PACKAGE_ROOT, MasterProcess, RawDealer, wait_for
from mwcluster.wire.protocol import ErrorCode, Op

HANDLERS = '''
import threading, time
from pathlib import Path
from mwcluster.worker import handler

@handler("gate")
def gate(task, report):
    report(0.5, rows=5)
    release = Path(task.input["release"])
    deadline = time.monotonic() + 120
    pause = threading.Event()
    while not release.exists():          # the test releases the task by creating the file
        if time.monotonic() > deadline:
            raise RuntimeError("never released")
        pause.wait(0.01)
    report(1.0, rows=10)
    return "released"
'''
UNREACHABLE = "tcp://127.0.0.1:9"     # the discard port: nothing answers a ZeroMQ peer there


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def metrics(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        return r.read().decode()


def metric_lines(text: str, prefix: str) -> dict[str, float]:
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
            for line in text.splitlines() if line.startswith(prefix)}


def cli(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "MWCLUSTER_MASTER"}
    env["PYTHONPATH"] = PACKAGE_ROOT
    return subprocess.run([sys.executable, "-m", "mwcluster.cli", "status", "--timeout", "2",
                           *args], capture_output=True, text=True, env=env, timeout=60)


def test_a_workers_status_metrics_and_listing_follow_a_running_task(tmp_path: Path):
    (tmp_path / "gate_handlers.py").write_text(HANDLERS)
    release = tmp_path / "release"
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    master = MasterProcess(tmp_path / "m")
    with master:
        worker = WorkerProcess("w-obs", master.client_endpoint, slots=2,
                               handlers=["gate_handlers"], env=env,
                               extra_args=("--status-endpoint", "tcp://127.0.0.1:0",
                                           "--metrics-port", str(free_port()),
                                           "--progress-interval-ms", "20"))
        with worker, Client(master.client_endpoint, timeout_s=5) as client, \
                RawDealer(worker.info["status_endpoint"]) as dealer:
            endpoint, port = worker.info["status_endpoint"], worker.info["metrics_port"]
            assert endpoint.startswith("tcp://127.0.0.1:") and not endpoint.endswith(":0")
            job_id = client.submit_job("gated", "gate", [{"release": str(release)}],
                                       max_attempts=1, durability="sync")

            # the running task, with the progress its handler reported
            wait_for(lambda: [t.get("progress") for t in dealer.status()["tasks"]] == [0.5],
                     30, "the worker's status to show the task at 0.5")
            status = dealer.status()
            [task] = status["tasks"]
            assert (task["job_id"], task["index"], task["attempt"]) == (job_id, 0, 1)
            assert task["handler"] == "gate" and task["counters"] == {"rows": 5}
            assert task["running_s"] >= 0 and task["last_progress_age_s"] >= 0
            assert status["worker_id"] == "w-obs" and status["role"] == "worker"
            assert status["registered"] and status["epoch"] == master.epoch
            assert status["master_endpoint"] == master.client_endpoint
            assert (status["slots"], status["free_slots"], status["tasks_running"]) == (2, 1, 1)
            assert status["tasks_started"] == 1 and status["tasks_succeeded"] == 0
            assert status["registrations"] == 1 and status["requests_timed_out"] == 0
            assert status["last_exchange_age_s"] is not None and status["uptime_s"] > 0
            assert dealer.call(Op.PING).result is None

            # a malformed request and an operation a worker does not serve get error replies
            dealer.send_frames(b"\x93 not a request")
            bad = dealer.recv(10)
            assert bad is not None and bad.status == ErrorCode.BAD_REQUEST, bad
            assert dealer.call(Op.JOB_LIST, [True]).status == ErrorCode.UNKNOWN_OP

            # the master lists the worker's status endpoint
            with RawDealer(master.client_endpoint) as to_master:
                assert to_master.status()["worker_nodes"] == [
                    {"worker_id": "w-obs", "status_endpoint": endpoint, "slots": 2,
                     "running": 1, "status_key": None}]

            text = metrics(port)
            running = metric_lines(text, "mwcluster_worker_tasks_")
            assert running["mwcluster_worker_tasks_running"] == 1.0
            assert running["mwcluster_worker_tasks_started_total"] == 1.0
            assert running["mwcluster_worker_tasks_succeeded_total"] == 0.0
            assert metric_lines(text, "mwcluster_worker_task_progress")[
                f'mwcluster_worker_task_progress{{index="0",job_id="{job_id}"}}'] == 0.5
            assert metric_lines(text, "mwcluster_worker_registered") == {
                "mwcluster_worker_registered": 1.0}

            # `mwcluster status` finds the worker through the master
            r = cli("--master", master.client_endpoint, "--json")
            assert r.returncode == 0, r.stderr
            [entry] = json.loads(r.stdout)["worker_status"]
            assert entry["endpoint"] == endpoint and entry["source"] == "master"
            assert entry["reachable"] and entry["status"]["tasks_running"] == 1

            # released: the worker keeps working after the bad requests, and counts it
            release.write_text("go")
            wait_for(lambda: client.job_status(job_id)["state"] == "succeeded", 30,
                     "the job to succeed")
            wait_for(lambda: dealer.status()["tasks_succeeded"] == 1, 30,
                     "the worker's status to count the success")
            status = dealer.status()
            assert status["tasks"] == [] and status["free_slots"] == 2
            assert status["progress_sent"] >= 2 and status["tasks_failed"] == 0
            done = metric_lines(metrics(port), "mwcluster_worker_tasks_")
            assert done["mwcluster_worker_tasks_succeeded_total"] == 1.0
            assert done["mwcluster_worker_tasks_running"] == 0.0

            # one worker by its endpoint, without the master; an unreachable one is marked
            r = cli("--worker", endpoint, "--worker", UNREACHABLE, "--json")
            assert r.returncode == 0, r.stderr
            out = json.loads(r.stdout)
            assert "epoch" not in out                       # the master was not asked
            first, second = out["worker_status"]
            assert first["reachable"] and first["worker_id"] == "w-obs"
            assert first["status"]["tasks_succeeded"] == 1
            assert not second["reachable"] and second["error"]
            r = cli("--master", master.client_endpoint, "--worker", UNREACHABLE)
            assert r.returncode == 0, r.stderr
            assert "w-obs" in r.stdout and "unreachable" in r.stdout
            r = cli("--worker", endpoint)
            assert r.returncode == 0, r.stderr
            assert "tasks_succeeded" in r.stdout and "tasks running on w-obs (0)" in r.stdout
            assert worker.terminate() == 0
        with RawDealer(master.client_endpoint) as to_master:
            assert to_master.status()["worker_nodes"] == []     # it left
