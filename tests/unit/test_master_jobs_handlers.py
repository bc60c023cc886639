"""The master's job and worker operations driven in memory: Handlers on an Engine in tmp_path,
encoded frames in, decoded replies out (no sockets, a fake clock)."""

from __future__ import annotations

import itertools

import pytest

from mwcluster.core.jobs import TaskState, WorkerState
from mwcluster.engine import Engine
from mwcluster.nodes.master.handlers import Drain, Handlers
from mwcluster.nodes.master.jobs import JobsConfig
from mwcluster.nodes.master.stats import MasterStats
from mwcluster.wire.protocol import ErrorCode, Op, decode_reply, encode_request

EPOCH = 4
CID = b"worker-client"


class Clock:
    def __init__(self) -> None:
        self.ms = 1_000_000

    def __call__(self) -> int:
        return self.ms



@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def h(engine, clock):
    return Handlers(engine, EPOCH, MasterStats(), wall_ms=clock,
                    jobs=JobsConfig(worker_timeout_s=5.0, worker_heartbeat_ms=500,
                                    max_assign_per_request=8))


_ids = itertools.count(1)


def ask(h: Handlers, op, args, durability=0, rid=None, cid=CID, now=0.0):
    """One request, in a drain of the master's loop that began at `now`."""
    out = h.handle(b"peer", encode_request(cid, next(_ids) if rid is None else rid, op,
                                           list(args), durability), Drain(now))
    return None if out is None else decode_reply(out)


def ok(h, op, args, **kw):
    reply = ask(h, op, args, **kw)
    assert reply.status == 0, reply
    return reply


def submit(h, tasks=4, job_id=None, max_attempts=2, priority=0):
    return ok(h, Op.JOB_SUBMIT, [job_id, "word count", "wc:count", priority, max_attempts,
                                 [[f"shard-{i}", {"i": i}] for i in range(tasks)]]).result


def test_a_job_runs_to_success_through_the_worker_ops(h, engine, clock):
    job_id = submit(h, tasks=3)
    assert job_id == "job-1"
    reg = ok(h, Op.WORKER_REGISTER, ["w1", "tcp://w1", 2]).result
    assert reg == {"heartbeat_ms": 500, "worker_timeout_ms": 5000, "epoch": EPOCH, "tasks": []}
    got = ok(h, Op.TASK_REQUEST, ["w1", 10])
    assert got.result == [[job_id, 0, 1, "wc:count", "shard-0", {"i": 0}],
                          [job_id, 1, 1, "wc:count", "shard-1", {"i": 1}]]
    assert got.txid == engine.state.txid        # the last TaskAssign's txid
    clock.ms += 100
    assert ok(h, Op.TASK_PROGRESS, ["w1", job_id, 0, 1, 0.5, {"words": 10}]).result is None
    assert ok(h, Op.TASK_FINISH, ["w1", job_id, 0, 1, True, {"words": 20}]).result == "succeeded"
    assert ok(h, Op.TASK_FINISH, ["w1", job_id, 1, 1, True, 7]).result == "succeeded"
    assert ok(h, Op.TASK_REQUEST, ["w1", 10]).result == [[job_id, 2, 1, "wc:count", "shard-2",
                                                          {"i": 2}]]
    clock.ms += 900
    ok(h, Op.TASK_FINISH, ["w1", job_id, 2, 1, True, None])
    status = ok(h, Op.JOB_STATUS, [job_id]).result
    assert status["state"] == "succeeded" and status["counts"]["succeeded"] == 3
    assert status["progress"] == 1.0 and status["eta_s"] == 0.0
    assert status["counters"] == {"words": 10}
    assert status["submitted_ms"] == 1_000_000 and status["finished_ms"] == 1_001_000
    assert status["rate_per_s"] == pytest.approx(3.0)
    tasks = ok(h, Op.JOB_TASKS, [job_id, 0, 10, None]).result
    assert [t["result"] for t in tasks] == [{"words": 20}, 7, None]
    assert ok(h, Op.JOB_LIST, [False]).result == []
    assert [j["id"] for j in ok(h, Op.JOB_LIST, [True]).result] == [job_id]
    assert engine.state.validate() == []


