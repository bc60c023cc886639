"""Jobs, tasks and workers: the processing metadata the master exists for.

A job is a named set of tasks run by one handler, with a priority and a max attempt count. A
task moves

    pending -> assigned (worker, attempt) -> running (progress 0..1, counters)
            -> succeeded | failed | cancelled

and goes back to pending when an attempt fails (or its worker is lost) while attempts remain.
A job fails as soon as one task has failed its last attempt; the job's other unfinished tasks
are then cancelled. Workers register with an id, address and slot count, and are marked lost
(or leave); their unfinished tasks go back to pending.

Tasks are held compactly (core/tasks.py): a job keeps each task as its msgpack encoding until
a record first changes it, and a Task object only from then on, so applying a JobSubmit
builds no object and no row per task.

Every transition is a method called by the state machine with fields of one record; each
either raises an ApplyError before changing anything or changes everything it must. Derived
indexes (per-job pending sets and counts, per-worker running sets, and `Jobs.runnable`, the
jobs that have pending tasks and are not finished, which is all the scheduler looks at) are
kept in step by every transition, never stored in an image, and rebuilt on load.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

import msgpack

from mwcluster.core.digest import MASK, entry_hash
from mwcluster.core.tasks import (ACTIVE_TASK, FINISHED_TASK, PendingSet, Task, TaskList,
                                  TaskState, submitted)
from mwcluster.errors import BadState, NodeExists, NotFound

__all__ = ["ACTIVE_TASK", "FINISHED_JOB", "FINISHED_TASK", "Job", "JobState", "Jobs", "Task",
           "TaskState", "Worker", "WorkerState"]


class JobState(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class WorkerState(StrEnum):
    ACTIVE = "active"
    LOST = "lost"
    LEFT = "left"


FINISHED_JOB = (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)

_pack = msgpack.Packer(use_bin_type=True).pack


class Job:
    __slots__ = ("job_id", "name", "handler", "priority", "max_attempts", "state",
                 "created_ms", "finished_ms", "reason", "tasks", "counts", "pending", "options")

    def __init__(self, job_id: str, name: str, handler: str, priority: int,
                 max_attempts: int, created_ms: int, options: dict | None = None) -> None:
        self.options = dict(options) if options else {}   # records.JOB_OPTIONS
        self.job_id = job_id
        self.name = name
        self.handler = handler
        self.priority = priority
        self.max_attempts = max_attempts
        self.state = JobState.PENDING
        self.created_ms = created_ms
        self.finished_ms: int | None = None
        self.reason: str | None = None
        self.tasks = TaskList(job_id)
        self.counts = dict.fromkeys(TaskState, 0)   # derived
        self.pending = PendingSet()                 # derived: indexes of pending tasks

    def row(self) -> list:
        row = [self.job_id, self.name, self.handler, self.priority, self.max_attempts,
               self.state._value_, self.created_ms, self.finished_ms, self.reason]
        if self.options:              # a job without options keeps the row (and hash) it had
            row.append(self.options)
        return row

    @classmethod
    def from_row(cls, row: list) -> "Job":
        job = cls(*row[0:5], row[6], row[9] if len(row) > 9 else None)
        job.state, job.finished_ms, job.reason = JobState(row[5]), row[7], row[8]
        return job

    def hash(self) -> int:
        return entry_hash(b"j", _pack(self.row()))

    def progress(self) -> float:
        if not self.tasks:
            return 0.0
        # untouched tasks are at 0.0, and adding 0.0 changes no float sum
        return sum(t.progress for t in self.tasks.touched()) / len(self.tasks)

    def summary(self) -> dict:
        return {"job_id": self.job_id, "name": self.name, "handler": self.handler,
                "priority": self.priority, "max_attempts": self.max_attempts,
                "state": self.state.value, "created_ms": self.created_ms,
                "finished_ms": self.finished_ms, "reason": self.reason,
                "tasks": len(self.tasks), "counts": {s.value: n for s, n in self.counts.items()},
                "progress": self.progress(), "options": dict(self.options)}


class Worker:
    __slots__ = ("worker_id", "address", "slots", "state", "registered_ms", "gone_ms",
                 "reason", "running")

    def __init__(self, worker_id: str, address: str, slots: int, registered_ms: int) -> None:
        self.worker_id = worker_id
        self.address = address
        self.slots = slots
        self.state = WorkerState.ACTIVE
        self.registered_ms = registered_ms
        self.gone_ms: int | None = None
        self.reason: str | None = None
        self.running: set[tuple[str, int]] = set()   # derived

    def row(self) -> list:
        return [self.worker_id, self.address, self.slots, self.state._value_,
                self.registered_ms, self.gone_ms, self.reason]

    @classmethod
    def from_row(cls, row: list) -> "Worker":
        worker = cls(row[0], row[1], row[2], row[4])
        worker.state, worker.gone_ms, worker.reason = WorkerState(row[3]), row[5], row[6]
        return worker

    def hash(self) -> int:
        return entry_hash(b"w", _pack(self.row()))

    def to_dict(self) -> dict:
        return {"worker_id": self.worker_id, "address": self.address, "slots": self.slots,
                "state": self.state.value, "registered_ms": self.registered_ms,
                "gone_ms": self.gone_ms, "reason": self.reason,
                "running": sorted([list(t) for t in self.running])}


class Jobs:
    """The jobs, tasks and workers tables, with the transitions records make."""

    __slots__ = ("jobs", "workers", "digest", "runnable")

    def __init__(self) -> None:
        self.jobs: dict[str, Job] = {}
        self.workers: dict[str, Worker] = {}
        self.digest = 0
        # derived: job_id -> job for the jobs with pending tasks that are not finished, so
        # that the scheduler never walks the finished jobs a master keeps (thousands)
        self.runnable: dict[str, Job] = {}

    # --- helpers that keep the digest and the derived indexes right ----------------------

    def _rehash(self, old: int, new: int) -> None:
        self.digest = (self.digest - old + new) & MASK

    def _job(self, job_id: str) -> Job:
        job = self.jobs.get(job_id)
        if job is None:
            raise NotFound(f"job {job_id} does not exist")
        return job

    def _task(self, job_id: str, index: int) -> tuple[Job, Task]:
        job = self._job(job_id)
        if not 0 <= index < len(job.tasks):
            raise NotFound(f"job {job_id} has no task {index} (it has {len(job.tasks)})")
        return job, job.tasks[index]

    def _runnable(self, job: Job) -> None:
        """Put the job in `runnable` or take it out, after its pending set or state changed."""
        if job.pending and job.state not in FINISHED_JOB:
            self.runnable[job.job_id] = job
        else:
            self.runnable.pop(job.job_id, None)

    def _move(self, job: Job, task: Task, state: TaskState) -> None:
        """Change a task's state, keeping counts, the pending set, the runnable jobs and
        worker sets in step."""
        old = task.state
        job.counts[old] -= 1
        job.counts[state] += 1
        if old is TaskState.PENDING:
            job.pending.discard(task.index)
            if not job.pending:
                self.runnable.pop(job.job_id, None)
        if state is TaskState.PENDING:
            job.pending.add(task.index)
            if job.state not in FINISHED_JOB:
                self.runnable[job.job_id] = job
        if old in ACTIVE_TASK and state not in ACTIVE_TASK and task.worker is not None:
            worker = self.workers.get(task.worker)
            if worker is not None:
                worker.running.discard((job.job_id, task.index))
        task.state = state

    def _set_job_state(self, job: Job, state: JobState, now_ms: int | None,
                       reason: str | None = None) -> None:
        old = job.hash()
        job.state = state
        if state in FINISHED_JOB:
            job.finished_ms = now_ms
            job.reason = reason
        self._runnable(job)
        self._rehash(old, job.hash())

    def _active_task(self, job_id: str, index: int, attempt: int) -> tuple[Job, Task]:
        job, task = self._task(job_id, index)
        if task.state not in ACTIVE_TASK or task.attempt != attempt:
            raise BadState(f"task {job_id}/{index} attempt {attempt} is not current (the task "
                           f"is {task.state.value} at attempt {task.attempt}); the report is "
                           "stale and was rejected")
        return job, task

    # --- jobs ----------------------------------------------------------------------------

    def submit(self, job_id: str, name: str, handler: str, priority: int, max_attempts: int,
               tasks: list, now_ms: int, options: dict | None = None) -> str:
        if job_id in self.jobs:
            raise NodeExists(f"job {job_id} exists")
        job = Job(job_id, name, handler, priority, max_attempts, now_ms, options)
        job.tasks, digest = submitted(job_id, tasks)     # raises before any change
        digest += job.hash()
        count = len(job.tasks)
        job.counts[TaskState.PENDING] = count
        job.pending = PendingSet(count, pending=True)
        self.jobs[job_id] = job
        self._runnable(job)
        self.digest = (self.digest + digest) & MASK
        return job_id

    def cancel(self, job_id: str, reason: str, now_ms: int) -> int:
        job = self._job(job_id)
        if job.state in FINISHED_JOB:
            raise BadState(f"job {job_id} is already {job.state.value}")
        cancelled = self._cancel_unfinished(job, now_ms)
        self._set_job_state(job, JobState.CANCELLED, now_ms, reason or "cancelled")
        return cancelled

    def _cancel_unfinished(self, job: Job, now_ms: int) -> int:
        tasks = job.tasks
        before, after, untouched = tasks.finish_untouched(TaskState.CANCELLED, now_ms)
        count = len(untouched)
        if count:       # as _move would for each: pending at attempt 0, on no worker
            job.counts[TaskState.PENDING] -= count
            job.counts[TaskState.CANCELLED] += count
            for index in untouched:
                job.pending.discard(index)
            if not job.pending:
                self.runnable.pop(job.job_id, None)
            self._rehash(before, after)
        for task in tasks.touched():
            if task.state not in FINISHED_TASK:
                old = task.hash()
                self._move(job, task, TaskState.CANCELLED)
                task.finished_ms = now_ms
                self._rehash(old, task.hash())
                count += 1
        return count

    def delete(self, job_id: str) -> int:
        job = self._job(job_id)
        if job.state not in FINISHED_JOB:
            raise BadState(f"job {job_id} is {job.state.value}; cancel it before deleting it")
        digest = job.hash() + sum(t.hash() for t in job.tasks)
        del self.jobs[job_id]
        self.runnable.pop(job_id, None)     # never there: a finished job is not runnable
        self.digest = (self.digest - digest) & MASK
        return len(job.tasks)

    # --- workers -------------------------------------------------------------------------

    def register(self, worker_id: str, address: str, slots: int, now_ms: int) -> bool:
        """Register or re-register a worker; returns True for a new worker."""
        worker = self.workers.get(worker_id)
        if worker is None:
            worker = Worker(worker_id, address, slots, now_ms)
            self.workers[worker_id] = worker
            self._rehash(0, worker.hash())
            return True
        if worker.state is WorkerState.ACTIVE and len(worker.running) > slots:
            raise BadState(f"worker {worker_id} runs {len(worker.running)} tasks and cannot "
                           f"re-register with {slots} slots")
        old = worker.hash()
        worker.address, worker.slots, worker.state = address, slots, WorkerState.ACTIVE
        worker.registered_ms, worker.gone_ms, worker.reason = now_ms, None, None
        self._rehash(old, worker.hash())
        return False

    def worker_gone(self, worker_id: str, state: WorkerState, reason: str, now_ms: int
                    ) -> list[tuple[str, int]]:
        """Mark a worker lost or left; its unfinished tasks are requeued or failed."""
        worker = self.workers.get(worker_id)
        if worker is None:
            raise NotFound(f"worker {worker_id} is not registered")
        if worker.state is not WorkerState.ACTIVE:
            raise BadState(f"worker {worker_id} is already {worker.state.value}")
        affected = sorted(worker.running)
        for job_id, index in affected:
            job = self.jobs[job_id]
            task = job.tasks[index]
            if task.state in ACTIVE_TASK and task.worker == worker_id:  # not cancelled meanwhile
                self._fail_attempt(job, task, f"worker {worker_id} {state.value}: {reason}",
                                   now_ms)
        old = worker.hash()
        worker.state, worker.gone_ms, worker.reason = state, now_ms, reason
        self._rehash(old, worker.hash())
        return affected

    # --- tasks ---------------------------------------------------------------------------

    def assign(self, job_id: str, index: int, worker_id: str, attempt: int, now_ms: int) -> None:
        job, task = self._task(job_id, index)
        if job.state in FINISHED_JOB:
            raise BadState(f"job {job_id} is {job.state.value}")
        if task.state is not TaskState.PENDING:
            raise BadState(f"task {job_id}/{index} is {task.state.value}, not pending")
        if attempt != task.attempt + 1:
            raise BadState(f"task {job_id}/{index} is at attempt {task.attempt}; the next "
                           f"assignment must be attempt {task.attempt + 1}, not {attempt}")
        if attempt > job.max_attempts:
            raise BadState(f"task {job_id}/{index} has used its {job.max_attempts} attempts")
        worker = self.workers.get(worker_id)
        if worker is None or worker.state is not WorkerState.ACTIVE:
            raise BadState(f"worker {worker_id} is not an active registered worker")
        if len(worker.running) >= worker.slots:
            raise BadState(f"worker {worker_id} has no free slot ({worker.slots} in use)")
        old = task.hash()
        self._move(job, task, TaskState.ASSIGNED)
        task.attempt, task.worker, task.assigned_ms = attempt, worker_id, now_ms
        task.progress, task.counters, task.started_ms, task.error = 0.0, {}, None, None
        worker.running.add((job_id, index))
        self._rehash(old, task.hash())
        if job.state is JobState.PENDING:
            self._set_job_state(job, JobState.RUNNING, now_ms)

    def progress(self, job_id: str, index: int, attempt: int, progress: float, counters: dict,
                 now_ms: int) -> None:
        job, task = self._active_task(job_id, index, attempt)
        old = task.hash()
        if task.state is TaskState.ASSIGNED:
            self._move(job, task, TaskState.RUNNING)
            task.started_ms = now_ms
        task.progress = float(progress)
        task.counters = dict(counters)
        self._rehash(old, task.hash())

    def finish(self, job_id: str, index: int, attempt: int, ok: bool, outcome: Any,
               now_ms: int) -> TaskState:
        job, task = self._active_task(job_id, index, attempt)
        if ok:
            old = task.hash()
            self._move(job, task, TaskState.SUCCEEDED)
            task.progress, task.result, task.finished_ms = 1.0, outcome, now_ms
            if task.started_ms is None:
                task.started_ms = now_ms
            self._rehash(old, task.hash())
            if job.counts[TaskState.SUCCEEDED] == len(job.tasks):
                self._set_job_state(job, JobState.SUCCEEDED, now_ms)
        else:
            self._fail_attempt(job, task, str(outcome), now_ms)
        return task.state

    def _fail_attempt(self, job: Job, task: Task, error: str, now_ms: int) -> None:
        old = task.hash()
        task.failures = [*task.failures, [task.attempt, task.worker, error, now_ms]]
        task.error = error
        if task.attempt < job.max_attempts:
            self._move(job, task, TaskState.PENDING)
            task.worker, task.progress, task.counters = None, 0.0, {}
            self._rehash(old, task.hash())
            return
        self._move(job, task, TaskState.FAILED)
        task.finished_ms = now_ms
        self._rehash(old, task.hash())
        self._cancel_unfinished(job, now_ms)
        self._set_job_state(job, JobState.FAILED, now_ms,
                            f"task {task.index} failed {task.attempt} times; last: {error}")

    # --- snapshots and invariants --------------------------------------------------------

    def rebuild_derived(self) -> None:
        for worker in self.workers.values():
            worker.running = set()
        for job in self.jobs.values():
            job.counts = dict.fromkeys(TaskState, 0)
            job.pending = PendingSet(len(job.tasks))
            for task in job.tasks:
                job.counts[task.state] += 1
                if task.state is TaskState.PENDING:
                    job.pending.add(task.index)
                elif task.state in ACTIVE_TASK:
                    self.workers[task.worker].running.add((job.job_id, task.index))
        self.runnable = {job_id: job for job_id, job in self.jobs.items()
                         if job.pending and job.state not in FINISHED_JOB}

    def recompute_digest(self) -> int:
        total = sum(w.hash() for w in self.workers.values())
        for job in self.jobs.values():
            total += job.hash() + sum(t.hash() for t in job.tasks)
        return total & MASK

    def validate(self) -> list[str]:
        problems = []
        owners: dict[tuple[str, int], str] = {}
        for job in self.jobs.values():
            counts = dict.fromkeys(TaskState, 0)
            for task in job.tasks:
                counts[task.state] += 1
                if (task.state is TaskState.PENDING) != (task.index in job.pending):
                    problems.append(f"task {job.job_id}/{task.index} pending index is wrong")
                if task.state in ACTIVE_TASK:
                    key = (job.job_id, task.index)
                    worker = self.workers.get(task.worker)
                    if worker is None or key not in worker.running:
                        problems.append(f"task {key} is {task.state} on {task.worker}, which "
                                        "does not list it")
                    if key in owners:
                        problems.append(f"task {key} is assigned twice")
                    owners[key] = task.worker
                if not 0 <= task.attempt <= job.max_attempts:
                    problems.append(f"task {job.job_id}/{task.index} attempt {task.attempt} "
                                    f"outside 0..{job.max_attempts}")
            if counts != job.counts:
                problems.append(f"job {job.job_id} counts are wrong")
            if len(job.pending) != counts[TaskState.PENDING]:
                problems.append(f"job {job.job_id} pending set holds {len(job.pending)}, not "
                                f"{counts[TaskState.PENDING]}")
            problems.extend(job.tasks.validate())
            done = counts[TaskState.SUCCEEDED] == len(job.tasks)
            if done != (job.state is JobState.SUCCEEDED):
                problems.append(f"job {job.job_id} is {job.state} with {counts}")
            if job.state in FINISHED_JOB and any(
                    counts[s] for s in (TaskState.PENDING, *ACTIVE_TASK)):
                problems.append(f"job {job.job_id} is {job.state} with unfinished tasks")
            runnable = counts[TaskState.PENDING] > 0 and job.state not in FINISHED_JOB
            if runnable != (self.runnable.get(job.job_id) is job):
                problems.append(f"job {job.job_id} ({job.state}, {counts[TaskState.PENDING]} "
                                f"pending) is {'missing from' if runnable else 'wrongly in'} "
                                "the runnable jobs")
        for job_id in self.runnable.keys() - self.jobs.keys():
            problems.append(f"runnable job {job_id} does not exist")
        for worker in self.workers.values():
            for key in worker.running:
                if owners.get(key) != worker.worker_id:
                    problems.append(f"worker {worker.worker_id} lists {key}, not its own")
            if worker.state is not WorkerState.ACTIVE and worker.running:
                problems.append(f"worker {worker.worker_id} is {worker.state} but runs tasks")
            if len(worker.running) > worker.slots:
                problems.append(f"worker {worker.worker_id} runs more tasks than slots")
        if self.recompute_digest() != self.digest:
            problems.append("jobs digest does not match the jobs, tasks and workers")
        return problems
