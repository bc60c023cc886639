"""An in-memory twin of the master's job and worker calls, for tests that need no network.

`FakeMaster` keeps a real `State` (the same apply path as the master) and answers the Client
methods of docs/protocol.md's job and worker operations; `FakeMaster.client()` returns an
object with those methods, so a worker node can run against it in a thread:

    fake = FakeMaster()
    node = WorkerNode(config, registry, client_factory=fake.client)
    job_id = fake.submit_job("count", "count", [1, 2, 3])

Faults are named seams: `restart()` (a new epoch: the state is kept as if it had been
recovered, the idempotency of in-flight requests is not modelled), `unreachable` (every call
raises RequestTimeout), `lose_worker(id)` (as the master's liveness check would).
Thread-safe: every call holds one lock.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from mwcluster.client.calls import Assignment
from mwcluster.core import records as r
from mwcluster.core.jobs import ACTIVE_TASK, FINISHED_JOB, TaskState, WorkerState
from mwcluster.core.state import State
from mwcluster.nodes.master.jobs import job_status, job_summary   # the master's own maps
from mwcluster.errors import BadState, RequestTimeout

__all__ = ["Assignment", "FakeClient", "FakeMaster", "RunningWorker"]


_TASK_FIELDS = ("index", "state", "attempt", "worker", "progress", "counters", "result", "error")


class FakeMaster:
    def __init__(self, *, heartbeat_ms: int = 1000, worker_timeout_ms: int = 10_000) -> None:
        self.state = State()
        self.lock = threading.RLock()
        self.epoch = 1
        self.heartbeat_ms = heartbeat_ms
        self.worker_timeout_ms = worker_timeout_ms
        self.unreachable = False
        self.refused: list[str] = []          # calls made while unreachable
        self.calls: list[tuple] = []          # (op name, args) of every call, in order
        self.status_endpoints: dict[str, str] = {}   # named at register (worker id ->)
        self._next_job = 1

    def _apply(self, rec: r.Record) -> Any:
        result = self.state.apply(self.state.txid + 1, rec)
        problems = self.state.validate()
        assert not problems, problems
        return result

    def _enter(self, name: str, *args) -> None:
        if self.unreachable:
            self.refused.append(name)
            raise RequestTimeout(f"{name}: the fake master is unreachable")
        self.calls.append((name, args))

    @staticmethod
    def _now() -> int:
        return int(time.time() * 1000)

    def client(self) -> FakeClient:
        return FakeClient(self)

    # --- seams ---------------------------------------------------------------------------

    def restart(self) -> None:
        with self.lock:
            self.epoch += 1

    def lose_worker(self, worker_id: str, reason: str = "missed heartbeats") -> None:
        with self.lock:
            self._apply(r.WorkerLost(worker_id, reason, self._now()))

    # --- jobs ----------------------------------------------------------------------------

    def submit_job(self, name: str, handler: str, tasks: list, *, params: dict | None = None,
                   max_attempts: int = 3, priority: int = 0, job_id: str | None = None,
                   durability: Any = None) -> str:
        with self.lock:
            self._enter("submit_job", name, handler)
            if job_id is None:
                job_id = f"job-{self._next_job}"
                self._next_job += 1
            rows = [[value, dict(params or {})] for value in tasks]
            return self._apply(r.JobSubmit(job_id, name, handler, priority, max_attempts, rows,
                                           self._now()))

    def cancel_job(self, job_id: str, reason: str = "") -> int:
        with self.lock:
            self._enter("cancel_job", job_id)
            return self._apply(r.JobCancel(job_id, reason, self._now()))

    def delete_job(self, job_id: str) -> int:
        with self.lock:
            self._enter("delete_job", job_id)
            return self._apply(r.JobDelete(job_id))

    def jobs(self, include_finished: bool = True) -> list[dict]:
        with self.lock:
            self._enter("jobs")
            return [job_summary(job) for job in self.state.jobs.jobs.values()
                    if include_finished or job.state not in FINISHED_JOB]

    def job_status(self, job_id: str) -> dict:
        """The JOB_STATUS map of docs/protocol.md (the same keys as the master's)."""
        with self.lock:
            self._enter("job_status", job_id)
            return job_status(self.state.jobs._job(job_id), self._now())

    def job_tasks(self, job_id: str, start: int = 0, limit: int = 1000,
                  state: str | None = None) -> list[dict]:
        with self.lock:
            self._enter("job_tasks", job_id)
            job = self.state.jobs._job(job_id)
            rows = [{k: v for k, v in t.to_dict().items() if k in _TASK_FIELDS}
                    for t in job.tasks[start:]
                    if state is None or t.state.value == state]
            return rows[:limit]

    # --- workers -------------------------------------------------------------------------

    def _held(self, worker_id: str) -> list[list]:
        worker = self.state.jobs.workers.get(worker_id)
        if worker is None or worker.state is not WorkerState.ACTIVE:
            return []
        return sorted([job, index, self.state.jobs.jobs[job].tasks[index].attempt]
                      for job, index in worker.running)

    def register_worker(self, worker_id: str, slots: int, address: str = "", *,
                        status_endpoint: str | None = None) -> dict:
        with self.lock:
            self._enter("register_worker", worker_id, slots)
            if status_endpoint is not None:       # as the master keeps it: soft state
                self.status_endpoints[worker_id] = status_endpoint
            self._apply(r.WorkerRegister(worker_id, address, slots, self._now()))
            return {"heartbeat_ms": self.heartbeat_ms,
                    "worker_timeout_ms": self.worker_timeout_ms, "epoch": self.epoch,
                    "tasks": self._held(worker_id)}

    def worker_heartbeat(self, worker_id: str, running: list) -> dict:
        with self.lock:
            self._enter("worker_heartbeat", worker_id, [list(t) for t in running])
            worker = self.state.jobs.workers.get(worker_id)
            if worker is None or worker.state is not WorkerState.ACTIVE:
                return {"known": False, "cancel": [], "epoch": self.epoch}
            current = {(job, index, attempt) for job, index, attempt in self._held(worker_id)}
            cancel = [list(t) for t in running if tuple(t) not in current]
            return {"known": True, "cancel": cancel, "epoch": self.epoch}

    def request_tasks(self, worker_id: str, max_tasks: int, durability: Any = "sync"
                      ) -> list[Assignment]:
        with self.lock:
            self._enter("request_tasks", worker_id, max_tasks)
            jobs = self.state.jobs
            worker = jobs.workers.get(worker_id)
            if worker is None or worker.state is not WorkerState.ACTIVE:
                raise BadState(f"worker {worker_id} is not an active registered worker")
            out: list[Assignment] = []
            free = min(max_tasks, worker.slots - len(worker.running))
            order = sorted((job for job in jobs.jobs.values()
                            if job.state not in FINISHED_JOB and job.pending),
                           key=lambda job: (-job.priority, job.created_ms, job.job_id))
            for job in order:
                for index in list(job.pending):
                    if len(out) >= free:
                        return out
                    task = job.tasks[index]
                    self._apply(r.TaskAssign(job.job_id, index, worker_id, task.attempt + 1,
                                             self._now()))
                    out.append(Assignment(job.job_id, index, task.attempt, job.handler,
                                          task.input, task.params))
            return out

    def report_progress(self, worker_id: str, job_id: str, index: int, attempt: int,
                        progress: float, counters: dict | None = None,
                        durability: Any = None) -> None:
        with self.lock:
            self._enter("report_progress", worker_id, job_id, index, attempt, progress)
            self._check_owner(worker_id, job_id, index)
            self._apply(r.TaskProgress(job_id, index, attempt, progress, dict(counters or {}),
                                       self._now()))

    def finish_task(self, worker_id: str, job_id: str, index: int, attempt: int, ok: bool,
                    outcome: Any, durability: Any = "sync") -> str:
        with self.lock:
            self._enter("finish_task", worker_id, job_id, index, attempt, ok)
            self._check_owner(worker_id, job_id, index)
            return str(self._apply(r.TaskFinish(job_id, index, attempt, ok, outcome,
                                                self._now())))

    def leave_worker(self, worker_id: str) -> None:
        with self.lock:
            self._enter("leave_worker", worker_id)
            self._apply(r.WorkerLeave(worker_id, self._now()))

    def _check_owner(self, worker_id: str, job_id: str, index: int) -> None:
        job, task = self.state.jobs._task(job_id, index)
        if task.state in ACTIVE_TASK and task.worker != worker_id:
            raise BadState(f"task {job_id}/{index} is not on worker {worker_id}; the report "
                           "is stale")

    # --- helpers for tests -----------------------------------------------------------------

    def task_states(self, job_id: str) -> list[TaskState]:
        with self.lock:
            return [t.state for t in self.state.jobs.jobs[job_id].tasks]

    def job_state(self, job_id: str) -> str:
        with self.lock:
            return self.state.jobs.jobs[job_id].state.value

    def count(self, name: str) -> int:
        with self.lock:
            return sum(1 for call in self.calls if call[0] == name)


class FakeClient:
    """The Client methods a worker and the job commands use, bound to one FakeMaster."""

    def __init__(self, master: FakeMaster) -> None:
        self._master = master
        self.epoch: int | None = None

    def __getattr__(self, name: str):
        method = getattr(self._master, name)

        def call(*args, **kwargs):
            result = method(*args, **kwargs)
            self.epoch = self._master.epoch
            return result

        return call

    def close(self) -> None:
        pass

    def __enter__(self) -> FakeClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class RunningWorker:
    """A WorkerNode (nodes/worker/node.py) run on a thread: a context manager that always stops
    and joins it; `code` is what its run() returned."""

    def __init__(self, node: Any) -> None:
        self.node = node
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.code = None

    def _run(self) -> None:
        self.code = self.node.run()

    def __enter__(self) -> RunningWorker:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.node.request_stop()
        self.thread.join(timeout=30)
        assert not self.thread.is_alive(), "the worker did not stop"
