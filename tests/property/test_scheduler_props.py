"""The scheduler's index of runnable jobs changes no decision: on random histories of jobs,
workers and tasks (submits, assignments from the scheduler itself, progress, finishes that
succeed or fail and retry, cancels, deletes and resubmits of the same ids, lost and leaving
workers, and reloads of the state from its image), every `scheduler.pick` equals what the
full scan over every job, the scheduler's rule before the index, picks on the same state.

`checked_apply` runs `validate()` after every record, and validate checks the index against
the jobs, so a transition that forgets to keep it also fails here, picks or not.
"""

from __future__ import annotations

import heapq

from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import strategies as st

from mwcluster.core import records as r
from mwcluster.core import scheduler
from mwcluster.core.jobs import FINISHED_JOB, Jobs, TaskState
from mwcluster.core.state import State
from mwcluster.errors import ApplyError

JOB_IDS = ["a", "b", "c", "d", "e", "f"]
WORKERS = ["w0", "w1", "w2"]

SETTINGS = settings(max_examples=200, deadline=None, report_multiple_bugs=False,
                    suppress_health_check=[HealthCheck.too_slow])


def full_scan_pick(jobs: Jobs, worker_id: str, max_tasks: int) -> list:
    """The scheduler's decision computed by walking every job (its code before the index)."""
    want = min(max_tasks, scheduler.free_slots(jobs, worker_id))
    if want <= 0:
        return []
    runnable = [job for job in jobs.jobs.values()
                if job.pending and job.state not in FINISHED_JOB]
    picks: list = []
    for priority in sorted({job.priority for job in runnable}, reverse=True):
        heap = []
        for job in runnable:
            if job.priority == priority:
                active = job.counts[TaskState.ASSIGNED] + job.counts[TaskState.RUNNING]
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


job_ids = st.sampled_from(JOB_IDS)
worker_ids = st.sampled_from(WORKERS)
steps = st.one_of(
    st.tuples(st.just("submit"), job_ids, st.integers(1, 5), st.integers(0, 2),
              st.integers(1, 3)),
    st.tuples(st.just("submit"), job_ids, st.integers(1, 5), st.integers(0, 2),
              st.integers(1, 3)),
    st.tuples(st.just("register"), worker_ids, st.integers(1, 4)),
    st.tuples(st.just("request"), worker_ids, st.integers(0, 5)),
    st.tuples(st.just("request"), worker_ids, st.integers(1, 5)),
    st.tuples(st.just("request"), worker_ids, st.integers(1, 5)),
    st.tuples(st.just("request"), worker_ids, st.integers(1, 5)),
    st.tuples(st.just("progress"), st.integers(0, 63)),
    st.tuples(st.just("finish"), st.integers(0, 63), st.sampled_from([True, False])),
    st.tuples(st.just("finish"), st.integers(0, 63), st.sampled_from([True, False])),
    st.tuples(st.just("finish"), st.integers(0, 63), st.sampled_from([True, False])),
    st.tuples(st.just("cancel"), job_ids),
    st.tuples(st.just("delete"), job_ids),
    st.tuples(st.just("lost"), worker_ids),
    st.tuples(st.just("leave"), worker_ids),
    st.tuples(st.just("reload")),
)

# A list of short lists, flattened: plain st.lists averages a handful of steps, too few for a
# job to run dry, retry and finish (as in test_state_props.step_lists).
histories = st.lists(st.lists(steps, min_size=1, max_size=8), min_size=1, max_size=12).map(
    lambda chunks: [s for c in chunks for s in c])


def _running(state: State) -> list:
    return sorted((job_id, index) for w in state.jobs.workers.values()
                  for job_id, index in w.running)


def _record(step: tuple, state: State, now_ms: int):
    kind = step[0]
    if kind == "submit":
        _, job_id, tasks, priority, attempts = step
        return r.JobSubmit(job_id, job_id, "h", priority, attempts,
                           [[i, {}] for i in range(tasks)], now_ms)
    if kind == "register":
        return r.WorkerRegister(step[1], "", step[2], now_ms)
    if kind in ("progress", "finish"):
        running = _running(state)
        if not running:
            return None
        job_id, index = running[step[1] % len(running)]
        attempt = state.jobs.jobs[job_id].tasks[index].attempt
        if kind == "progress":
            return r.TaskProgress(job_id, index, attempt, 0.5, {}, now_ms)
        return r.TaskFinish(job_id, index, attempt, step[2], "x", now_ms)
    if kind == "cancel":
        return r.JobCancel(step[1], "", now_ms)
    if kind == "delete":
        return r.JobDelete(step[1])
    if kind == "lost":
        return r.WorkerLost(step[1], "silent", now_ms)
    return r.WorkerLeave(step[1], now_ms)


@SETTINGS
@given(history=histories)
def test_the_indexed_pick_equals_the_full_scan_on_random_histories(history, checked_apply):
    state = State()
    compared = retried = 0
    for worker_id in WORKERS:       # workers and jobs from the start: most steps then matter
        checked_apply(state, r.WorkerRegister(worker_id, "", 2, 0))
    for number, step in enumerate(history):
        now_ms = number // 3          # equal submit times happen: the job id breaks the tie
        if step[0] == "reload":
            state = State.from_image(state.image_chunks())
            assert state.validate() == []
            continue
        if step[0] == "request":
            _, worker_id, max_tasks = step
            picks = scheduler.pick(state.jobs, worker_id, max_tasks)
            assert picks == full_scan_pick(state.jobs, worker_id, max_tasks)
            compared += bool(picks)
            for job_id, index, attempt in picks:
                checked_apply(state, r.TaskAssign(job_id, index, worker_id, attempt, now_ms))
            continue
        rec = _record(step, state, now_ms)
        if rec is None:
            continue
        note(f"{number}: {rec!r}")
        pending_before = sum(len(job.pending) for job in state.jobs.jobs.values())
        try:
            checked_apply(state, rec)
        except ApplyError:
            continue      # refused (an existing id, a finished job...): changes nothing
        if type(rec) is not r.JobSubmit and pending_before < sum(
                len(job.pending) for job in state.jobs.jobs.values()):
            retried += 1      # a failed attempt or a lost worker put tasks back
    event(f"picks compared: {min(compared, 5)}{'+' if compared >= 5 else ''}")
    event(f"tasks put back: {'yes' if retried else 'no'}")
    # and the index holds exactly the jobs the scan would consider
    assert set(state.jobs.runnable) == {
        job.job_id for job in state.jobs.jobs.values()
        if job.pending and job.state not in FINISHED_JOB}
