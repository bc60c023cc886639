"""What each of the worker machine's requests asks the master and what the answer means to
the machine (nodes/worker/exchange.py), shared by the worker node and the simulation."""

from __future__ import annotations

from mwcluster.core import worker_machine as wm
from mwcluster.errors import BadState, InvalidRecord, RequestTimeout
from mwcluster.nodes.worker import exchange


def registered_machine() -> wm.WorkerMachine:
    machine = wm.WorkerMachine("w1", 2)
    machine.start(0)
    exchange.registered(machine, {"heartbeat_ms": 100, "worker_timeout_ms": 3000, "epoch": 1,
                                  "tasks": []}, None, 0)
    return machine


def kinds(instructions) -> list[str]:
    return [type(i).__name__ for i in instructions]


def test_calls_name_the_client_method_and_its_arguments():
    assert exchange.call_of(wm.RequestTasks(3), "w1") == (
        "request_tasks", ("w1", 3), {"durability": "sync"})
    assert exchange.call_of(wm.SendFinish("j", 2, 1, True, {"n": 1}), "w1") == (
        "finish_task", ("w1", "j", 2, 1, True, {"n": 1}), {"durability": "sync"})
    assert exchange.call_of(wm.Leave(), "w1")[0] == "leave_worker"


def test_an_unanswered_request_registers_again_and_a_failed_leave_still_leaves():
    for ins in (wm.Heartbeat([]), wm.RequestTasks(2), wm.SendProgress("j", 0, 1, 0.5, {})):
        machine = registered_machine()
        out = exchange.outcome(machine, ins, None, RequestTimeout("no reply"), 10)
        assert "Register" in kinds(out) and not machine.registered, ins
    machine = registered_machine()
    machine.request_stop(0, 0)
    assert machine.leaving
    exchange.outcome(machine, wm.Leave(), None, RequestTimeout("no reply"), 10)
    assert machine.exited == 0


def test_assignments_whose_answer_was_lost_are_reported_failed_at_the_next_registration():
    """The master assigned a task, its answer never arrived (every resend lost): the worker
    registers again and the registration's list of what the master has on it makes the
    worker report that attempt failed, so the master requeues it."""
    machine = registered_machine()
    out = exchange.outcome(machine, wm.RequestTasks(2), None, RequestTimeout("no reply"), 10)
    register = [i for i in out if type(i) is wm.Register]
    assert register
    out = exchange.registered(machine, {"heartbeat_ms": 100, "worker_timeout_ms": 3000,
                                        "epoch": 1, "tasks": [["j", 3, 1]]}, None, 20)
    assert wm.SendFinish("j", 3, 1, False, "this worker does not run this attempt (it was "
                         "restarted, or never got the assignment)") in out


def test_a_refused_result_is_reported_as_a_failure_and_a_stale_one_dropped():
    machine = registered_machine()
    machine.on_assignments([("j", 0, 1, "h", None, {})], 0)
    machine.on_done("j", 0, 1, True, {"n": 1}, 5)
    finish = wm.SendFinish("j", 0, 1, True, {"n": 1})
    out = exchange.outcome(machine, finish, None, InvalidRecord("too large"), 6)
    assert out == [wm.SendFinish("j", 0, 1, False,
                                 "the master refused the result: too large")]
    out = exchange.outcome(machine, out[0], None, BadState("stale"), 7)
    assert ("j", 0) not in machine.outbox