def test_a_stale_attempt_or_another_workers_report_is_bad_state(h, engine):
    job_id = submit(h, tasks=1, max_attempts=3)
    ok(h, Op.WORKER_REGISTER, ["w1", "", 1])
    ok(h, Op.WORKER_REGISTER, ["w2", "", 1])
    ok(h, Op.TASK_REQUEST, ["w1", 1])
    r = ask(h, Op.TASK_PROGRESS, ["w2", job_id, 0, 1, 0.1, {}])
    assert r.status == ErrorCode.BAD_STATE and "stale" in r.result[1]
    ok(h, Op.WORKER_LEAVE, ["w1"])                       # requeued: attempt 1 is over
    assert ok(h, Op.TASK_REQUEST, ["w2", 1]).result[0][:3] == [job_id, 0, 2]
    txid = engine.state.txid
    for op, args in ((Op.TASK_PROGRESS, ["w1", job_id, 0, 1, 0.9, {}]),
                     (Op.TASK_FINISH, ["w1", job_id, 0, 1, True, None]),
                     (Op.TASK_FINISH, ["w2", job_id, 0, 1, True, None])):
        r = ask(h, op, args)
        assert r.status == ErrorCode.BAD_STATE, r
    assert engine.state.txid == txid                     # nothing was logged
    assert ask(h, Op.TASK_FINISH, ["w2", "nope", 0, 1, True, None]).status == \
        ErrorCode.NOT_FOUND
    assert ask(h, Op.TASK_FINISH, ["w2", job_id, 5, 1, True, None]).status == \
        ErrorCode.NOT_FOUND
    assert ok(h, Op.TASK_FINISH, ["w2", job_id, 0, 2, False, "disk"]).result == "pending"
    failures = ok(h, Op.JOB_STATUS, [job_id]).result["failures"]
    assert [f[:3] for f in failures] == [[0, 1, "w1"], [0, 2, "w2"]] and failures[1][3] == "disk"


def test_heartbeat_is_soft_state_and_names_the_tasks_to_drop(h, engine):
    job_id = submit(h, tasks=2)
    r = ok(h, Op.WORKER_HEARTBEAT, ["w1", []])
    assert r.result == {"known": False, "cancel": [], "epoch": EPOCH} and r.txid == 0
    ok(h, Op.WORKER_REGISTER, ["w1", "", 2])
    ok(h, Op.TASK_REQUEST, ["w1", 2])
    ok(h, Op.JOB_CANCEL, [job_id, "enough"])
    txid = engine.state.txid
    r = ok(h, Op.WORKER_HEARTBEAT, ["w1", [[job_id, 0, 1], [job_id, 1, 1], ["gone", 0, 1]]])
    assert r.result["known"] is True
    assert r.result["cancel"] == [[job_id, 0, 1], [job_id, 1, 1], ["gone", 0, 1]]
    assert engine.state.txid == txid
    bad = ask(h, Op.WORKER_HEARTBEAT, ["w1", [[job_id, "0", 1]]])
    assert bad.status == ErrorCode.BAD_REQUEST


def test_register_again_lists_the_tasks_the_master_has_on_the_worker(h):
    job_id = submit(h, tasks=3)
    ok(h, Op.WORKER_REGISTER, ["w1", "", 2])
    ok(h, Op.TASK_REQUEST, ["w1", 2])
    again = ok(h, Op.WORKER_REGISTER, ["w1", "", 4]).result
    assert again["tasks"] == [[job_id, 0, 1], [job_id, 1, 1]]


