"""The master's job and worker operations: what it answers to them, and which records it logs.

Part of the request handlers (handlers.py hands every op from JOB_SUBMIT up to 99 to
`JobHandlers.handle(req, now)`, with the time of the loop's drain, and the JOB_* reads to
`JobHandlers.read(req)`); no sockets, no threads, and only the wall clock it is given
(`wall_ms`, which goes into the records so that replay is exact). It is given the engine, the
master's stats and epoch and its own config, never the handlers it serves.

Logged operations (each checks its args with wire.protocol.check_args, then answers a retry of
the same (client_id, request_id) from the engine's recent table before anything else, then
builds one record and submits it with the request as its origin, exactly like a PUT; sync
parking is the caller's, by the answer's txid):

    JOB_SUBMIT       -> JobSubmit (a nil job id becomes "job-<txid of the record>")
    JOB_CANCEL       -> JobCancel          JOB_DELETE   -> JobDelete
    WORKER_REGISTER  -> WorkerRegister     WORKER_LEAVE -> WorkerLeave
    TASK_PROGRESS    -> TaskProgress       TASK_FINISH  -> TaskFinish
                        (refused BAD_STATE unless the task's current attempt is on that worker)
    TASK_REQUEST     -> the scheduler (core/scheduler.py) picks, one TaskAssign per pick, all
                        with the request's origin; the answer's txid is the last one, so a sync
                        request is answered once every assignment is durable. A retry is
                        answered with the same assignments (kept in memory; after a restart,
                        the tasks assigned to that worker and not started yet).

Soft state: WORKER_HEARTBEAT (and every request a worker makes) refreshes the liveness tracker
(core/liveness.py). The status endpoint a worker may name at register (an optional fourth
arg) is kept here too, never logged: STATUS lists it in `worker_nodes`, and after a master
restart the workers name it again when they register again. `expire(now)`, called by the master's loop every tick, logs WorkerLost for
the workers silent longer than worker_timeout_s; the state machine requeues their tasks.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, NamedTuple

from mwcluster import errors
from mwcluster.core import scheduler
from mwcluster.core.durability import Durability
from mwcluster.core.job_stats import JobStats, Sums
from mwcluster.core.jobs import (ACTIVE_TASK, FINISHED_JOB, FINISHED_TASK, Job, TaskState,
                                 WorkerState)
from mwcluster.core.liveness import Liveness
from mwcluster.core.records import (JobCancel, JobDelete, JobSubmit, Origin, TaskAssign,
                                    TaskFinish, TaskProgress, WorkerLeave, WorkerLost,
                                    WorkerRegister)
from mwcluster.engine import Engine
from mwcluster.nodes.master.answers import Answer, refusal
from mwcluster.nodes.master.checkpoints import BadHello, check_endpoint
from mwcluster.nodes.master.stats import MasterStats
from mwcluster.wire.protocol import (ErrorCode, Op, ProtocolError, Request, check_args,
                                     error_code_for)

log = logging.getLogger(__name__)

MAX_TASKS_LIST = 100_000     # task maps per JOB_TASKS reply
MAX_FAILURES = 20            # failures listed by JOB_STATUS
MAX_WORKER_NODES = 1024      # workers listed with their status endpoint in STATUS
_REMEMBER = 10_000           # TASK_REQUEST answers kept for retries (two generations of this)
_TASK_STATES = frozenset(s.value for s in TaskState)
_ASYNC = Durability.ASYNC


class JobsConfig(NamedTuple):
    worker_timeout_s: float = 10.0
    worker_heartbeat_ms: int = 1000
    max_assign_per_request: int = 64


def _no_clock() -> int:
    return 0


class JobHandlers:
    """Owned by the event loop thread, like the Handlers that hand it requests."""

    def __init__(self, engine: Engine, stats: MasterStats, epoch: int,
                 config: JobsConfig = JobsConfig(), *, wall_ms: Callable[[], int] = _no_clock,
                 wake_flusher: bool = True, now: float = 0.0) -> None:
        self.engine = engine
        self.stats = stats
        self.epoch = epoch
        self.config = config
        self.wall_ms = wall_ms
        self._wake = wake_flusher
        self.liveness = Liveness(config.worker_timeout_s)
        self.workers_lost = 0           # WorkerLost records this master logged
        self.assignments = 0            # TaskAssign records this master logged
        self.status_endpoints: dict[str, str] = {}   # worker id -> its status endpoint
        # worker id -> the CURVE key it registered with: its status endpoint serves with it
        self.status_keys: dict[str, str] = {}
        self._answers: dict[Origin, list] = {}
        self._answers_old: dict[Origin, list] = {}
        # TASK_REQUESTs answered with no task (no record logged them), in two generations of
        # their own, so that idle workers polling do not push the answers above out
        self._empty: set[Origin] = set()
        self._empty_old: set[Origin] = set()
        self.sums = JobStats(self.engine.state.jobs)    # for JOB_STATUS and JOB_LIST
        # the logged ops and the heartbeat: (req, now) -> Answer
        self._ops: dict[int, Callable[[Request, float], Answer]] = {
            Op.JOB_SUBMIT: self._submit, Op.JOB_CANCEL: self._cancel,
            Op.JOB_DELETE: self._delete, Op.WORKER_REGISTER: self._register,
            Op.WORKER_HEARTBEAT: self._heartbeat, Op.TASK_REQUEST: self._request,
            Op.TASK_PROGRESS: self._progress, Op.TASK_FINISH: self._finish,
            Op.WORKER_LEAVE: self._leave,
        }
        # the reads: req -> Answer
        self._reads: dict[int, Callable[[Request], Answer]] = {
            Op.JOB_LIST: self._list, Op.JOB_STATUS: self._status, Op.JOB_TASKS: self._tasks,
        }
        self.grace(now)

    @property
    def jobs(self):
        return self.engine.state.jobs

    # --- entry point -----------------------------------------------------------------------

    def handle(self, req: Request, now: float) -> Answer:
        """(status, txid, result) of one logged job or worker op, or a heartbeat, received at
        `now` (the loop's monotonic time: worker liveness); every refusal is an error answer."""
        handler = self._ops.get(req[2])
        if handler is None:
            return refusal(self.stats, ErrorCode.UNKNOWN_OP, f"unknown operation {req[2]}")
        return self._answer(handler, req, now)

    def read(self, req: Request) -> Answer:
        """JOB_LIST, JOB_STATUS or JOB_TASKS."""
        return self._answer(self._reads[req[2]], req)

    def _answer(self, handler: Callable[..., Answer], *args) -> Answer:
        try:
            return handler(*args)
        except ProtocolError as exc:
            return refusal(self.stats, exc.error, str(exc))
        except errors.MwclusterError as exc:   # refused: nothing was applied
            return refusal(self.stats, error_code_for(exc), str(exc))

    def _hit(self, req: Request) -> tuple[int, Any] | None:
        hit = self.engine.recent((req[0], req[1]))
        if hit is not None:
            self.stats.retries += 1
        return hit

    def _log(self, req: Request, rec, touches: list | tuple = ()) -> tuple[int, Any]:
        """Submit one record with the request as its origin; `touches`: the (job_id, index)
        of the tasks it changes, whose jobs' kept sums follow."""
        seen = self.sums.before(touches) if touches else None
        out = self.engine.submit(rec, durability=_ASYNC, origin=(req[0], req[1]),
                                 wake=self._wake)
        if seen:
            self.sums.after(seen)
        return out

    # --- jobs ------------------------------------------------------------------------------

    def _submit(self, req: Request, now: float) -> Answer:
        job_id, name, handler, priority, max_attempts, tasks, options = check_args(req)
        hit = self._hit(req)
        if hit is not None:
            return 0, *hit
        if job_id is None:
            job_id = f"job-{self.engine.state.txid + 1}"
            suffix = 1
            while job_id in self.jobs.jobs:     # a caller chose that name for another job
                job_id = f"job-{self.engine.state.txid + 1}-{suffix}"
                suffix += 1
        return 0, *self._log(req, JobSubmit(job_id, name, handler, priority, max_attempts,
                                            tasks, self.wall_ms(), options or {}))

    def _cancel(self, req: Request, now: float) -> Answer:
        job_id, reason = check_args(req)
        hit = self._hit(req)
        if hit is not None:
            return 0, *hit
        return 0, *self._log(req, JobCancel(job_id, reason, self.wall_ms()))

    def _delete(self, req: Request, now: float) -> Answer:
        job_id, = check_args(req)
        hit = self._hit(req)
        if hit is not None:
            return 0, *hit
        out = self._log(req, JobDelete(job_id))
        self.sums.forget(job_id)
        return 0, *out

    # --- workers ---------------------------------------------------------------------------

    def _register(self, req: Request, now: float) -> Answer:
        worker_id, address, slots, endpoint = check_args(req)
        try:
            endpoint = check_endpoint(endpoint)
        except BadHello as exc:
            raise ProtocolError(ErrorCode.BAD_REQUEST, f"WORKER_REGISTER: {exc}",
                                req.request_id) from None
        hit = self._hit(req)
        if hit is not None:
            txid = hit[0]
        else:
            txid, _new = self._log(req, WorkerRegister(worker_id, address, slots,
                                                       self.wall_ms()))
        self.liveness.seen(worker_id, now)
        if endpoint is None:
            self.status_endpoints.pop(worker_id, None)
            self.status_keys.pop(worker_id, None)
        else:
            self.status_endpoints[worker_id] = endpoint
        worker = self.jobs.workers[worker_id]
        tasks = sorted([job_id, index, self.jobs.jobs[job_id].tasks[index].attempt]
                       for job_id, index in worker.running)
        return 0, txid, {"heartbeat_ms": self.config.worker_heartbeat_ms,
                         "worker_timeout_ms": int(self.config.worker_timeout_s * 1000),
                         "epoch": self.epoch, "tasks": tasks}

    def _leave(self, req: Request, now: float) -> Answer:
        worker_id, = check_args(req)
        hit = self._hit(req)
        if hit is None:
            worker = self.jobs.workers.get(worker_id)
            txid, _requeued = self._log(req, WorkerLeave(worker_id, self.wall_ms()),
                                        sorted(worker.running) if worker is not None else ())
        else:
            txid = hit[0]
        self.liveness.forget(worker_id)
        self.status_endpoints.pop(worker_id, None)
        self.status_keys.pop(worker_id, None)
        return 0, txid, None

    def _active_worker(self, worker_id: str, now: float) -> None:
        worker = self.jobs.workers.get(worker_id)
        if worker is None or worker.state is not WorkerState.ACTIVE:
            state = "not registered" if worker is None else worker.state.value
            raise errors.BadState(f"worker {worker_id} is {state}; register it again")
        self.liveness.seen(worker_id, now)

    def _heartbeat(self, req: Request, now: float) -> Answer:
        worker_id, running = check_args(req)
        worker = self.jobs.workers.get(worker_id)
        known = worker is not None and worker.state is WorkerState.ACTIVE
        if known:
            self.liveness.seen(worker_id, now)
        jobs = self.jobs.jobs
        cancel = []
        for item in running:
            if type(item) is not list or len(item) != 3 or type(item[0]) is not str or \
                    type(item[1]) is not int or type(item[2]) is not int:
                raise ProtocolError(ErrorCode.BAD_REQUEST, "WORKER_HEARTBEAT: running holds "
                                    "[job_id: str, index: int, attempt: int] items",
                                    req.request_id)
            job_id, index, attempt = item
            job = jobs.get(job_id)
            task = job.tasks[index] if job is not None and 0 <= index < len(job.tasks) else None
            if task is None or task.state not in ACTIVE_TASK or task.attempt != attempt \
                    or task.worker != worker_id:
                cancel.append(item)
        return 0, 0, {"known": known, "cancel": cancel, "epoch": self.epoch}

    # --- tasks -----------------------------------------------------------------------------

    def _request(self, req: Request, now: float) -> Answer:
        worker_id, max_tasks = check_args(req)
        if max_tasks < 0:
            raise ProtocolError(ErrorCode.BAD_REQUEST, "TASK_REQUEST: max_tasks must be >= 0",
                                req.request_id)
        origin = (req[0], req[1])
        hit = self._hit(req)
        if hit is not None:
            return 0, hit[0], self._answer_again(origin, worker_id)
        if origin in self._empty or origin in self._empty_old:
            # answered before with nothing to assign (no record logged it): the same answer.
            # Taken for a new request, a late copy of it would assign tasks whose answer goes
            # to a request the worker no longer waits for, and they would stay assigned to it
            self.stats.retries += 1
            return 0, 0, []
        self._active_worker(worker_id, now)
        jobs = self.jobs
        picks = scheduler.pick(jobs, worker_id,
                               min(max_tasks, self.config.max_assign_per_request))
        out = []
        top = 0
        now_ms = self.wall_ms()
        submit = self.engine.submit
        wake = self._wake
        sums = self.sums
        for job_id, index, attempt in picks:
            seen = sums.before(((job_id, index),))
            try:
                top, _ = submit(TaskAssign(job_id, index, worker_id, attempt, now_ms),
                                durability=_ASYNC, origin=origin, wake=wake)
            except errors.MwclusterError:
                if not out:
                    raise
                break       # the journal stopped taking writes: answer what was assigned
            if seen:
                sums.after(seen)
            out.append(_assignment(jobs.jobs[job_id], index, attempt))
        if out:
            self.assignments += len(out)
            answers = self._answers
            answers[origin] = out
            if len(answers) >= _REMEMBER:
                self._answers_old, self._answers = answers, {}
        else:
            empty = self._empty
            empty.add(origin)
            if len(empty) >= _REMEMBER:
                self._empty_old, self._empty = empty, set()
        return 0, top, out

    def _remembered(self, origin: Origin) -> list | None:
        found = self._answers.get(origin)
        return self._answers_old.get(origin) if found is None else found

    def _answer_again(self, origin: Origin, worker_id: str) -> list:
        """The answer to a retried TASK_REQUEST: the first answer when it is remembered; else
        (after a restart) every task assigned to the worker and not started yet, which are
        the ones a worker that never saw the answer does not know about."""
        found = self._remembered(origin)
        if found is not None:
            return found
        worker = self.jobs.workers.get(worker_id)
        out = []
        for job_id, index in sorted(worker.running if worker is not None else ()):
            job = self.jobs.jobs[job_id]
            task = job.tasks[index]
            if task.state is TaskState.ASSIGNED:
                out.append(_assignment(job, index, task.attempt))
        return out

    def _owned(self, worker_id: str, job_id: str, index: int) -> None:
        """Refuse a report about a task whose current attempt is another worker's."""
        job = self.jobs.jobs.get(job_id)
        if job is None:
            raise errors.NotFound(f"job {job_id} does not exist")
        if not 0 <= index < len(job.tasks):
            raise errors.NotFound(f"job {job_id} has no task {index} (it has {len(job.tasks)})")
        task = job.tasks[index]
        if task.state in ACTIVE_TASK and task.worker != worker_id:
            raise errors.BadState(f"task {job_id}/{index} is on worker {task.worker}, not "
                                  f"{worker_id}; the report is stale and was rejected")

    def _progress(self, req: Request, now: float) -> Answer:
        worker_id, job_id, index, attempt, progress, counters = check_args(req)
        hit = self._hit(req)
        if hit is not None:
            return 0, hit[0], None
        self._owned(worker_id, job_id, index)
        self.liveness.seen(worker_id, now)
        txid, _ = self._log(req, TaskProgress(job_id, index, attempt, progress, counters,
                                              self.wall_ms()), ((job_id, index),))
        return 0, txid, None

    def _finish(self, req: Request, now: float) -> Answer:
        worker_id, job_id, index, attempt, ok, outcome = check_args(req)
        hit = self._hit(req)
        if hit is not None:
            return 0, *hit
        self._owned(worker_id, job_id, index)
        self.liveness.seen(worker_id, now)
        return 0, *self._log(req, TaskFinish(job_id, index, attempt, ok, outcome,
                                             self.wall_ms()), ((job_id, index),))

    # --- liveness --------------------------------------------------------------------------

    def grace(self, now: float) -> None:
        """Give every worker the state lists as active a whole timeout from `now` (at start:
        the workers recovered as active)."""
        self.liveness.grace([w.worker_id for w in self.jobs.workers.values()
                             if w.state is WorkerState.ACTIVE], now)

    def expire(self, now: float) -> list[str]:
        """Log WorkerLost for every worker silent longer than worker_timeout_s; return them.
        Called by the master's loop once per tick, never per request."""
        lost = []
        liveness = self.liveness
        for worker_id in liveness.expired(now):
            worker = self.jobs.workers.get(worker_id)
            if worker is None or worker.state is not WorkerState.ACTIVE:
                liveness.forget(worker_id)
                continue
            silent = liveness.silent_for(worker_id, now) or 0.0
            reason = (f"no heartbeat for {silent:.1f} s (worker_timeout_s "
                      f"{self.config.worker_timeout_s:g})")
            if not self.declare_lost(worker_id, reason):
                break                          # the journal refuses: next tick
            lost.append(worker_id)
        return lost

    def declare_lost(self, worker_id: str, reason: str) -> bool:
        """Log WorkerLost for an active worker (its tasks go back to pending); False when the
        journal refuses it."""
        worker = self.jobs.workers[worker_id]
        seen = self.sums.before(sorted(worker.running))
        try:
            txid, requeued = self.engine.submit(WorkerLost(worker_id, reason, self.wall_ms()),
                                                durability=_ASYNC)
        except errors.MwclusterError as exc:
            log.warning("epoch %d: worker %s could not be marked lost: %s", self.epoch,
                        worker_id, exc)
            return False
        self.sums.after(seen)
        self.liveness.forget(worker_id)
        self.status_endpoints.pop(worker_id, None)
        self.status_keys.pop(worker_id, None)
        self.workers_lost += 1
        log.warning("epoch %d txid %d: worker %s lost (%s); %d tasks released", self.epoch,
                    txid, worker_id, reason, len(requeued))
        return True

    # --- reads -----------------------------------------------------------------------------

    def _list(self, req: Request) -> Answer:
        include_finished, = check_args(req)
        get = self.sums.get
        return 0, 0, [job_summary(job, get(job)) for job in self.jobs.jobs.values()
                      if include_finished or job.state not in FINISHED_JOB]

    def _status(self, req: Request) -> Answer:
        job_id, = check_args(req)
        job = self.jobs.jobs.get(job_id)
        if job is None:
            raise errors.NotFound(f"job {job_id} does not exist")
        return 0, 0, job_status(job, self.wall_ms(), self.sums.get(job))

    def _tasks(self, req: Request) -> Answer:
        job_id, start, limit, state = check_args(req)
        if start < 0 or limit < 0 or (state is not None and state not in _TASK_STATES):
            raise ProtocolError(ErrorCode.BAD_REQUEST, "JOB_TASKS: start_index and limit must "
                                "be >= 0 and state nil or one of " + ", ".join(
                                    sorted(_TASK_STATES)), req.request_id)
        job = self.jobs.jobs.get(job_id)
        if job is None:
            raise errors.NotFound(f"job {job_id} does not exist")
        limit = min(limit, MAX_TASKS_LIST)
        out = []
        for task in job.tasks[start:]:
            if len(out) >= limit:
                break
            if state is None or task.state.value == state:
                out.append({"index": task.index, "state": task.state.value,
                            "attempt": task.attempt, "worker": task.worker,
                            "progress": task.progress, "counters": task.counters,
                            "result": task.result, "error": task.error})
        return 0, 0, out

    def status(self) -> dict:
        """Fields for the master's STATUS."""
        jobs = self.jobs
        return {"workers_active": sum(1 for w in jobs.workers.values()
                                      if w.state is WorkerState.ACTIVE),
                "jobs_active": sum(1 for j in jobs.jobs.values()
                                   if j.state not in FINISHED_JOB),
                "tasks_pending": sum(len(j.pending) for j in jobs.jobs.values()),
                "workers_lost_total": self.workers_lost,
                "assignments_total": self.assignments,
                "worker_nodes": self.worker_nodes()}

    def worker_nodes(self) -> list[dict]:
        """The active workers that named a status endpoint at register, by id (at most
        MAX_WORKER_NODES)."""
        workers = self.jobs.workers
        out = []
        for worker_id in sorted(self.status_endpoints):
            worker = workers.get(worker_id)
            if worker is None or worker.state is not WorkerState.ACTIVE:
                continue
            out.append({"worker_id": worker_id, "status_endpoint":
                        self.status_endpoints[worker_id], "slots": worker.slots,
                        "running": len(worker.running),
                        "status_key": self.status_keys.get(worker_id)})
            if len(out) >= MAX_WORKER_NODES:
                break
        return out


def job_summary(job: Job, sums: Sums | None = None) -> dict:
    """A JOB_LIST entry; `sums` are the job's kept sums (None: walk its tasks now)."""
    if sums is None:
        sums = Sums(job)
    return {"id": job.job_id, "job_id": job.job_id, "name": job.name, "handler": job.handler,
            "state": job.state.value, "priority": job.priority,
            "max_attempts": job.max_attempts, "tasks": len(job.tasks),
            "counts": {s.value: n for s, n in job.counts.items()},
            "progress": sums.progress(), "submitted_ms": job.created_ms,
            "finished_ms": job.finished_ms, "reason": job.reason,
            "options": dict(job.options)}


def job_status(job: Job, now_ms: int, sums: Sums | None = None) -> dict:
    """The JOB_STATUS map: the summary plus the start, rate, ETA, counter sums and the last
    failures, from the job's kept sums (core/job_stats.py): no walk over the tasks (None:
    walk them now)."""
    if sums is None:
        sums = Sums(job)
    out = job_summary(job, sums)
    started = sums.started_ms
    done = job.counts[TaskState.SUCCEEDED]
    rate = 0.0
    if started is not None:
        elapsed_s = ((job.finished_ms if job.finished_ms is not None else now_ms)
                     - started) / 1000
        if elapsed_s > 0:
            rate = done / elapsed_s
    unfinished = len(job.tasks) - sum(job.counts[s] for s in FINISHED_TASK)
    if job.state in FINISHED_JOB:
        eta = 0.0
    else:
        eta = unfinished / rate if rate > 0 else None
    out.update({"started_ms": started, "rate_per_s": rate, "eta_s": eta,
                "counters": dict(sums.counters),
                "failures": [list(f) for f in sums.failures[-MAX_FAILURES:]]})
    return out


def _assignment(job, index: int, attempt: int) -> tuple:
    """One task of a TASK_REQUEST answer: [job_id, index, attempt, handler, input, params],
    and the job's options when it has any (a worker reads its timeout and executor there)."""
    task = job.tasks[index]
    out = (job.job_id, index, attempt, job.handler, task.input, task.params)
    return out + (job.options,) if job.options else out
