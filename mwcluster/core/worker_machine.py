"""The worker's decisions, without I/O: events in, instructions out.

The worker process (nodes/worker/node.py) owns a connection to the master and a pool of handler
threads; every decision it makes is taken here, so that tests drive the whole protocol in
memory with a fake clock:

- which tasks it asks for and when (free slots, an idle pause after an empty answer);
- progress coalescing: a handler may report as often as it likes, the master gets at most one
  report per task per `progress_interval_ms` (the newest values; the first report of an
  attempt goes at once, the rest when their interval is over; a report still held when the
  handler returns goes just before the finish, so the job's counter sums are complete);
- what a reply means: a stale attempt, a cancelled job or a task the master no longer puts on
  this worker drops the task; "unknown worker" and an unreachable master mean register again;
  a new epoch (the master restarted) means register again too;
- reconciliation at register: the master's reply lists the attempts it has on this worker;
  those the worker does not run (it was restarted with the same id, or the answer that gave
  them was lost) are finished as failed so that they go back to pending, and those the
  worker runs but the master does not list are dropped; the newest progress of every task
  kept is reported again;
- a graceful stop: no new tasks, running ones may finish until a deadline, then WORKER_LEAVE
  (the master requeues whatever is left) and exit;
- timeouts: an attempt running longer than its job's `timeout_s` (else the worker's
  `task_timeout_ms`) is failed as timed out, so the master retries it by the job's rules,
  and dropped, so its handler is stopped.

A dropped task's handler is told to stop (Drop): the shell stops a handler's process, cancels
its Dask task, or, for a thread, which cannot be stopped from outside, makes `report()` return
False. Its reports and its result are ignored from then on, and it keeps its slot until it
returns, so the worker never runs more handlers than it has slots.

Time comes in as `now_ms` with each event; nothing here reads a clock or touches a socket.
Instructions are NamedTuples; the shell executes them in order and feeds the replies back.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

INFO = 20
WARNING = 30
ERROR = 40

TaskKey = tuple[str, int]          # (job_id, index)


# --- instructions ---------------------------------------------------------------------------


class Register(NamedTuple):
    slots: int


class Heartbeat(NamedTuple):
    running: list                  # [[job_id, index, attempt], ...]


class RequestTasks(NamedTuple):
    max_tasks: int


class SendProgress(NamedTuple):
    job_id: str
    index: int
    attempt: int
    progress: float
    counters: dict


class SendFinish(NamedTuple):
    job_id: str
    index: int
    attempt: int
    ok: bool
    outcome: Any


class Start(NamedTuple):
    job_id: str
    index: int
    attempt: int
    handler: str
    input: Any
    params: Any
    executor: str = ""             # the job's hint (process or thread); "": the worker's own


class Drop(NamedTuple):
    """The attempt is no longer this worker's: its handler's reports are to be ignored."""
    job_id: str
    index: int
    attempt: int
    reason: str


class Leave(NamedTuple):
    pass


class Exit(NamedTuple):
    code: int


class Note(NamedTuple):
    level: int
    message: str


Instruction = (Register | Heartbeat | RequestTasks | SendProgress | SendFinish | Start | Drop
               | Leave | Exit | Note)


class Run:
    """One attempt this worker runs (or has finished and not yet reported)."""

    __slots__ = ("attempt", "handler", "started_ms", "reported_ms", "last_sent_ms", "latest",
                 "unsent", "sending", "timeout_ms", "timeout_of")

    def __init__(self, attempt: int, handler: str, started_ms: int = 0,
                 timeout_ms: int = 0, timeout_of: str = "the worker's task_timeout_s") -> None:
        self.attempt = attempt
        self.handler = handler
        self.started_ms = started_ms                     # when the assignment came
        self.timeout_ms = timeout_ms                     # 0: it may run as long as it takes
        self.timeout_of = timeout_of                     # whose limit timeout_ms is
        self.reported_ms: int | None = None              # the handler's last report
        self.last_sent_ms: int | None = None
        self.latest: tuple[float, dict] | None = None   # newest progress from the handler
        self.unsent = False                              # `latest` is not at the master yet
        self.sending: SendProgress | None = None         # the newest report handed out


class WorkerMachine:
    """Decisions of one worker. Public fields are read by the shell and by status."""

    def __init__(self, worker_id: str, slots: int, *, heartbeat_ms: int | None = 1000,
                 progress_interval_ms: int = 500, idle_poll_ms: int = 200,
                 task_timeout_ms: int = 0) -> None:
        if slots < 1:
            raise ValueError("a worker needs at least one slot")
        self.worker_id = worker_id
        self.slots = slots
        self.task_timeout_ms = task_timeout_ms          # for jobs without their own timeout_s
        self.configured_heartbeat_ms = heartbeat_ms     # None: the master's
        self.heartbeat_ms = heartbeat_ms or 1000
        self.progress_interval_ms = progress_interval_ms
        self.idle_poll_ms = idle_poll_ms
        self.registered = False
        self.registering = False
        self.epoch: int | None = None
        self.running: dict[TaskKey, Run] = {}
        self.outbox: dict[TaskKey, tuple[int, bool, Any]] = {}   # finished, not yet reported
        # dropped attempts whose handler still runs: (job_id, index, attempt), one per
        # handler (a task timed out twice on this worker has two)
        self.zombies: set[tuple[str, int, int]] = set()
        self.next_heartbeat_ms = 0
        self.next_request_ms = 0
        self.stopping = False
        self.stop_deadline_ms: int | None = None
        self.leaving = False
        self.exited: int | None = None
        self.counters = {"tasks_started": 0, "tasks_succeeded": 0, "tasks_failed": 0,
                         "tasks_dropped": 0, "tasks_abandoned": 0, "tasks_timed_out": 0,
                         "progress_sent": 0,
                         "progress_coalesced": 0, "registrations": 0, "reconnects": 0}

    # --- derived -------------------------------------------------------------------------

    def free_slots(self) -> int:
        # a timed-out attempt is both a zombie (its handler still runs) and in the outbox
        # (its failure is being reported): one slot
        both = sum(1 for job_id, index, attempt in self.zombies
                   if self.outbox.get((job_id, index), (None,))[0] == attempt)
        return self.slots - len(self.running) - len(self.zombies) - len(self.outbox) + both

    def running_list(self) -> list[list]:
        """What the worker holds for the master: running attempts and unreported finishes."""
        held = [[job, index, run.attempt] for (job, index), run in self.running.items()]
        held += [[job, index, entry[0]] for (job, index), entry in self.outbox.items()]
        return sorted(held)

    def still_wanted(self, ins) -> bool:
        """Whether an instruction of an earlier batch is still to be executed: a reply to
        one instruction (a drop, a new registration) can make the next ones of the same
        batch stale, and those must not reach the master."""
        kind = type(ins)
        if kind is SendProgress:
            # The newest report of a running attempt (one handed out again after a new
            # registration replaces the one before), or the report just before a finish.
            key = (ins.job_id, ins.index)
            run = self.running.get(key)
            if run is not None:
                return self.registered and run.sending is ins
            entry = self.outbox.get(key)
            return self.registered and entry is not None and entry[0] == ins.attempt
        if kind is SendFinish:
            entry = self.outbox.get((ins.job_id, ins.index))
            return self.registered and entry is not None and entry[0] == ins.attempt
        if kind is Heartbeat or kind is RequestTasks:
            return self.registered and not self.leaving
        return True

    def next_wakeup_ms(self) -> int | None:
        """The earliest time tick() may have something to do (None: only events matter)."""
        if self.exited is not None:
            return None
        deadlines = [run.started_ms + run.timeout_ms for run in self.running.values()
                     if run.timeout_ms]
        if not self.registered:
            if self.stopping:
                deadlines.append(self.stop_deadline_ms)
            return min(deadlines) if deadlines else None
        times = [self.next_heartbeat_ms, *deadlines]
        if not self.stopping and self.free_slots() > 0:
            times.append(self.next_request_ms)
        for run in self.running.values():
            if run.unsent and run.last_sent_ms is not None:
                times.append(run.last_sent_ms + self.progress_interval_ms)
        if self.stop_deadline_ms is not None:
            times.append(self.stop_deadline_ms)
        return min(times)

    # --- start, register -----------------------------------------------------------------

    def start(self, now_ms: int) -> list:
        return self._register("starting")

    def _register(self, why: str) -> list:
        self.registered = False
        if self.registering or self.exited is not None:
            return []
        self.registering = True
        return [Note(INFO, f"worker {self.worker_id}: registering ({why})"),
                Register(self.slots)]

    def on_registered(self, reply: dict, now_ms: int) -> list:
        """The master's answer to WORKER_REGISTER: {heartbeat_ms, worker_timeout_ms, epoch,
        tasks: [[job_id, index, attempt], ...] it has on this worker}."""
        self.registering = False
        self.registered = True
        self.counters["registrations"] += 1
        self.epoch = reply.get("epoch", self.epoch)
        told = reply.get("heartbeat_ms")
        self.heartbeat_ms = (self.configured_heartbeat_ms
                             or (told if isinstance(told, int) and told > 0 else 1000))
        timeout_ms = reply.get("worker_timeout_ms")
        if isinstance(timeout_ms, int) and timeout_ms > 0:
            # Never so slow that the master takes this worker for lost.
            self.heartbeat_ms = max(1, min(self.heartbeat_ms, timeout_ms // 3))
        out: list = [Note(INFO, f"worker {self.worker_id}: registered with {self.slots} slots "
                                f"(master epoch {self.epoch}, heartbeat every "
                                f"{self.heartbeat_ms} ms)")]
        master_has = {(job, index): attempt for job, index, attempt in reply.get("tasks", [])}
        for key, run in list(self.running.items()):
            if master_has.get(key) != run.attempt:
                out += self._drop(key, run.attempt, "the master no longer has this attempt "
                                                    "on this worker")
            else:
                run.unsent = run.latest is not None     # report the newest progress again
                run.last_sent_ms = None
        for key, entry in list(self.outbox.items()):
            if master_has.get(key) != entry[0]:
                del self.outbox[key]
                out.append(Note(WARNING, f"task {key[0]}/{key[1]} attempt {entry[0]}: the "
                                         "master no longer has it; its result is discarded"))
        for key, attempt in sorted(master_has.items()):
            held = self.running.get(key)
            entry = self.outbox.get(key)
            if (held is None or held.attempt != attempt) and (entry is None
                                                              or entry[0] != attempt):
                self.outbox[key] = (attempt, False, "this worker does not run this attempt "
                                                    "(it was restarted, or never got the "
                                                    "assignment)")
        for key, (attempt, ok, outcome) in sorted(self.outbox.items()):
            out.append(SendFinish(key[0], key[1], attempt, ok, outcome))
        self.next_heartbeat_ms = now_ms + self.heartbeat_ms
        self.next_request_ms = now_ms
        return out + self.tick(now_ms)

    def on_register_failed(self, message: str, now_ms: int) -> list:
        """The master refused the registration (not a network failure): give up."""
        self.registering = False
        self.exited = 1
        return [Note(ERROR, f"worker {self.worker_id}: the master refused the registration: "
                            f"{message}"), Exit(1)]

    def on_register_abandoned(self, now_ms: int) -> list:
        """The registration was given up unanswered because the worker is stopping."""
        self.registering = False
        return self.tick(now_ms)

    def on_unreachable(self, what: str, now_ms: int) -> list:
        """A request got no answer after the client's retries: reconnect and register."""
        if not self.registered:
            return []
        self.registered = False
        self.counters["reconnects"] += 1
        return [Note(WARNING, f"worker {self.worker_id}: the master did not answer {what}; "
                              "reconnecting")] + self._register("the master was unreachable")

    def on_unknown_worker(self, message: str, now_ms: int) -> list:
        if not self.registered:
            return []
        return [Note(WARNING, f"worker {self.worker_id}: the master does not know this worker "
                              f"({message})")] + self._register("unknown to the master")

    # --- periodic --------------------------------------------------------------------------

    def tick(self, now_ms: int) -> list:
        if self.exited is not None:
            return []
        out: list = []
        for key, run in list(self.running.items()):
            if run.timeout_ms and now_ms >= run.started_ms + run.timeout_ms:
                out += self._time_out(key, run)
        if self.stopping and (now_ms >= (self.stop_deadline_ms or 0)
                              or not (self.running or self.outbox)):
            return out + self._leave(now_ms)
        if not self.registered:
            return out
        if now_ms >= self.next_heartbeat_ms:
            out.append(Heartbeat(self.running_list()))
            self.next_heartbeat_ms = now_ms + self.heartbeat_ms
        for key, run in self.running.items():
            if run.unsent and (run.last_sent_ms is None
                               or now_ms - run.last_sent_ms >= self.progress_interval_ms):
                out.append(self._send_progress(key, run, now_ms))
        free = self.free_slots()
        if not self.stopping and free > 0 and now_ms >= self.next_request_ms:
            out.append(RequestTasks(free))
            # Until the answer comes, do not ask again (on_assignments sets the next time).
            self.next_request_ms = now_ms + 60 * 60 * 1000
        return out

    def _send_progress(self, key: TaskKey, run: Run, now_ms: int) -> SendProgress:
        run.unsent = False
        run.last_sent_ms = now_ms
        self.counters["progress_sent"] += 1
        progress, counters = run.latest
        run.sending = SendProgress(key[0], key[1], run.attempt, progress, counters)
        return run.sending

    # --- tasks -----------------------------------------------------------------------------

    def on_assignments(self, assignments: list, now_ms: int) -> list:
        """The answer to TASK_REQUEST: [(job_id, index, attempt, handler, input, params)]."""
        out: list = []
        for job_id, index, attempt, handler, input_value, params, *rest in assignments:
            key = (job_id, index)
            held = self.running.get(key)
            if held is not None and held.attempt == attempt:
                continue                       # the same answer twice (a retried request)
            if held is not None:
                out += self._drop(key, held.attempt, f"superseded by attempt {attempt}")
            options = rest[0] if rest and type(rest[0]) is dict else {}   # the job's options
            timeout_s = options.get("timeout_s")
            own = type(timeout_s) in (int, float) and timeout_s > 0
            timeout_ms = max(1, math.ceil(timeout_s * 1000)) if own else self.task_timeout_ms
            executor = options.get("executor")
            self.running[key] = Run(attempt, handler, now_ms, timeout_ms,
                                    "the job's timeout_s" if own
                                    else "the worker's task_timeout_s")
            self.counters["tasks_started"] += 1
            out.append(Start(job_id, index, attempt, handler, input_value, params,
                             executor if executor in ("process", "thread") else ""))
        self.next_request_ms = now_ms if assignments else now_ms + self.idle_poll_ms
        return out

    def on_request_failed(self, now_ms: int) -> list:
        """TASK_REQUEST failed in a way that is neither unreachable nor unknown worker."""
        self.next_request_ms = now_ms + self.idle_poll_ms
        return []

    def on_progress(self, job_id: str, index: int, attempt: int, progress: float,
                    counters: dict, now_ms: int) -> list:
        """A handler reported; at most one report per task per progress_interval_ms leaves."""
        run = self.running.get((job_id, index))
        if run is None or run.attempt != attempt:
            return []                          # a dropped attempt: ignored
        if run.unsent:
            self.counters["progress_coalesced"] += 1
        run.latest = (float(progress), dict(counters))
        run.reported_ms = now_ms
        run.unsent = True
        if not self.registered:
            return []
        if run.last_sent_ms is None or now_ms - run.last_sent_ms >= self.progress_interval_ms:
            return [self._send_progress((job_id, index), run, now_ms)]
        return []

    def on_done(self, job_id: str, index: int, attempt: int, ok: bool, outcome: Any,
                now_ms: int) -> list:
        """A handler returned (ok, result) or raised (not ok, error message)."""
        key = (job_id, index)
        if (job_id, index, attempt) in self.zombies:
            self.zombies.discard((job_id, index, attempt))
            self.next_request_ms = min(self.next_request_ms, now_ms)
            return [Note(INFO, f"task {job_id}/{index} attempt {attempt} returned after it "
                               "was dropped; its result is discarded")]
        run = self.running.get(key)
        if run is None or run.attempt != attempt:
            return []
        del self.running[key]
        self.outbox[key] = (attempt, ok, outcome)
        self.counters["tasks_succeeded" if ok else "tasks_failed"] += 1
        self.next_request_ms = min(self.next_request_ms, now_ms)
        out: list = []
        if ok and run.unsent and self.registered:
            # The newest counters go before the finish, so the job's sums are complete.
            out.append(self._send_progress(key, run, now_ms))
        if not ok:
            out.append(Note(WARNING, f"task {job_id}/{index} attempt {attempt} failed: "
                                     f"{outcome}"))
        if self.registered:
            out.append(SendFinish(job_id, index, attempt, ok, outcome))
        return out + self.tick(now_ms)

    def on_finish_reply(self, job_id: str, index: int, attempt: int, state: str | None,
                        now_ms: int, stale: str | None = None) -> list:
        """The master took the finish (state: the task's new state) or refused it as stale."""
        key = (job_id, index)
        entry = self.outbox.get(key)
        if entry is not None and entry[0] == attempt:
            del self.outbox[key]
        out: list = []
        if stale is not None:
            out.append(Note(WARNING, f"task {job_id}/{index} attempt {attempt}: the master "
                                     f"refused its result: {stale}"))
        return out + self.tick(now_ms)

    def on_progress_stale(self, job_id: str, index: int, attempt: int, message: str,
                          now_ms: int) -> list:
        """The master refused a progress report: the attempt is not current any more."""
        return self._drop((job_id, index), attempt, message)

    def on_heartbeat_reply(self, reply: dict, now_ms: int) -> list:
        """{known, cancel: [[job_id, index, attempt], ...], epoch}."""
        if not reply.get("known", True):
            return self._register("the master does not know this worker")
        epoch = reply.get("epoch")
        if epoch is not None and self.epoch is not None and epoch != self.epoch:
            self.epoch = epoch
            return self._register(f"the master restarted (epoch {epoch})")
        out: list = []
        for job_id, index, attempt in reply.get("cancel", []):
            key = (job_id, index)
            entry = self.outbox.get(key)
            if entry is not None and entry[0] == attempt:
                del self.outbox[key]
                out.append(Note(INFO, f"task {job_id}/{index} attempt {attempt}: cancelled "
                                      "by the master; its result is discarded"))
            else:
                out += self._drop(key, attempt, "cancelled by the master")
        return out

    def _time_out(self, key: TaskKey, run: Run) -> list:
        """Fail the attempt as timed out (the master retries it by its job's rules) and tell
        the shell to stop its handler; the slot stays taken until the handler has returned."""
        del self.running[key]
        self.zombies.add((key[0], key[1], run.attempt))
        message = (f"timed out after {run.timeout_ms / 1000:g} s ({run.timeout_of}): the "
                   "worker told its handler to stop (a process: SIGTERM, then SIGKILL; a "
                   "thread: report() returns False; a Dask task: cancelled)")
        self.outbox[key] = (run.attempt, False, message)
        self.counters["tasks_failed"] += 1
        self.counters["tasks_timed_out"] += 1
        out = [Note(WARNING, f"task {key[0]}/{key[1]} attempt {run.attempt} {message}"),
               Drop(key[0], key[1], run.attempt, "timed out")]
        if self.registered:
            out.append(SendFinish(key[0], key[1], run.attempt, False, message))
        return out

    def _drop(self, key: TaskKey, attempt: int, reason: str) -> list:
        run = self.running.get(key)
        if run is None or run.attempt != attempt:
            return []
        del self.running[key]
        self.zombies.add((key[0], key[1], attempt))
        self.counters["tasks_dropped"] += 1
        return [Note(WARNING, f"task {key[0]}/{key[1]} attempt {attempt} dropped: {reason}"),
                Drop(key[0], key[1], attempt, reason)]

    # --- stop ----------------------------------------------------------------------------------

    def request_stop(self, now_ms: int, timeout_ms: int) -> list:
        """Take no more tasks; let running ones finish for up to timeout_ms, then leave."""
        if self.stopping:
            return []
        self.stopping = True
        self.stop_deadline_ms = now_ms + timeout_ms
        out = [Note(INFO, f"worker {self.worker_id}: stopping ({len(self.running)} tasks "
                          f"running, up to {timeout_ms} ms to finish them)")]
        return out + self.tick(now_ms)

    def _leave(self, now_ms: int) -> list:
        if self.leaving:
            return []
        self.leaving = True
        out: list = []
        if self.running:
            self.counters["tasks_abandoned"] += len(self.running)
            out.append(Note(WARNING, f"worker {self.worker_id}: abandoning "
                                     f"{len(self.running)} running tasks (the master requeues "
                                     "them)"))
            # their handlers are told to stop (a process gets SIGTERM, then SIGKILL)
            out += [Drop(key[0], key[1], run.attempt, "the worker is stopping")
                    for key, run in sorted(self.running.items())]
        if not self.registered:
            self.exited = 0
            return out + [Note(WARNING, f"worker {self.worker_id}: leaving without telling the "
                                        "master (it is unreachable)"), Exit(0)]
        return out + [Leave()]

    def on_left(self, now_ms: int) -> list:
        self.exited = 0
        return [Note(INFO, f"worker {self.worker_id}: left the cluster"), Exit(0)]