def test_retries_are_answered_once_including_task_request_and_batches(h, engine):
    job_id = submit(h, tasks=10)
    ok(h, Op.WORKER_REGISTER, ["w1", "", 4])
    first = ok(h, Op.TASK_REQUEST, ["w1", 3], rid=5000)
    txid = engine.state.txid
    again = ok(h, Op.TASK_REQUEST, ["w1", 3], rid=5000)
    assert (again.result, again.txid) == (first.result, first.txid)
    assert engine.state.txid == txid and len(engine.state.jobs.workers["w1"].running) == 3
    fin = ok(h, Op.TASK_FINISH, ["w1", job_id, 0, 1, True, 1], rid=5001)
    assert ok(h, Op.TASK_FINISH, ["w1", job_id, 0, 1, True, 1], rid=5001).result == \
        fin.result == "succeeded"
    assert ok(h, Op.JOB_SUBMIT, [None, "n", "h", 0, 1, [[1, {}]]], rid=5002).result == \
        ok(h, Op.JOB_SUBMIT, [None, "n", "h", 0, 1, [[1, {}]]], rid=5002).result
    batch = [[6000, Op.TASK_REQUEST, 0, ["w1", 1]],
             [6001, Op.TASK_PROGRESS, 0, ["w1", job_id, 1, 1, 0.25, {"n": 1}]],
             [6002, Op.WORKER_HEARTBEAT, 0, ["w1", []]],
             [6003, Op.JOB_STATUS, 0, [job_id]]]
    r1 = ok(h, Op.BATCH, batch)
    txid = engine.state.txid
    r2 = ok(h, Op.BATCH, batch)
    assert [s[:3] for s in r1.result] == [s[:3] for s in r2.result]
    assert r1.result[0][3] == r2.result[0][3] and len(r1.result[0][3]) == 1
    assert engine.state.txid == txid and h.stats.retries >= 4


def test_a_late_copy_of_a_task_request_answered_empty_assigns_nothing(h, engine):
    """Found by the cluster simulation: a TASK_REQUEST answered with nothing to assign logs
    no record, so a late copy of it (a resend on a new connection, read after the answer)
    was taken for a new request, and the tasks it assigned went to an answer the worker no
    longer waited for: they stayed assigned to a live worker forever."""
    ok(h, Op.WORKER_REGISTER, ["w1", "", 2])
    assert ok(h, Op.TASK_REQUEST, ["w1", 2], rid=7000).result == []
    submit(h, tasks=3)                                # tasks are pending now
    txid = engine.state.txid
    late = ok(h, Op.TASK_REQUEST, ["w1", 2], rid=7000)
    assert (late.result, late.txid) == ([], 0)
    assert engine.state.txid == txid and not engine.state.jobs.workers["w1"].running
    assert len(ok(h, Op.TASK_REQUEST, ["w1", 2], rid=7001).result) == 2   # a new request


def test_empty_answers_do_not_push_a_remembered_assignment_out(h, monkeypatch):
    from mwcluster.nodes.master import jobs

    monkeypatch.setattr(jobs, "_REMEMBER", 4)
    ok(h, Op.WORKER_REGISTER, ["w1", "", 1])
    ok(h, Op.WORKER_REGISTER, ["w2", "", 1])
    submit(h, tasks=1)
    first = ok(h, Op.TASK_REQUEST, ["w1", 1], rid=8000).result
    job_id, index, attempt = first[0][:3]
    # started: an answer rebuilt from the state (tasks assigned, not started) would be empty
    ok(h, Op.TASK_PROGRESS, ["w1", job_id, index, attempt, 0.5, {}])
    for rid in range(8001, 8020):                       # an idle worker polling
        assert ok(h, Op.TASK_REQUEST, ["w2", 1], rid=rid).result == []
    assert ok(h, Op.TASK_REQUEST, ["w1", 1], rid=8000).result == first


