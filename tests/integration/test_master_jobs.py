"""Jobs and workers against a real master (a child process on random 127.0.0.1 ports): a
Client plays the workers, so these check the master's side of issue 5 end to end: assignment,
progress, finish, stale attempts, lost workers, a kill -9 and restart mid-job, and retries."""

from __future__ import annotations

import os
import time

import pytest

from mwcluster import Client, errors
from mwcluster.testing import MasterProcess, RawDealer, wait_for
from mwcluster.wire.protocol import Op

SHORT_TIMEOUT_S = 1.0


def master_env(**keys) -> dict:
    env = dict(os.environ)
    for key, value in keys.items():
        env[f"MWCLUSTER_{key.upper()}"] = str(value)
    return env


@pytest.fixture
def master(tmp_path):
    with MasterProcess(tmp_path / "data") as m:
        yield m


@pytest.fixture
def quick_master(tmp_path):
    """A master that marks workers lost after SHORT_TIMEOUT_S of silence."""
    env = master_env(worker_timeout_s=SHORT_TIMEOUT_S, worker_heartbeat_ms=200)
    with MasterProcess(tmp_path / "data", env=env) as m:
        yield m


def run_tasks(client: Client, worker_id: str, max_tasks: int = 4) -> int:
    """One round of a worker: ask for tasks, report half way, finish with input * 2."""
    got = client.request_tasks(worker_id, max_tasks)
    for a in got:
        client.report_progress(worker_id, a.job_id, a.index, a.attempt, 0.5, {"items": a.input})
        client.finish_task(worker_id, a.job_id, a.index, a.attempt, True, a.input * 2)
    return len(got)


def test_a_job_is_assigned_progressed_and_finished_by_workers(master):
    with Client(master.client_endpoint, timeout_s=10) as client:
        job_id = client.submit_job("double", "demo:double", list(range(30)), max_attempts=2,
                                   durability="sync")
        workers = [f"w{i}" for i in range(3)]
        for w in workers:
            reply = client.register_worker(w, slots=4, address=f"tcp://{w}")
            assert reply["tasks"] == [] and reply["epoch"] == master.epoch
        rounds = 0
        while client.job_status(job_id)["state"] != "succeeded":
            assert rounds < 100, client.job_status(job_id)
            for w in workers:
                run_tasks(client, w)
            rounds += 1
        status = client.job_status(job_id)
        assert status["counts"]["succeeded"] == 30 and status["progress"] == 1.0
        assert status["counters"] == {"items": sum(range(30))}
        tasks = client.job_tasks(job_id, 0, 100)
        assert [t["result"] for t in tasks] == [2 * i for i in range(30)]
        assert {t["worker"] for t in tasks} == set(workers)      # shared among the workers
        assert [j["id"] for j in client.jobs(include_finished=False)] == []
        st = client.status()
        assert st["jobs"] == 1 and st["workers_active"] == 3 and st["tasks_pending"] == 0
        assert st["assignments_total"] == 30


def test_a_stale_attempt_is_rejected_after_its_worker_was_lost(quick_master):
    with Client(quick_master.client_endpoint, timeout_s=10) as client:
        job_id = client.submit_job("one", "demo:h", ["x"], max_attempts=3)
        client.register_worker("slow", slots=1)
        client.register_worker("good", slots=1)
        [first] = client.request_tasks("slow", 1)
        assert first.attempt == 1
        got = []

        def reassigned():
            # "good" keeps heartbeating; "slow" stays silent until it is marked lost
            assert client.worker_heartbeat("good", [])["known"]
            got.extend(client.request_tasks("good", 1))
            return bool(got)

        wait_for(reassigned, SHORT_TIMEOUT_S + 10, "the task re-assigned to another worker")
        assert (got[0].index, got[0].attempt) == (0, 2)
        with pytest.raises(errors.BadState):
            client.report_progress("slow", job_id, 0, 1, 0.9)
        with pytest.raises(errors.BadState):
            client.finish_task("slow", job_id, 0, 1, True, "late result")
        beat = client.worker_heartbeat("slow", [(job_id, 0, 1)])
        assert beat["known"] is False and beat["cancel"] == [[job_id, 0, 1]]
        assert client.finish_task("good", job_id, 0, 2, True, "result") == "succeeded"
        status = client.job_status(job_id)
        assert status["state"] == "succeeded"
        assert status["failures"][0][:3] == [0, 1, "slow"]
        assert client.job_tasks(job_id)[0]["result"] == "result"


def test_a_lost_workers_tasks_go_back_to_pending(quick_master, record_property):
    with Client(quick_master.client_endpoint, timeout_s=10) as client:
        job_id = client.submit_job("three", "demo:h", [1, 2, 3], max_attempts=2)
        client.register_worker("doomed", slots=3)
        assert len(client.request_tasks("doomed", 3)) == 3
        last_heard = time.monotonic()      # the master last heard from it at or before this

        def all_pending():
            return client.job_status(job_id)["counts"]["pending"] == 3

        wait_for(all_pending, SHORT_TIMEOUT_S + 10, "the lost worker's tasks pending again")
        detection_s = time.monotonic() - last_heard
        record_property("failure_detection_s", round(detection_s, 3))
        print(f"failure detection: {detection_s:.3f} s with worker_timeout_s {SHORT_TIMEOUT_S}")
        st = client.status()
        assert st["workers_lost_total"] == 1 and st["workers_active"] == 0
        assert client.job_tasks(job_id, state="pending") and \
            all(t["worker"] is None for t in client.job_tasks(job_id))


