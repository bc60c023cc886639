"""The process executor (nodes/worker/executor.py): handlers run in a child process per slot;
crashes, cancellation (a timeout is one: the worker machine decides it) and memory limits
end only the attempt, and the slot
goes on with a fresh process. Real child processes, no sockets; every child is stopped."""

from __future__ import annotations

import os
import threading

import pytest

from helpers import pid_alive
from mwcluster.core import worker_machine as wm
from mwcluster.nodes.worker.executor import GRACE_S, ProcessSlot, process_context
from mwcluster.testing import wait_for

MODULES = ["mwcluster.testing.handlers"]


def start(name: str, params=None, task_input=None, attempt=1) -> wm.Start:
    return wm.Start("job-1", 0, attempt, name, task_input, params)


@pytest.fixture
def slot():
    s = ProcessSlot(process_context(MODULES), MODULES)
    yield s
    s.close()


def run(slot, ins, *, current=lambda: True):
    progress = []
    ok, outcome = slot.run(ins, current, lambda p, c: progress.append((p, c)))
    return ok, outcome, progress


def test_a_result_and_progress_come_back_from_the_process(slot):
    ok, outcome, progress = run(slot, start("testing.echo", task_input={"a": [1, 2]}))
    assert (ok, outcome) == (True, {"a": [1, 2]}) and progress == [(0.5, {"seen": 1})]
    ok, child, _ = run(slot, start("testing.pid"))
    assert ok and child != os.getpid()
    assert run(slot, start("testing.pid"))[1] == child and slot.started == 1   # reused


@pytest.mark.parametrize("name, says", [("testing.exit", "exit code 3"),
                                        ("testing.kill", "killed by SIGKILL")])
def test_a_handler_that_ends_its_process_fails_only_its_attempt(slot, name, says):
    first = run(slot, start("testing.pid"))[1]
    ok, outcome, _ = run(slot, start(name, {"code": 3}))
    assert not ok and says in outcome and "fresh process" in outcome
    assert not pid_alive(first)
    ok, second, _ = run(slot, start("testing.pid"))
    assert ok and second != first and slot.started == 2


@pytest.mark.parametrize("name", ["testing.sleep", "testing.stubborn"])
def test_a_cancelled_attempt_has_its_process_stopped(slot, name):
    child = run(slot, start("testing.pid"))[1]
    cancel = threading.Event()
    out = {}

    def go():
        out["r"] = run(slot, start(name, {"s": 30}), current=lambda: not cancel.is_set())
    runner = threading.Thread(target=go)
    runner.start()
    try:
        cancel.set()
        runner.join(GRACE_S + 10)      # SIGTERM; a child that ignores it: SIGKILL after GRACE_S
        assert not runner.is_alive()
    finally:
        cancel.set()
        runner.join(60)
    ok, outcome, _ = out["r"]
    assert not ok and "no longer this worker's" in outcome
    wait_for(lambda: not pid_alive(child), 10, "the cancelled handler's process to end")


def test_a_memory_limit_fails_the_handler_with_memory_error():
    slot = ProcessSlot(process_context(MODULES), MODULES, memory_mb=600)
    try:
        ok, outcome, _ = run(slot, start("testing.hog", {"mb": 2000}))
        assert not ok and "MemoryError" in outcome
        assert run(slot, start("testing.hog", {"mb": 10}))[:2] == (True, 10 << 20)
    finally:
        slot.close()


def test_unknown_handlers_and_bad_results_fail_the_attempt(slot):
    ok, outcome, _ = run(slot, start("testing.nope"))
    assert not ok and "no handler named 'testing.nope'" in outcome
    ok, outcome, _ = run(slot, start("testing.echo", task_input={1, 2}))   # a set: not msgpack
    assert not ok and "not msgpack-able" in outcome