def test_task_request_respects_the_per_request_cap_and_worker_state(h):
    submit(h, tasks=50)
    assert ask(h, Op.TASK_REQUEST, ["w9", 1]).status == ErrorCode.BAD_STATE
    ok(h, Op.WORKER_REGISTER, ["w1", "", 20])
    assert len(ok(h, Op.TASK_REQUEST, ["w1", 100]).result) == 8      # max_assign_per_request
    assert ok(h, Op.TASK_REQUEST, ["w1", 0]).result == []
    assert ask(h, Op.TASK_REQUEST, ["w1", -1]).status == ErrorCode.BAD_REQUEST
    ok(h, Op.WORKER_LEAVE, ["w1"])
    assert ask(h, Op.TASK_REQUEST, ["w1", 1]).status == ErrorCode.BAD_STATE
    assert ask(h, Op.WORKER_LEAVE, ["w1"]).status == ErrorCode.BAD_STATE


def test_sync_task_request_is_parked_until_every_assignment_is_durable(h, engine, io):
    submit(h, tasks=4)
    ok(h, Op.WORKER_REGISTER, ["w1", "", 4])
    engine.journal.wait_durable(engine.state.txid)
    io.block_writes.clear()                       # the flusher blocks in its next write
    try:
        assert ask(h, Op.TASK_REQUEST, ["w1", 3], durability=2, rid=7000) is None
        top = engine.state.txid
        assert h.parked and h.parked.txids()[-1] == top
        assert h.release(engine.journal.durable_txid, 0.0) == []
    finally:
        io.block_writes.set()
    assert engine.journal.wait_durable(top, 5.0)
    released = h.release(engine.journal.durable_txid, 0.0)
    reply = decode_reply(released[0][1])
    assert reply.request_id == 7000 and len(reply.result) == 3 and reply.txid == top


def test_a_jobs_options_reach_its_assignments_and_its_status(h, engine):
    job_id = ok(h, Op.JOB_SUBMIT, [None, "n", "wc:count", 0, 1, [["a", {}]],
                                   {"timeout_s": 30, "executor": "thread"}]).result
    plain = submit(h, tasks=1)
    ok(h, Op.WORKER_REGISTER, ["w1", "tcp://w1", 2])
    got = ok(h, Op.TASK_REQUEST, ["w1", 10]).result
    assert got == [[job_id, 0, 1, "wc:count", "a", {}, {"timeout_s": 30, "executor": "thread"}],
                   [plain, 0, 1, "wc:count", "shard-0", {"i": 0}]]   # no options: as before
    assert ok(h, Op.JOB_STATUS, [job_id]).result["options"] == {"timeout_s": 30,
                                                                "executor": "thread"}
    assert ok(h, Op.JOB_STATUS, [plain]).result["options"] == {}
    bad = ask(h, Op.JOB_SUBMIT, [None, "n", "h", 0, 1, [[1, {}]], {"timeout": 3}])
    assert bad.status == ErrorCode.INVALID and "unknown job option 'timeout'" in bad.result[1]
    bad = ask(h, Op.JOB_SUBMIT, [None, "n", "h", 0, 1, [[1, {}]], "fast"])
    assert bad.status == ErrorCode.BAD_REQUEST and "options has the wrong type" in bad.result[1]
    bad = ask(h, Op.JOB_SUBMIT, [None, "n", "h", 0, 1, [[1, {}]], {}, 8])
    assert bad.status == ErrorCode.BAD_REQUEST and "and optionally options, got 8" in bad.result[1]
    assert engine.state.validate() == []


