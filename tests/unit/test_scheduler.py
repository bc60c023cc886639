"""The scheduler as a pure function of the jobs state: priority, fairness across jobs, slots,
the lowest index first, determinism, and replay of its picks."""

from __future__ import annotations

import random

from mwcluster.core import scheduler
from mwcluster.core.records import JobCancel, JobSubmit, TaskAssign, TaskFinish, WorkerRegister
from mwcluster.core.state import State


class Cluster:
    """A State driven the way the master drives it: pick, then log one TaskAssign per pick."""

    def __init__(self) -> None:
        self.state = State()
        self.log: list = []

    def apply(self, rec):
        self.log.append(rec)
        return self.state.apply(self.state.txid + 1, rec)

    def job(self, job_id, tasks, priority=0, now_ms=0, max_attempts=2):
        self.apply(JobSubmit(job_id, job_id, "h", priority, max_attempts,
                             [[i, {}] for i in range(tasks)], now_ms))

    def worker(self, worker_id, slots):
        self.apply(WorkerRegister(worker_id, "", slots, 0))

    def request(self, worker_id, max_tasks=1000):
        picks = scheduler.pick(self.state.jobs, worker_id, max_tasks)
        for job_id, index, attempt in picks:
            self.apply(TaskAssign(job_id, index, worker_id, attempt, 1))
        assert self.state.validate() == []
        return picks


def test_the_lowest_pending_index_first_and_the_attempt_after_the_last():
    c = Cluster()
    c.job("a", 5)
    c.worker("w", 3)
    assert c.request("w") == [("a", 0, 1), ("a", 1, 1), ("a", 2, 1)]
    c.apply(TaskFinish("a", 1, 1, False, "boom", 2))        # back to pending, attempt 1 used
    assert c.request("w") == [("a", 1, 2)]


def test_slots_and_max_tasks_are_respected():
    c = Cluster()
    c.job("a", 100)
    c.worker("w", 4)
    assert len(c.request("w", max_tasks=3)) == 3
    assert len(c.request("w")) == 1                 # one slot left
    assert c.request("w") == []                     # full
    c.apply(TaskFinish("a", 0, 1, True, None, 2))
    assert c.request("w") == [("a", 4, 1)]
    assert c.request("w", max_tasks=0) == []
    assert scheduler.pick(c.state.jobs, "nobody", 5) == []
    assert scheduler.free_slots(c.state.jobs, "w") == 0


def test_higher_priority_first_then_the_lower_ones():
    c = Cluster()
    c.job("low", 3, priority=0, now_ms=1)
    c.job("high", 2, priority=5, now_ms=2)
    c.worker("w", 10)
    picks = c.request("w")
    assert [p[0] for p in picks] == ["high", "high", "low", "low", "low"]


def test_equal_priority_jobs_share_the_workers_evenly():
    c = Cluster()
    c.job("big", 1000, now_ms=1)
    c.job("small", 10, now_ms=2)
    for w in range(4):
        c.worker(f"w{w}", 4)
    picks = [p for w in range(4) for p in c.request(f"w{w}")]
    per_job = {j: sum(1 for p in picks if p[0] == j) for j in ("big", "small")}
    assert per_job == {"big": 8, "small": 8}
    # the job with fewer active tasks gets the next slot: finish two of big's, ask again
    c.apply(TaskFinish("big", 0, 1, True, None, 3))
    c.apply(TaskFinish("big", 1, 1, True, None, 3))
    assert [p[0] for p in c.request("w0")] == ["big", "big"]


def test_a_new_job_is_not_starved_by_an_older_one_that_holds_every_worker():
    c = Cluster()
    c.job("old", 50, now_ms=1)
    c.worker("w", 5)
    c.request("w")
    c.job("new", 5, now_ms=2)
    c.apply(TaskFinish("old", 0, 1, True, None, 3))
    assert c.request("w") == [("new", 0, 1)]


def test_cancelled_and_finished_jobs_are_skipped():
    c = Cluster()
    c.job("a", 3, now_ms=1)
    c.job("b", 3, now_ms=2)
    c.apply(JobCancel("a", "no", 3))
    c.worker("w", 10)
    assert [p[0] for p in c.request("w")] == ["b", "b", "b"]


def test_picks_are_deterministic_and_replay_gives_the_same_state():
    def run(seed):
        rng = random.Random(seed)
        c = Cluster()
        for j in range(5):
            c.job(f"j{j}", rng.randint(1, 30), priority=rng.randint(0, 2), now_ms=j)
        for w in range(6):
            c.worker(f"w{w}", rng.randint(1, 4))
        out = []
        for _ in range(200):
            worker = f"w{rng.randrange(6)}"
            out.append(c.request(worker, rng.randint(0, 5)))
            running = sorted(c.state.jobs.workers[worker].running)
            if running and rng.random() < 0.7:
                job_id, index = running[0]
                attempt = c.state.jobs.jobs[job_id].tasks[index].attempt
                c.apply(TaskFinish(job_id, index, attempt, rng.random() < 0.8, "x", 9))
        return out, c

    first, c1 = run(7)
    second, c2 = run(7)
    assert first == second and c1.state.digest == c2.state.digest
    replayed = State()
    for rec in c1.log:
        replayed.apply(replayed.txid + 1, rec)
    assert replayed.digest == c1.state.digest


def test_only_runnable_jobs_are_indexed_and_validate_checks_the_index():
    c = Cluster()
    c.job("done", 1, now_ms=1)
    c.job("live", 2, now_ms=2)
    c.job("cancelled", 1, now_ms=3)
    c.apply(JobCancel("cancelled", "no", 4))
    c.worker("w", 1)
    assert c.request("w") == [("done", 0, 1)]
    c.apply(TaskFinish("done", 0, 1, True, None, 5))
    assert set(c.state.jobs.runnable) == {"live"}
    c.state.jobs.runnable["done"] = c.state.jobs.jobs["done"]     # a stale entry
    assert any("wrongly in the runnable jobs" in p for p in c.state.validate())
    del c.state.jobs.runnable["done"], c.state.jobs.runnable["live"]   # a missing one
    assert any("missing from the runnable jobs" in p for p in c.state.validate())
    # a snapshot never stores the index: loading rebuilds it
    loaded = State.from_image(c.state.image_chunks())
    assert set(loaded.jobs.runnable) == {"live"} and loaded.validate() == []
