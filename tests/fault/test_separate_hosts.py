"""Separate hosts: the master, the checkpoint node and two workers each in a network namespace
of their own that this test creates (and always deletes), linked to the master's namespace by
veth pairs with addresses inside those namespaces only (10.77.n.1 on the master's side,
10.77.n.2 on the other). Links are cut and restored with `ip link set ... down/up`:

- the checkpoint node cut off while the master takes writes catches up once the link is back,
  with the master's digest;
- a worker cut off longer than worker_timeout_s is marked lost, its tasks are reassigned to
  the other worker, its reports for them are refused as stale when it returns (the tasks keep
  their new owner's attempts), it re-registers and takes work again, and the job completes
  with the right result.

Every process runs secured (CURVE, a principal each: the keys of testing/keys.py), as it
must on a network: a master without keys would refuse to bind 0.0.0.0 (protected mode).

Needs root and iproute2; skipped, with the reason, where either is missing or namespaces
cannot be made. Every process runs under `ip netns exec` and is stopped by its PID.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from mwcluster.demo import job as demo_job
from mwcluster.testing import MasterProcess, wait_for
from mwcluster.testing.keys import ClusterKeys

pytestmark = pytest.mark.fault

ROOT = str(Path(__file__).resolve().parents[2])
PORT, PUB_PORT = 5550, 5551
WORKER_TIMEOUT_S = 2.0
SHARDS, RECORDS, READ_DELAY_MS = 24, 800, 150       # about 1.2 s per task


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), capture_output=True, text=True, check=check, timeout=30)


class Hosts:
    """Namespaces <prefix>-m (master), -c (checkpoint node), -w1 and -w2, star-linked."""

    def __init__(self) -> None:
        self.prefix = f"mwt{uuid.uuid4().hex[:6]}"
        self.master = f"{self.prefix}-m"
        self.others = {"c": 1, "w1": 2, "w2": 3}
        self.made: list[str] = []

    def ns(self, name: str) -> str:
        return f"{self.prefix}-{name}"

    def master_addr(self, name: str) -> str:
        return f"10.77.{self.others[name]}.1"

    def link(self, name: str) -> str:          # the master's end of the pair to `name`
        return f"{self.prefix[-6:]}m{self.others[name]}"

    def create(self) -> None:
        for name in ("m", *self.others):
            run("ip", "netns", "add", self.ns(name))
            self.made.append(self.ns(name))
            run("ip", "-n", self.ns(name), "link", "set", "lo", "up")
        for name, n in self.others.items():
            near, far = self.link(name), f"{self.prefix[-6:]}x{n}"
            run("ip", "link", "add", near, "netns", self.master, "type", "veth", "peer",
                "name", far, "netns", self.ns(name))
            run("ip", "-n", self.master, "addr", "add", f"10.77.{n}.1/24", "dev", near)
            run("ip", "-n", self.ns(name), "addr", "add", f"10.77.{n}.2/24", "dev", far)
            run("ip", "-n", self.master, "link", "set", near, "up")
            run("ip", "-n", self.ns(name), "link", "set", far, "up")

    def cut(self, name: str) -> None:
        run("ip", "-n", self.master, "link", "set", self.link(name), "down")

    def restore(self, name: str) -> None:
        run("ip", "-n", self.master, "link", "set", self.link(name), "up")

    def delete(self) -> None:
        for ns in self.made:
            run("ip", "netns", "del", ns, check=False)


@pytest.fixture
def hosts():
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("separate-host tests need root and iproute2 (ip)")
    probe = run("ip", "netns", "add", "mwtprobe", check=False)
    if probe.returncode != 0:
        pytest.skip(f"network namespaces cannot be made here: {probe.stderr.strip()}")
    run("ip", "netns", "del", "mwtprobe", check=False)
    h = Hosts()
    try:
        h.create()
        yield h
    finally:
        h.delete()


class InNamespace(MasterProcess):
    """A mwcluster command under `ip netns exec NS` (MasterProcess's start, ready file and
    stop by PID; `ip netns exec` execs the command, so the PID is the node's)."""

    def __init__(self, ns: str, args: list[str], data_dir: Path) -> None:
        env = {**os.environ, "PYTHONPATH": ROOT}
        super().__init__(data_dir, env=env)
        self.ns = ns
        self.args = args

    def command(self, ready_file: Path) -> list[str]:
        return ["ip", "netns", "exec", self.ns, sys.executable, "-m", "mwcluster.cli", "-v",
                *self.args, "--ready-file", str(ready_file)]


def in_ns(ns: str, code: str) -> object:
    """Run Python `code` (which prints one JSON value) inside namespace `ns`."""
    done = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", code],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": ROOT})
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


KEYS: ClusterKeys | None = None      # the test's keys, set by the test


def master_call(hosts: Hosts, expr: str) -> object:
    """Evaluate `expr` with `c`, a Client of the master (as principal "admin"), inside the
    master's namespace."""
    return in_ns(hosts.master, (
        "import json\nfrom mwcluster.client import Client\n"
        f"with Client('tcp://127.0.0.1:{PORT}', timeout_s=5, "
        f"key_file={str(KEYS.secret('admin'))!r}, "
        f"server_key={str(KEYS.public('server'))!r}) as c:\n"
        f"    print(json.dumps({expr}, default=str))\n"))