def test_arguments_are_checked(h):
    cases = [
        (Op.JOB_SUBMIT, [None, "n", "h", 0, 1]),                         # count
        (Op.JOB_SUBMIT, [None, "n", "h", True, 1, [[1, {}]]]),           # bool as int
        (Op.WORKER_REGISTER, ["w", "", "2"]),
        (Op.TASK_PROGRESS, ["w", "j", 0, 1, "half", {}]),
        (Op.TASK_FINISH, ["w", "j", 0, 1, 1, None]),                     # ok must be bool
        (Op.JOB_TASKS, ["j", -1, 10, None]),
        (Op.JOB_TASKS, ["j", 0, 10, "sleeping"]),
        (Op.JOB_LIST, [1]),
    ]
    for op, args in cases:
        assert ask(h, op, args).status == ErrorCode.BAD_REQUEST, (op, args)
    invalid = [
        (Op.JOB_SUBMIT, [None, "", "h", 0, 1, [[1, {}]]]),               # empty name
        (Op.JOB_SUBMIT, [None, "n", "h", 0, 0, [[1, {}]]]),              # max_attempts 0
        (Op.JOB_SUBMIT, [None, "n", "h", 0, 1, []]),                     # no tasks
        (Op.JOB_SUBMIT, [None, "n", "h", 0, 1, [[1, 2]]]),               # params not a map
        (Op.WORKER_REGISTER, ["w", "", 0]),
    ]
    for op, args in invalid:
        assert ask(h, op, args).status == ErrorCode.INVALID, (op, args)
    assert ask(h, Op.JOB_STATUS, ["nope"]).status == ErrorCode.NOT_FOUND
    assert ask(h, Op.JOB_CANCEL, ["nope", ""]).status == ErrorCode.NOT_FOUND
    assert ask(h, 99, []).status == ErrorCode.UNKNOWN_OP
    assert ask(h, 26, []).status == ErrorCode.UNKNOWN_OP


def test_progress_out_of_range_is_invalid_and_not_logged(h, engine):
    job_id = submit(h, tasks=1)
    ok(h, Op.WORKER_REGISTER, ["w1", "", 1])
    ok(h, Op.TASK_REQUEST, ["w1", 1])
    txid = engine.state.txid
    assert ask(h, Op.TASK_PROGRESS, ["w1", job_id, 0, 1, 1.5, {}]).status == ErrorCode.INVALID
    assert ask(h, Op.TASK_PROGRESS, ["w1", job_id, 0, 1, 0.5, {"n": "x"}]).status == \
        ErrorCode.INVALID
    assert engine.state.txid == txid


def test_job_ids_given_and_made_and_delete(h):
    assert submit(h, tasks=1, job_id="mine") == "mine"
    assert ask(h, Op.JOB_SUBMIT, ["mine", "n", "h", 0, 1, [[1, {}]]]).status == \
        ErrorCode.NODE_EXISTS
    ok(h, Op.JOB_SUBMIT, ["job-3", "n", "h", 0, 1, [[1, {}]]])      # takes the next made id
    assert submit(h, tasks=1) == "job-3-1"
    assert ask(h, Op.JOB_DELETE, ["mine"]).status == ErrorCode.BAD_STATE
    assert ok(h, Op.JOB_CANCEL, ["mine", "stop"]).result == 1
    assert ok(h, Op.JOB_DELETE, ["mine"]).result == 1
    assert [j["id"] for j in ok(h, Op.JOB_LIST, [True]).result] == ["job-3", "job-3-1"]


def test_silent_workers_are_marked_lost_by_expire_and_their_tasks_requeued(h, engine):
    job_id = submit(h, tasks=4, max_attempts=2)
    ok(h, Op.WORKER_REGISTER, ["w1", "", 2], now=100.0)
    ok(h, Op.WORKER_REGISTER, ["w2", "", 2], now=100.0)
    ok(h, Op.TASK_REQUEST, ["w1", 2], now=100.0)
    ok(h, Op.TASK_REQUEST, ["w2", 2], now=100.0)
    assert h.jobs.expire(104.9) == []
    ok(h, Op.WORKER_HEARTBEAT, ["w2", [[job_id, 2, 1], [job_id, 3, 1]]], now=104.0)
    assert h.jobs.expire(105.5) == ["w1"]
    jobs = engine.state.jobs
    assert jobs.workers["w1"].state is WorkerState.LOST
    assert [t.state for t in jobs.jobs[job_id].tasks] == [TaskState.PENDING] * 2 + \
        [TaskState.ASSIGNED] * 2
    assert h.jobs.expire(106.0) == []                  # logged once
    assert ok(h, Op.WORKER_HEARTBEAT, ["w1", [[job_id, 0, 1]]]).result == \
        {"known": False, "cancel": [[job_id, 0, 1]], "epoch": EPOCH}
    assert h.jobs.status()["workers_lost_total"] == 1
    assert engine.state.validate() == []


