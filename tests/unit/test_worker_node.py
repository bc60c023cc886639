"""The worker shell against the in-memory master twin (mwcluster.testing.memory: the real handlers and engine): handler
threads, the owner loop, stale attempts, restarts, an unreachable master, a graceful stop."""

from __future__ import annotations

import threading

import pytest

from mwcluster.core.jobs import TaskState
from mwcluster.core.limits import Limits
from mwcluster.nodes.worker.node import WorkerNode
from mwcluster.testing import wait_for
from mwcluster.testing.memory import MemoryMaster
from mwcluster.testing.memory import RunningWorker as Running
from mwcluster.wire.protocol import Op
from mwcluster.worker import Registry
from mwcluster.config import load_worker_config


def config(**flags):
    base = {"worker_id": "w1", "slots": 2, "heartbeat_ms": 20, "progress_interval_ms": 10,
            "idle_poll_ms": 5, "stop_timeout_s": 5.0,
            # handlers registered in this test's Registry: the thread executor
            # (tests/unit/test_worker_executor.py runs them in processes)
            "executor": "thread"}
    base.update(flags)
    return load_worker_config(env={}, flags=base)


@pytest.fixture
def registry():
    reg = Registry()

    @reg.handler("square")
    def square(task, report):
        report(0.5, seen=1)
        return task.input * task.input

    @reg.handler("boom")
    def boom(task, report):
        raise ValueError(f"bad input {task.input}")

    return reg


def test_a_job_runs_to_completion_with_results_and_progress(registry):
    fake = MemoryMaster()
    job = fake.submit_job("squares", "square", list(range(20)))
    with Running(WorkerNode(config(), registry, client_factory=fake.client)):
        wait_for(lambda: fake.job_state(job) == "succeeded", what="the job to succeed")
    tasks = fake.job_tasks(job)
    assert [t["result"] for t in tasks] == [i * i for i in range(20)]
    assert all(t["worker"] == "w1" and t["attempt"] == 1 for t in tasks)
    assert fake.count(Op.WORKER_REGISTER) == 1 and fake.count(Op.WORKER_LEAVE) == 1


def test_a_raising_handler_fails_the_attempt_with_its_message_and_is_retried(registry):
    fake = MemoryMaster()
    job = fake.submit_job("boom", "boom", [7], max_attempts=2)
    with Running(WorkerNode(config(), registry, client_factory=fake.client)):
        wait_for(lambda: fake.job_state(job) == "failed", what="the job to fail")
    status = fake.job_status(job)
    assert [f[-2] for f in status["failures"]] == ["ValueError: bad input 7"] * 2


def test_an_unknown_handler_fails_the_attempt_naming_the_handlers_it_has(registry):
    fake = MemoryMaster()
    job = fake.submit_job("x", "nope", [1], max_attempts=1)
    with Running(WorkerNode(config(), registry, client_factory=fake.client)):
        wait_for(lambda: fake.job_state(job) == "failed", what="the job to fail")
    error = fake.job_tasks(job)[0]["error"]
    assert "no handler named 'nope'" in error and "square" in error


def test_a_result_that_msgpack_cannot_carry_fails_the_attempt():
    reg = Registry()
    reg.register("obj", lambda task, report: object())
    fake = MemoryMaster()
    job = fake.submit_job("x", "obj", [1], max_attempts=1)
    with Running(WorkerNode(config(), reg, client_factory=fake.client)):
        wait_for(lambda: fake.job_state(job) == "failed", what="the job to fail")
    assert "not msgpack-able" in fake.job_tasks(job)[0]["error"]


def test_a_lost_worker_drops_its_task_its_reports_are_ignored_and_it_re_registers():
    reg = Registry()
    release = threading.Event()
    seen: list[bool] = []

    @reg.handler("slow")
    def slow(task, report):
        report(0.1)
        release.wait(20)
        seen.append(report(0.9))          # False: the attempt is no longer this worker's
        return "late"

    fake = MemoryMaster()
    job = fake.submit_job("slow", "slow", [1], max_attempts=3)
    with Running(WorkerNode(config(slots=1), reg, client_factory=fake.client)) as running:
        wait_for(lambda: fake.task_states(job) == [TaskState.RUNNING], what="running")
        fake.lose_worker("w1")                      # requeued: attempt 2 goes elsewhere
        wait_for(lambda: fake.count(Op.WORKER_REGISTER) >= 2, what="re-registration")
        wait_for(lambda: running.node.machine.counters["tasks_dropped"] == 1, what="dropped")
        # the machine decided the drop; the shell marks the attempt's handle just after
        handle = running.node.handles[(job, 0)]
        wait_for(lambda: not handle.current, what="the handler's report() to say False")
        release.set()
        # The zombie returns; its slot frees and the worker takes attempt 2 itself.
        wait_for(lambda: fake.job_state(job) == "succeeded", what="the job to succeed")
    assert seen[0] is False
    task = fake.job_tasks(job)[0]
    assert task["attempt"] == 2 and task["result"] == "late"