def test_kill_9_mid_job_keeps_sync_acknowledged_progress_and_the_job_completes(tmp_path):
    data = tmp_path / "data"
    with MasterProcess(data) as first, Client(first.client_endpoint, timeout_s=10) as client:
        job_id = client.submit_job("crash", "demo:h", list(range(8)), max_attempts=2,
                                   durability="sync")
        client.register_worker("w1", slots=4, durability="sync")
        got = client.request_tasks("w1", 4)                 # sync by default
        assert [a.index for a in got] == [0, 1, 2, 3]
        for a in got[:2]:
            client.finish_task("w1", job_id, a.index, a.attempt, True, a.index)   # sync
        client.report_progress("w1", job_id, 2, 1, 0.25, {"n": 5}, durability="sync")
        client.report_progress("w1", job_id, 3, 1, 0.75, {"n": 7}, durability="sync")
        first.kill()
    with MasterProcess(data) as second, Client(second.client_endpoint, timeout_s=10) as client:
        assert second.epoch > first.epoch
        status = client.job_status(job_id)
        assert status["counts"]["succeeded"] == 2 and status["counts"]["running"] == 2
        tasks = client.job_tasks(job_id)
        assert [(t["progress"], t["counters"]) for t in tasks[2:4]] == [(0.25, {"n": 5}),
                                                                       (0.75, {"n": 7})]
        # the worker comes back: the master still has its two running tasks
        assert client.register_worker("w1", slots=4)["tasks"] == [[job_id, 2, 1], [job_id, 3, 1]]
        for index in (2, 3):
            client.finish_task("w1", job_id, index, 1, True, index)
        rounds = 0
        while client.job_status(job_id)["state"] != "succeeded":
            assert rounds < 20
            for a in client.request_tasks("w1", 4):
                client.finish_task("w1", job_id, a.index, a.attempt, True, a.index)
            rounds += 1
        assert [t["result"] for t in client.job_tasks(job_id)] == list(range(8))
        assert all(t["attempt"] == 1 for t in client.job_tasks(job_id))


def test_after_a_restart_recovered_workers_are_watched_again(tmp_path):
    """Liveness is soft state: the restarted master starts each worker it recovers as active
    on a fresh worker_timeout_s, so the one that never comes back is marked lost and its task
    requeued, while the one that heartbeats keeps its task."""
    data = tmp_path / "data"
    env = master_env(worker_timeout_s=SHORT_TIMEOUT_S)
    with MasterProcess(data, env=env) as first, \
            Client(first.client_endpoint, timeout_s=10) as client:
        job_id = client.submit_job("two", "demo:h", ["a", "b"], durability="sync")
        client.register_worker("back", slots=1, durability="sync")
        client.register_worker("gone", slots=1, durability="sync")
        assert [a.index for a in client.request_tasks("back", 1)] == [0]
        assert [a.index for a in client.request_tasks("gone", 1)] == [1]
        first.kill()
    with MasterProcess(data, env=env) as second, \
            Client(second.client_endpoint, timeout_s=10) as client:
        def gone_is_lost():
            beat = client.worker_heartbeat("back", [(job_id, 0, 1)])
            assert beat["known"] and beat["cancel"] == []
            return client.job_tasks(job_id)[1]["state"] == "pending"

        wait_for(gone_is_lost, SHORT_TIMEOUT_S + 10, "the silent worker marked lost")
        tasks = client.job_tasks(job_id)
        assert (tasks[0]["state"], tasks[0]["worker"]) == ("assigned", "back")
        st = client.status()
        assert st["workers_lost_total"] == 1 and st["workers_active"] == 1


def test_a_retried_task_request_does_not_assign_twice(tmp_path):
    data = tmp_path / "data"
    with MasterProcess(data) as m, RawDealer(m.client_endpoint, client_id=b"w1") as dealer:
        job = dealer.call(Op.JOB_SUBMIT, [None, "n", "h", 0, 1, [[i, {}] for i in range(10)]])
        job_id = job.result
        assert dealer.call(Op.WORKER_REGISTER, ["w1", "", 8]).status == 0
        first = dealer.call(Op.TASK_REQUEST, ["w1", 3], 2, request_id=777)
        again = dealer.call(Op.TASK_REQUEST, ["w1", 3], 2, request_id=777)
        assert first.status == again.status == 0 and len(first.result) == 3
        assert (again.result, again.txid) == (first.result, first.txid)
        running = dealer.call(Op.JOB_STATUS, [job_id]).result["counts"]["assigned"]
        assert running == 3
        m.kill()
    # after a crash, the retry (the worker never saw the answer) gets the same tasks
    with MasterProcess(data) as m, RawDealer(m.client_endpoint, client_id=b"w1") as dealer:
        after = dealer.call(Op.TASK_REQUEST, ["w1", 3], 2, request_id=777)
        assert after.result == first.result
        assert dealer.call(Op.JOB_STATUS, [job_id]).result["counts"]["assigned"] == 3