def test_workers_recovered_as_active_get_a_grace_period(tmp_path, clock):
    eng = Engine(tmp_path / "d")
    eng.open()
    try:
        first = Handlers(eng, 1, MasterStats(), wall_ms=clock,
                         jobs=JobsConfig(worker_timeout_s=5.0))
        ok(first, Op.WORKER_REGISTER, ["w1", "", 1], now=10.0)
        # a new Handlers over the same state, as after a restart long after w1 was heard from
        second = Handlers(eng, 2, MasterStats(), wall_ms=clock,
                          jobs=JobsConfig(worker_timeout_s=5.0))
        second.jobs.grace(1000.0)
        assert second.jobs.expire(1004.0) == []
        assert second.jobs.expire(1005.5) == ["w1"]
    finally:
        eng.close()


def test_status_fields(h):
    submit(h, tasks=5)
    ok(h, Op.WORKER_REGISTER, ["w1", "", 2])
    ok(h, Op.TASK_REQUEST, ["w1", 2])
    assert h.jobs.status() == {"workers_active": 1, "jobs_active": 1, "tasks_pending": 3,
                               "workers_lost_total": 0, "assignments_total": 2,
                               "worker_nodes": []}


def test_a_worker_may_name_its_status_endpoint_at_register(h):
    """An optional fourth arg of WORKER_REGISTER (soft state, not logged): listed in STATUS's
    worker_nodes while the worker is active; a registration without it (an older worker) is
    still accepted and forgets the one named before."""
    submit(h, tasks=2)
    ok(h, Op.WORKER_REGISTER, ["w1", "", 2, "tcp://127.0.0.1:7001"])
    ok(h, Op.WORKER_REGISTER, ["w2", "", 1])
    ok(h, Op.TASK_REQUEST, ["w1", 1])
    assert h.jobs.status()["worker_nodes"] == [
        {"worker_id": "w1", "status_endpoint": "tcp://127.0.0.1:7001", "slots": 2,
         "running": 1, "status_key": None}]
    ok(h, Op.WORKER_REGISTER, ["w2", "", 1, "tcp://127.0.0.1:7002"])
    assert [n["worker_id"] for n in h.jobs.status()["worker_nodes"]] == ["w1", "w2"]
    ok(h, Op.WORKER_REGISTER, ["w2", "", 1, None])      # nil: no endpoint any more
    assert [n["worker_id"] for n in h.jobs.status()["worker_nodes"]] == ["w1"]
    for bad in ("no-scheme", "", 7, "tcp://" + "x" * 300):
        reply = ask(h, Op.WORKER_REGISTER, ["w3", "", 1, bad])
        assert reply.status == ErrorCode.BAD_REQUEST, reply
    assert ask(h, Op.WORKER_REGISTER, ["w3", "", 1, None, 5]).status == ErrorCode.BAD_REQUEST
    ok(h, Op.WORKER_LEAVE, ["w1"])
    assert h.jobs.status()["worker_nodes"] == []


def test_a_lost_worker_is_no_longer_listed_with_its_status_endpoint(h):
    ok(h, Op.WORKER_REGISTER, ["w1", "", 1, "tcp://127.0.0.1:7001"], now=100.0)
    assert len(h.jobs.status()["worker_nodes"]) == 1
    assert h.jobs.expire(105.5) == ["w1"]
    assert h.jobs.status()["worker_nodes"] == []
    assert h.jobs.status_endpoints == {}