def test_cut_links_between_separate_hosts(hosts, tmp_path):
    global KEYS
    KEYS = keys = ClusterKeys(tmp_path / "keys")
    for name in ("w1", "w2"):
        keys.add(name, ["worker"])
    master = InNamespace(hosts.master, [
        "master", "--data-dir", str(tmp_path / "m"),
        "--client-endpoint", f"tcp://0.0.0.0:{PORT}", "--pub-endpoint", f"tcp://0.0.0.0:{PUB_PORT}",
        "--worker-timeout-s", str(WORKER_TIMEOUT_S), "--worker-heartbeat-ms", "300",
        *keys.server_args()], tmp_path / "m")
    node = InNamespace(hosts.ns("c"), [
        "checkpoint", "--data-dir", str(tmp_path / "c"),
        "--master", f"tcp://{hosts.master_addr('c')}:{PORT}",
        "--subscribe", f"tcp://{hosts.master_addr('c')}:{PUB_PORT}",
        "--status-endpoint", "tcp://127.0.0.1:0", "--txns", "2000", *keys.server_args()],
        tmp_path / "c")
    workers = {name: InNamespace(hosts.ns(name), [
        "worker", "--master", f"tcp://{hosts.master_addr(name)}:{PORT}", "--id", name,
        "--slots", "2", "--handlers", "mwcluster.demo.job", "--progress-interval-ms", "100",
        *keys.worker_args(name)], tmp_path / name) for name in ("w1", "w2")}
    started = []
    try:
        for proc in (master, node, *workers.values()):
            proc.start()
            started.append(proc)

        # --- the checkpoint node cut off while the master takes writes ---------------------
        hosts.cut("c")
        master_call(hosts, "[c.put(f'/cut/{i}', {'i': i}) for i in range(3000)][-1]")
        hosts.restore("c")
        target = master_call(hosts, "c.status()")
        node_status = ("import json\nfrom mwcluster.testing import RawDealer\n"
                       "from mwcluster.security.curve import Credentials\n"
                       f"creds = Credentials.load({str(keys.secret('admin'))!r}, "
                       f"{str(keys.public('server'))!r})\n"
                       f"with RawDealer({node.info['status']!r}, credentials=creds) as d:\n"
                       "    print(json.dumps(d.status()))\n")

        def node_caught_up() -> bool:
            s = in_ns(hosts.ns("c"), node_status)
            return s["replica_txid"] >= target["txid"] and s["state"] == "following"
        wait_for(node_caught_up, timeout_s=60, what="the checkpoint node to catch up")
        final = master_call(hosts, "c.status()")
        s = in_ns(hosts.ns("c"), node_status)
        if s["replica_txid"] == final["txid"]:
            assert s["replica_digest"] == final["digest"]

        # --- a worker cut off past its timeout -----------------------------------------------
        job = master_call(hosts, (
            f"c.submit_job('wc', {demo_job.HANDLER!r}, "
            f"{demo_job.job_inputs(7, SHARDS, RECORDS)!r}, "
            f"params={{'read_delay_ms': {READ_DELAY_MS}}}, max_attempts=4)"))

        def running_on(name: str) -> list:
            tasks = master_call(hosts, f"c.job_tasks({job!r}, 0, 1000)")
            return [t for t in tasks if t["worker"] == name and t["state"] in
                    ("assigned", "running")]
        wait_for(lambda: len(running_on("w1")) >= 1, timeout_s=30, what="w1 to run a task")
        cut_tasks = {(t["index"], t["attempt"]) for t in running_on("w1")}
        hosts.cut("w1")
        wait_for(lambda: master_call(hosts, f"c.job_status({job!r})")["state"] in
                 ("running", "succeeded") and not running_on("w1"), timeout_s=30,
                 what="w1 to be marked lost and its tasks taken back")
        hosts.restore("w1")
        wait_for(lambda: master_call(hosts, f"c.job_status({job!r})")["state"] == "succeeded",
                 timeout_s=120, what="the job to complete")
        tasks = {t["index"]: t for t in master_call(hosts, f"c.job_tasks({job!r}, 0, 1000)")}
        for index, attempt in cut_tasks:   # the cut attempts were superseded
            assert tasks[index]["attempt"] > attempt, tasks[index]
        result = demo_job.combine([tasks[i]["result"] for i in range(SHARDS)])
        assert result == demo_job.direct(7, SHARDS, RECORDS)
        # w1 came back: it let go of the superseded attempts (refused as stale when it reported
        # first, or dropped at its re-register when that came first)
        wait_for(lambda: any(word in workers["w1"].stderr_text().lower()
                             for word in ("stale", "refused", "dropped")), timeout_s=30,
                 what="w1 to let go of its superseded attempts")
        # and a report for a superseded attempt, sent from w1's host, is refused
        index, attempt = sorted(cut_tasks)[0]
        refused = in_ns(hosts.ns("w1"), (
            "import json\nfrom mwcluster.client import Client\nfrom mwcluster.errors import BadState\n"
            f"with Client('tcp://{hosts.master_addr('w1')}:{PORT}', timeout_s=5, "
            f"key_file={str(keys.secret('w1'))!r}, "
            f"server_key={str(keys.public('server'))!r}) as c:\n"
            "    try:\n"
            f"        c.report_progress('w1', {job!r}, {index}, {attempt}, 0.5, {{}})\n"
            "        print(json.dumps('accepted'))\n"
            "    except BadState as exc:\n"
            "        print(json.dumps(str(exc)))\n"))
        assert refused != "accepted" and "stale" in refused, refused
    finally:
        for proc in reversed(started):
            proc.stop()
