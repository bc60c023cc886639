"""Which pending tasks a worker gets: a pure decision over the jobs state.

`pick(jobs, worker_id, max_tasks)` returns the (job_id, index, attempt) a worker should run
next, without changing anything; the master logs one TaskAssign record per pick, so replay
applies the same decisions and never calls this again.

The rules, in order:
1. Highest job priority first.
2. Among jobs of equal priority, fairness: each pick goes to the job with the fewest tasks
   active (assigned or running, counting the picks already made in this call), ties to the
   older job (submit time, then id). One big job cannot starve a small one: they share the
   workers evenly while both have pending tasks.
3. Within a job, the lowest pending index first.
4. Never more than the worker's free slots (slots minus its active tasks), nor `max_tasks`.

Deterministic: the same state and arguments give the same picks. The candidates come from
`Jobs.runnable` (the jobs with pending tasks that are not finished, kept by the state's apply
path), never from a walk over every job: the finished jobs a master keeps cost nothing here.
The picks depend only on the jobs in it, not on its order (every heap entry is ordered by its
job id at the latest). Cost per call: one pass over the runnable jobs, then O(log jobs) per
pick.
"""

from __future__ import annotations

import heapq
from mwcluster.core.jobs import Jobs, TaskState, WorkerState

Pick = tuple[str, int, int]   # (job_id, index, attempt)
_ASSIGNED, _RUNNING = TaskState.ASSIGNED, TaskState.RUNNING   # enum lookups cost a call each


def free_slots(jobs: Jobs, worker_id: str) -> int:
    """Slots the worker has free; 0 when it is not an active registered worker."""
    worker = jobs.workers.get(worker_id)
    if worker is None or worker.state is not WorkerState.ACTIVE:
        return 0
    return max(0, worker.slots - len(worker.running))


def pick(jobs: Jobs, worker_id: str, max_tasks: int) -> list[Pick]:
    want = min(max_tasks, free_slots(jobs, worker_id))
    if want <= 0:
        return []
    runnable = jobs.runnable.values()
    if not runnable:
        return []
    picks: list[Pick] = []
    for priority in sorted({job.priority for job in runnable}, reverse=True):
        # heap entries: (active tasks, created_ms, job_id, job, pending indexes left)
        heap = []
        for job in runnable:
            if job.priority == priority:
                active = job.counts[_ASSIGNED] + job.counts[_RUNNING]
                heap.append((active, job.created_ms, job.job_id, job, iter(job.pending)))
        heapq.heapify(heap)
        while heap and len(picks) < want:
            active, created, job_id, job, pending = heap[0]
            index = next(pending, None)
            if index is None:
                heapq.heappop(heap)
                continue
            picks.append((job_id, index, job.tasks[index].attempt + 1))
            heapq.heapreplace(heap, (active + 1, created, job_id, job, pending))
        if len(picks) >= want:
            break
    return picks
