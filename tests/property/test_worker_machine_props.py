"""The worker machine under random event sequences (hypothesis), against a small model of the
master that answers its instructions: handlers report and return at random times, the master
restarts, becomes unreachable, declares the worker lost, cancels attempts.

Checked after every step:
- handlers running (started and not returned, tracked by the test, not read from the
  machine) never exceed the slots, also when the master retries a timed-out task on this
  worker;
- a task attempt sends at most one progress report per progress_interval_ms, except the one
  that goes just before its finish and the one repeated after a registration;
- nothing is reported for an attempt after it was dropped, except the failure of an attempt
  dropped because it timed out (dropped first, so that its handler stops at once);
- the machine always has a way forward: when registered and idle with free slots, a request
  for tasks is due within idle_poll_ms;
and at the end every attempt a handler finished is either accepted by the master or was
dropped, once the master is reachable again.
"""

from __future__ import annotations

from hypothesis import example, given, settings
from hypothesis import strategies as st

from mwcluster.core.worker_machine import (Drop, Exit, Heartbeat, Leave, Note, Register,
                                           RequestTasks, SendFinish, SendProgress, Start,
                                           WorkerMachine)

SLOTS = 3
INTERVAL = 100
IDLE = 50


class Model:
    """The master's side, as far as one worker can see it."""

    def __init__(self) -> None:
        self.epoch = 1
        self.reachable = True
        self.known = False
        self.next_index = 0
        self.attempts: dict[tuple[str, int], int] = {}     # current attempt per task
        self.owned: set[tuple[str, int]] = set()           # tasks this worker holds
        self.accepted: set[tuple[str, int, int]] = set()   # finishes accepted
        self.retry: list[tuple[str, int]] = []             # failed: given out again first

    def lose_worker(self) -> None:
        self.known = False
        self.owned.clear()          # requeued: the attempts held are stale now


def run(machine: WorkerMachine, model: Model, instructions: list, now: int, log: dict) -> None:
    todo = list(instructions)
    while todo:
        ins = todo.pop(0)
        more: list = []
        if not machine.still_wanted(ins):
            continue
        if isinstance(ins, (Note, Exit, Leave)):
            pass
        elif isinstance(ins, Start):
            log["started"].add((ins.job_id, ins.index, ins.attempt))
            log["live"].add((ins.job_id, ins.index, ins.attempt))
        elif isinstance(ins, Drop):
            log["dropped"].add((ins.job_id, ins.index, ins.attempt))
            if ins.reason == "timed out":
                log["timed_out"].add((ins.job_id, ins.index, ins.attempt))
        elif not model.reachable:
            if isinstance(ins, Register):
                machine.registering = False          # the shell gives up for now
            else:
                more = machine.on_unreachable(type(ins).__name__, now)
        elif isinstance(ins, Register):
            model.known = True
            held = sorted([j, i, model.attempts[(j, i)]] for j, i in model.owned)
            more = machine.on_registered({"epoch": model.epoch, "tasks": held,
                                          "worker_timeout_ms": 10_000}, now)
            log["registration"] += 1
        elif isinstance(ins, Heartbeat):
            cancel = [t for t in ins.running
                      if (t[0], t[1]) not in model.owned
                      or model.attempts[(t[0], t[1])] != t[2]]
            more = machine.on_heartbeat_reply({"known": model.known, "epoch": model.epoch,
                                               "cancel": cancel}, now)
        elif isinstance(ins, RequestTasks):
            if not model.known:
                more = machine.on_unknown_worker("not registered", now)
            else:
                got = []
                for _ in range(min(ins.max_tasks, 2)):
                    if model.retry:                  # a failed task comes back here
                        key = model.retry.pop(0)
                        model.attempts[key] += 1
                    else:
                        key = ("j", model.next_index)
                        model.next_index += 1
                        model.attempts[key] = 1
                    model.owned.add(key)
                    got.append(("j", key[1], model.attempts[key], "h", None, {}))
                more = machine.on_assignments(got, now)
        elif isinstance(ins, (SendProgress, SendFinish)):
            key = (ins.job_id, ins.index)
            attempt = (ins.job_id, ins.index, ins.attempt)
            assert attempt not in log["dropped"] or (
                isinstance(ins, SendFinish) and not ins.ok and attempt in log["timed_out"]), \
                f"{ins} after its attempt was dropped"
            current = key in model.owned and model.attempts[key] == ins.attempt
            if isinstance(ins, SendProgress):
                log["progress"].setdefault(attempt, []).append((now, log["registration"]))
                more = [] if current else machine.on_progress_stale(*attempt, "stale", now)
            else:
                log["finish_at"].setdefault(attempt, now)
                if current:
                    model.owned.discard(key)
                    model.accepted.add(attempt)
                    if not ins.ok:
                        model.retry.append(key)
                more = machine.on_finish_reply(*attempt, "succeeded" if current else None,
                                               now, stale=None if current else "stale")
        todo[0:0] = more