def test_a_master_restart_makes_the_worker_register_again_and_finish_its_tasks():
    reg = Registry()
    gate = threading.Event()

    @reg.handler("gated")
    def gated(task, report):
        report(0.3, rows=3)
        gate.wait(20)
        return task.input

    fake = MemoryMaster()
    job = fake.submit_job("g", "gated", [1, 2])
    with Running(WorkerNode(config(), reg, client_factory=fake.client)):
        wait_for(lambda: fake.task_states(job) == [TaskState.RUNNING] * 2, what="running")
        fake.restart()
        wait_for(lambda: fake.count(Op.WORKER_REGISTER) >= 2, what="re-registration")
        gate.set()
        wait_for(lambda: fake.job_state(job) == "succeeded", what="the job to succeed")
    assert [t["attempt"] for t in fake.job_tasks(job)] == [1, 1]


def test_an_unreachable_master_is_retried_and_held_results_are_reported_after():
    reg = Registry()
    gate = threading.Event()
    reg.register("gated", lambda task, report: gate.wait(20) and task.input)
    fake = MemoryMaster()
    job = fake.submit_job("g", "gated", [5])
    with Running(WorkerNode(config(slots=1), reg, client_factory=fake.client)):
        wait_for(lambda: fake.task_states(job) == [TaskState.ASSIGNED], what="assigned")
        fake.unreachable = True
        gate.set()
        wait_for(lambda: fake.refused.count(Op.WORKER_REGISTER) >= 2,
                 what="the finish to fail and registration to be retried")
        assert Op.TASK_FINISH in fake.refused
        fake.unreachable = False
        wait_for(lambda: fake.job_state(job) == "succeeded", what="the job to succeed")
    assert fake.count(Op.WORKER_REGISTER) >= 2
    assert fake.job_tasks(job)[0]["result"] == 5


def test_graceful_stop_waits_for_a_running_task_then_leaves():
    reg = Registry()
    started, gate = threading.Event(), threading.Event()

    @reg.handler("gated")
    def gated(task, report):
        started.set()
        gate.wait(20)
        return "done"

    fake = MemoryMaster()
    job = fake.submit_job("g", "gated", [1, 2, 3])
    node = WorkerNode(config(slots=1), reg, client_factory=fake.client)
    thread = threading.Thread(target=node.run, daemon=True)
    thread.start()
    try:
        started.wait(20)
        node.request_stop()
        wait_for(lambda: node.machine.stopping, what="stopping")
        gate.set()
        thread.join(20)
        assert not thread.is_alive()
    finally:
        node.request_stop()
        gate.set()
        thread.join(20)
    assert node.exit_code == 0
    states = fake.task_states(job)
    assert states.count(TaskState.SUCCEEDED) == 1 and states.count(TaskState.PENDING) == 2
    assert fake.count(Op.WORKER_LEAVE) == 1


def test_graceful_stop_abandons_a_task_past_the_deadline():
    reg = Registry()
    started, never = threading.Event(), threading.Event()

    @reg.handler("stuck")
    def stuck(task, report):
        started.set()
        never.wait(30)

    fake = MemoryMaster()
    job = fake.submit_job("s", "stuck", [1])
    node = WorkerNode(config(slots=1, stop_timeout_s=0.0), reg, client_factory=fake.client)
    thread = threading.Thread(target=node.run, daemon=True)
    thread.start()
    try:
        started.wait(20)
        node.request_stop()
        thread.join(20)
        assert not thread.is_alive() and node.exit_code == 0
        assert fake.task_states(job) == [TaskState.PENDING]     # requeued by the leave
    finally:
        never.set()
        node.request_stop()
        thread.join(20)


def test_a_result_the_master_refuses_becomes_a_failure_and_bad_counters_fail_the_handler():
    reg = Registry()
    reg.register("big", lambda task, report: "x" * 5000)
    reg.register("badcounter", lambda task, report: report(0.5, name="text"))
    fake = MemoryMaster(limits=Limits(max_record_bytes=4096))    # the result is too large
    big = fake.submit_job("big", "big", [1], max_attempts=1)
    bad = fake.submit_job("bad", "badcounter", [1], max_attempts=1)
    with Running(WorkerNode(config(), reg, client_factory=fake.client)):
        wait_for(lambda: fake.job_state(big) == "failed" and fake.job_state(bad) == "failed",
                 what="both jobs to fail")
    error = fake.job_tasks(big)[0]["error"]
    assert "the master refused the result" in error and "the limit is 4096" in error
    assert "counter name='text' is not a number" in fake.job_tasks(bad)[0]["error"]
