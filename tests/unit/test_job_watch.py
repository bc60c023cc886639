"""The live progress watcher, against the in-memory master twin and a worker thread."""

from __future__ import annotations

import io
import threading

import pytest
from rich.console import Console

from mwcluster.errors import MwclusterError
from mwcluster.client.watch import watch_jobs
from mwcluster.nodes.worker.node import WorkerNode
from mwcluster.testing.memory import MemoryMaster
from mwcluster.worker import Registry
from mwcluster.config import load_worker_config


def test_watch_returns_the_final_statuses_and_rides_out_an_unreachable_master():
    reg = Registry()
    reg.register("echo", lambda task, report: task.input)
    fake = MemoryMaster()
    jobs = [fake.submit_job("a", "echo", [1, 2, 3]), fake.submit_job("b", "echo", [4])]
    config = load_worker_config(env={}, flags={"worker_id": "w", "slots": 2,
                                               "heartbeat_ms": 20, "idle_poll_ms": 5,
                                               "executor": "thread"})
    node = WorkerNode(config, reg, client_factory=fake.client)
    thread = threading.Thread(target=node.run, daemon=True)
    polls: list[int] = []

    def on_poll(statuses):
        polls.append(len(polls))
        if len(polls) == 1:
            fake.unreachable = True        # the next poll finds the master gone ...
        elif len(polls) == 2:
            fake.unreachable = False       # ... and the one after finds it back
            thread.start()

    out = io.StringIO()
    try:
        statuses = watch_jobs(fake.client(), jobs, console=Console(file=out, width=100),
                              poll_s=0.01, on_poll=on_poll, timeout_s=30)
    finally:
        node.request_stop()
        if thread.is_alive():
            thread.join(30)
    assert not thread.is_alive()
    assert {j: s["state"] for j, s in statuses.items()} == dict.fromkeys(jobs, "succeeded")
    text = out.getvalue()
    assert "does not answer" in text and "answers again" in text and "overall" in text


def test_watch_gives_up_after_its_timeout():
    fake = MemoryMaster()
    job = fake.submit_job("a", "nobody-runs-this", [1])
    with pytest.raises(MwclusterError, match="did not finish within"):
        watch_jobs(fake.client(), [job], console=Console(file=io.StringIO()), poll_s=0.01,
                   timeout_s=0.1)