events = st.lists(st.one_of(
    st.tuples(st.just("wait"), st.integers(1, 120)),
    st.tuples(st.just("report"), st.integers(0, 5)),
    st.tuples(st.just("done"), st.integers(0, 5)),
    st.tuples(st.just("restart"), st.just(0)),
    st.tuples(st.just("partition"), st.just(0)),
    st.tuples(st.just("heal"), st.just(0)),
    st.tuples(st.just("lost"), st.just(0)),
), max_size=80)


@settings(max_examples=1000, deadline=None)
@given(events, st.sampled_from([0, 150, 400]), st.sampled_from([2, SLOTS]))
# a task that times out, is retried on this worker and times out again: two handlers of one
# task still run, and each keeps its slot
@example([("done", 1), ("wait", 160), ("done", 1), ("wait", 160)], 150, 2)
def test_the_worker_machine_keeps_its_promises(steps, task_timeout_ms, slots):
    machine = WorkerMachine("w", slots, heartbeat_ms=200, progress_interval_ms=INTERVAL,
                            idle_poll_ms=IDLE, task_timeout_ms=task_timeout_ms)
    model = Model()
    log: dict = {"started": set(), "dropped": set(), "timed_out": set(), "progress": {},
                 "finish_at": {}, "registration": 0, "live": set()}
    now = 0
    run(machine, model, machine.start(now), now, log)
    for kind, arg in steps:
        if kind == "wait":
            now += arg
        elif kind in ("report", "done"):
            handlers = sorted(log["live"])           # started and not returned
            if handlers:
                job_id, index, attempt = handlers[arg % len(handlers)]
                key = (job_id, index)
                if kind == "done":
                    log["live"].discard((job_id, index, attempt))
                if kind == "report":
                    out = machine.on_progress(key[0], key[1], attempt, 0.5, {"n": now}, now)
                else:
                    out = machine.on_done(key[0], key[1], attempt, True, now, now)
                run(machine, model, out, now, log)
        elif kind == "restart":
            model.epoch += 1
        elif kind == "partition":
            model.reachable = False
        elif kind == "heal":
            model.reachable = True
            if not machine.registered and not machine.registering:
                run(machine, model, machine._register("healed"), now, log)
        elif kind == "lost":
            model.lose_worker()
        run(machine, model, machine.tick(now), now, log)
        assert len(log["live"]) <= slots, (log["live"], machine.free_slots())
        assert machine.free_slots() >= 0
        if machine.registered and model.reachable and machine.free_slots() > 0:
            assert machine.next_request_ms <= now + IDLE, "no request for tasks is due"
    # Spacing of progress reports within one registration.
    for attempt, sends in log["progress"].items():
        for (t1, r1), (t2, r2) in zip(sends, sends[1:]):
            if r1 == r2 and t2 - t1 < INTERVAL:
                # Allowed only for the report sent just before the finish.
                assert log["finish_at"].get(attempt) == t2, (attempt, sends)
    # Heal and let everything settle: every finished attempt is accepted or was dropped.
    model.reachable = True
    if not machine.registered and not machine.registering:
        run(machine, model, machine._register("end"), now, log)
    for _ in range(5):
        now += 300
        run(machine, model, machine.tick(now), now, log)
    assert not machine.outbox, machine.outbox
