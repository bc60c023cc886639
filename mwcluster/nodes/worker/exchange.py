"""What each of the worker machine's network instructions asks the master, and what the
answer means to the machine: no socket, no thread. The worker's owner thread (node.py) makes
the call with its Client; the in-memory cluster simulation sends the same request over its
simulated network. Both hand the outcome (a result, or the MwclusterError the call raised) to
`outcome`, which returns the machine's next instructions.

    Heartbeat     worker_heartbeat                   -> on_heartbeat_reply
    RequestTasks  request_tasks (sync: an assignment is durable before the task starts)
                                                     -> on_assignments / on_unknown_worker /
                                                        on_request_failed
    SendProgress  report_progress                    -> nothing, or on_progress_stale
    SendFinish    finish_task (sync)                 -> on_finish_reply; a refused result
                                                        becomes a failure report instead
    Leave         leave_worker                       -> on_left

An unanswered request (RequestTimeout, after the client's own retries), or a master shutting
down, is `on_unreachable`: the machine registers again, and the master's answer to the
registration lists the attempts it has on this worker, which reconciles what the lost answers
left (a TASK_REQUEST the master answered with assignments the worker never received: they are
reported failed, so the master requeues them, instead of staying assigned to a live worker
forever). A leave that fails is a leave all the same. Registration itself (the node retries it
with backoff until it works) is `registered`.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

import msgpack

from mwcluster.core import worker_machine as wm
from mwcluster.errors import (BadState, MwclusterError, NotFound, RequestTimeout,
                              ShuttingDown)

log = logging.getLogger(__name__)

MAX_ERROR_CHARS = 2000       # of an error message a worker reports for a failed attempt


def check_counters(counters: dict) -> None:
    """report()'s counters must be numbers: TypeError naming the first that is not."""
    for name, value in counters.items():
        if type(value) not in (int, float):
            raise TypeError(f"report(): counter {name}={value!r} is not a number")


def run_handler(fn: Callable, task: Any, report: Callable) -> tuple[bool, Any]:
    """Call a handler the way every executor does: (True, its result), or (False, why) when
    it raised or its result cannot be sent; the handler's failure never the worker's."""
    try:
        result = fn(task, report)
    except Exception as exc:
        return False, f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS]
    try:
        msgpack.packb(result, use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as exc:
        return False, f"the handler's result cannot be sent (not msgpack-able): {exc}"
    return True, result


# Instructions that are a request to the master (Register has a retry policy of its own).
CALLS = (wm.Heartbeat, wm.RequestTasks, wm.SendProgress, wm.SendFinish, wm.Leave)


def call_of(ins: Any, worker_id: str) -> tuple[str, tuple, dict]:
    """The Client call an instruction makes: (method name, args, keyword args)."""
    kind = type(ins)
    if kind is wm.Heartbeat:
        return "worker_heartbeat", (worker_id, ins.running), {}
    if kind is wm.RequestTasks:
        return "request_tasks", (worker_id, ins.max_tasks), {"durability": "sync"}
    if kind is wm.SendProgress:
        return "report_progress", (worker_id, ins.job_id, ins.index, ins.attempt,
                                   ins.progress, ins.counters), {}
    if kind is wm.SendFinish:
        return "finish_task", (worker_id, ins.job_id, ins.index, ins.attempt, ins.ok,
                               ins.outcome), {"durability": "sync"}
    if kind is wm.Leave:
        return "leave_worker", (worker_id,), {}
    raise AssertionError(f"not a request to the master: {ins!r}")


def outcome(machine: wm.WorkerMachine, ins: Any, result: Any, error: MwclusterError | None,
            now_ms: int) -> list:
    """The machine's next instructions, given the answer to `ins` (its result, or the error
    its call raised)."""
    kind = type(ins)
    wid = machine.worker_id
    if isinstance(error, (RequestTimeout, ShuttingDown)) and kind is not wm.Leave:
        return machine.on_unreachable(f"{kind.__name__} ({error})", now_ms)
    if kind is wm.Heartbeat:
        if error is not None:
            log.warning("worker %s: heartbeat refused: %s", wid, error)
            return []
        return machine.on_heartbeat_reply(result, now_ms)
    if kind is wm.RequestTasks:
        if isinstance(error, (BadState, NotFound)):
            return machine.on_unknown_worker(str(error), now_ms)
        if error is not None:
            log.warning("worker %s: asking for tasks failed: %s", wid, error)
            return machine.on_request_failed(now_ms)
        return machine.on_assignments([tuple(a) for a in result], now_ms)
    if kind is wm.SendProgress:
        if isinstance(error, (BadState, NotFound)):
            return machine.on_progress_stale(ins.job_id, ins.index, ins.attempt, str(error),
                                             now_ms)
        if error is not None:              # e.g. counters the master refuses
            log.warning("task %s/%d: progress report refused: %s", ins.job_id, ins.index,
                        error)
        return []
    if kind is wm.SendFinish:
        return _finished(machine, ins, result, error, now_ms)
    if kind is wm.Leave:
        if error is not None:
            log.warning("worker %s: WORKER_LEAVE failed: %s", wid, error)
        return machine.on_left(now_ms)
    raise AssertionError(f"not a request to the master: {ins!r}")


def _finished(machine: wm.WorkerMachine, ins: wm.SendFinish, state: Any,
              error: MwclusterError | None, now_ms: int) -> list:
    if error is None:
        log.debug("task %s/%d attempt %d -> %s", ins.job_id, ins.index, ins.attempt, state)
        return machine.on_finish_reply(ins.job_id, ins.index, ins.attempt, state, now_ms)
    if ins.ok and not isinstance(error, (BadState, NotFound)):
        # The master refused the result (too large, invalid): report the failure instead,
        # so that the task does not stay assigned forever.
        log.warning("task %s/%d: the master refused its result: %s", ins.job_id, ins.index,
                    error)
        return [wm.SendFinish(ins.job_id, ins.index, ins.attempt, False,
                              f"the master refused the result: {error}"[:MAX_ERROR_CHARS])]
    return machine.on_finish_reply(ins.job_id, ins.index, ins.attempt, None, now_ms,
                                   stale=str(error))


def registered(machine: wm.WorkerMachine, reply: dict | None, error: MwclusterError | None,
               now_ms: int) -> list:
    """The machine's next instructions after a registration: its reply, or the error that
    ended the retries (one that is not the master being away)."""
    if error is not None:
        return machine.on_register_failed(str(error), now_ms)
    return machine.on_registered(reply, now_ms)
