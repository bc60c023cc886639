"""`mwcluster watch` against a real master: the history from a txid as text and as JSON
(a record's events, deletes, and a job's record events under @job/), and a live watch that
prints the write made while it waits and exits after --count, and one that goes on across
a kill -9 and restart of the master, printing each event once."""

from __future__ import annotations

import json
import subprocess
import sys
from contextlib import contextmanager

from mwcluster import Client
from mwcluster.testing import MasterProcess, wait_for
from mwcluster.testing.cluster import run_command

CLI = [sys.executable, "-m", "mwcluster.cli"]


@contextmanager
def waiting_watch(client: Client, *args: str):
    """`mwcluster watch ARGS` started, once its watch waits at the master; killed at the end
    if it is still running."""
    proc = subprocess.Popen([*CLI, "watch", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: client.status()["coordination"]["watches_waiting"] == 1, 60,
                 "the command's watch to wait at the master")
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)


def test_history_from_a_txid_as_text_and_as_json(tmp_path):
    with MasterProcess(tmp_path / "data") as master, \
            Client(master.client_endpoint, timeout_s=5.0) as c:
        first = c.put("/cw/a", {"n": 1})
        c.put("/elsewhere", 0)
        txid, _ = c.multi([c.op_put("/cw/b", "x"), c.op_delete("/cw/a")])
        job = c.submit_job("j", "mwcluster.testing.handlers:echo", [{"i": 0}])
        args = ["watch", "/cw/", "--from-txid", str(first), "--master", master.client_endpoint]
        text = run_command([*CLI, *args, "--count", "3"], 60)
        assert text.returncode == 0, text.stderr
        assert text.stdout.splitlines() == [f'{first} put /cw/a {{"n": 1}} v1',
                                            f'{txid} put /cw/b "x" v1', f"{txid} delete /cw/a"]
        as_json = run_command([*CLI, *args, "--count", "3", "--json"], 60)
        rows = [json.loads(line) for line in as_json.stdout.splitlines()]
        assert [(r["txid"], r["type"], r["key"]) for r in rows] == [
            (first, "put", "/cw/a"), (txid, "put", "/cw/b"), (txid, "delete", "/cw/a")]
        assert rows[0]["value"] == {"n": 1} and rows[1]["create_txid"] == txid
        jobs = run_command([*CLI, "watch", "@job/", "--from-txid", "1", "--json", "--count",
                            "1", "--master", master.client_endpoint], 60)
        record = json.loads(jobs.stdout.splitlines()[0])
        assert record["type"] == "record" and record["key"] == f"@job/{job}"


def test_a_live_watch_prints_the_write_it_waited_for_and_exits_after_count(tmp_path):
    with MasterProcess(tmp_path / "data") as master, \
            Client(master.client_endpoint, timeout_s=5.0) as c:
        with waiting_watch(c, "/live/", "--count", "1", "--master",
                           master.client_endpoint) as proc:
            txid = c.put("/live/k", 7)
            out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert out.splitlines() == [f"{txid} put /live/k 7 v1"]
        bad = run_command([*CLI, "watch", "/x/", "--from-txid", "0", "--master",
                           master.client_endpoint], 60)
        assert bad.returncode == 2 and "--from-txid" in bad.stderr


def test_the_command_goes_on_across_a_kill_9_and_restart_of_the_master(tmp_path):
    # sync: the first put is durable before the command starts, so the command's first WATCH
    # is answered at once and the one that waits is its second
    with MasterProcess(tmp_path / "data", durability="sync") as master:
        endpoint = master.client_endpoint
        with Client(endpoint, timeout_s=2.0) as c:
            first = c.put("/k9/a", 1)
            # the first WATCH was answered (the first event); the one that waits is the
            # second, then the master dies
            with waiting_watch(c, "/k9/", "--from-txid", "1", "--count", "2", "--timeout", "2",
                               "--master", endpoint) as proc:
                master.kill()
                master.restart(extra_args=("--client-endpoint", endpoint))
                second = c.put("/k9/b", 2)
                out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert out.splitlines() == [f"{first} put /k9/a 1 v1", f"{second} put /k9/b 2 v1"]
