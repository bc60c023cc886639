"""The kept per-job sums (core/job_stats.py) against a fresh walk over the tasks, after every
step of random job and worker traffic through the master's handlers."""

from __future__ import annotations

import itertools
import random

import pytest

from mwcluster.core.job_stats import Sums
from mwcluster.engine import Engine
from mwcluster.nodes.master.handlers import Drain, Handlers
from mwcluster.nodes.master.jobs import JobsConfig
from mwcluster.nodes.master.stats import MasterStats
from mwcluster.wire.protocol import Op, decode_reply, encode_request


def fresh(job) -> tuple:
    s = Sums(job)
    return s.progress_micro, s.counters, s.failures, s.started_ms


def kept(sums) -> tuple:
    return sums.progress_micro, sums.counters, sums.failures, sums.started_ms


@pytest.mark.parametrize("seed", range(6))
def test_kept_sums_equal_a_fresh_walk_after_every_step(tmp_path, seed):
    rng = random.Random(seed)
    clock = itertools.count(1000, 7)
    eng = Engine(tmp_path / "d")
    eng.open()
    h = Handlers(eng, 1, MasterStats(), wall_ms=lambda: next(clock),
                 jobs=JobsConfig(worker_timeout_s=5.0, max_assign_per_request=8))
    ids = itertools.count(1)
    drain = Drain(0.0)

    def ask(op, args):
        return decode_reply(h.handle(b"p", encode_request(b"c", next(ids), op, args, 0), drain))

    try:
        for j in range(3):
            ask(Op.JOB_SUBMIT, [f"j{j}", "n", "h", rng.randint(0, 1), 3,
                                [[i, {}] for i in range(rng.randint(5, 40))]])
        ask(Op.JOB_LIST, [True])                        # the sums are kept from here on
        workers = [f"w{i}" for i in range(4)]
        for w in workers:
            ask(Op.WORKER_REGISTER, [w, "", rng.randint(1, 5)])
        now = 0.0
        for step in range(400):
            w = rng.choice(workers)
            running = sorted(eng.state.jobs.workers[w].running)
            roll = rng.random()
            if roll < 0.3:
                ask(Op.TASK_REQUEST, [w, rng.randint(1, 5)])
            elif running and roll < 0.6:
                job_id, index = rng.choice(running)
                attempt = eng.state.jobs.jobs[job_id].tasks[index].attempt
                ask(Op.TASK_PROGRESS, [w, job_id, index, attempt, rng.random(),
                                       {"n": rng.randint(0, 9), "m": rng.randint(0, 3)}])
            elif running and roll < 0.85:
                job_id, index = rng.choice(running)
                attempt = eng.state.jobs.jobs[job_id].tasks[index].attempt
                ask(Op.TASK_FINISH, [w, job_id, index, attempt, rng.random() < 0.7, "x"])
            elif roll < 0.9:
                ask(Op.WORKER_LEAVE, [w])
                ask(Op.WORKER_REGISTER, [w, "", rng.randint(1, 5)])
            elif roll < 0.95:
                now += 10.0
                drain = Drain(now)
                for other in workers:
                    if other != w:
                        ask(Op.WORKER_HEARTBEAT, [other, []])
                h.jobs.expire(now + 0.5)                # every worker but `w` was heard
                ask(Op.WORKER_REGISTER, [w, "", rng.randint(1, 5)])
            elif roll < 0.97:
                ask(Op.JOB_CANCEL, [rng.choice(list(eng.state.jobs.jobs)), "enough"])
            else:
                job_id = rng.choice(list(eng.state.jobs.jobs))
                if ask(Op.JOB_DELETE, [job_id]).status == 0:
                    ask(Op.JOB_SUBMIT, [job_id, "again", "h", 0, 2, [[i, {}] for i in range(9)]])
            for job in eng.state.jobs.jobs.values():
                assert kept(h.jobs.sums.get(job)) == fresh(job), (seed, step)
        assert eng.state.validate() == []
        statuses = [ask(Op.JOB_STATUS, [job_id]).result for job_id in eng.state.jobs.jobs]
        assert all(0.0 <= s["progress"] <= 1.0 for s in statuses)
    finally:
        eng.close()


def test_a_finished_job_shows_exactly_one_and_floats_do_not_drift(tmp_path):
    eng = Engine(tmp_path / "d")
    eng.open()
    h = Handlers(eng, 1, MasterStats(), wall_ms=lambda: 5)
    ids = itertools.count(1)

    def ask(op, args):
        reply = decode_reply(h.handle(b"p", encode_request(b"c", next(ids), op, args, 0),
                                      Drain(0.0)))
        assert reply.status == 0, reply
        return reply.result

    try:
        ask(Op.JOB_SUBMIT, ["j", "n", "h", 0, 1, [[i, {}] for i in range(10)]])
        assert ask(Op.JOB_STATUS, ["j"])["progress"] == 0.0
        ask(Op.WORKER_REGISTER, ["w", "", 10])
        for a in ask(Op.TASK_REQUEST, ["w", 10]):
            for p in (0.1, 0.2, 0.7):
                ask(Op.TASK_PROGRESS, ["w", "j", a[1], 1, p, {"f": 0.1}])
            ask(Op.TASK_FINISH, ["w", "j", a[1], 1, True, None])
        status = ask(Op.JOB_STATUS, ["j"])
        assert status["progress"] == 1.0 and status["state"] == "succeeded"
        assert status["counters"]["f"] == pytest.approx(1.0)
    finally:
        eng.close()
