"""The dask executor with real processes on 127.0.0.1: a Dask cluster in this process
(processes=False: its Dask workers are threads of the test process, so they import
mwcluster.testing.handlers and a handler's pid is this process's), a master and one worker
started with executor dask. Tasks run on the Dask cluster with their progress relayed; a
raising handler is retried by the master's rules; a cancelled job's Dask tasks are cancelled;
a Dask scheduler restart mid-job loses nothing the master knows."""

from __future__ import annotations

import os

import pytest

from mwcluster.demo import job as demo_job
from mwcluster.testing import wait_for
from mwcluster.testing.dask import DaskCluster
from mwcluster.testing.cluster import LocalCluster

HANDLERS = ["mwcluster.testing.handlers", demo_job.__name__]


@pytest.fixture
def dask_cluster(tmp_path):
    cluster = DaskCluster(str(tmp_path / "dask"))
    try:
        yield cluster
    finally:
        cluster.close()


def on_dask(tmp_path, dask_cluster: DaskCluster, **kwargs) -> LocalCluster:
    env = dict(os.environ, MWCLUSTER_WORKER_EXECUTOR="dask",
               MWCLUSTER_WORKER_DASK_SCHEDULER=dask_cluster.address)
    return LocalCluster(tmp_path / "c", workers=1, slots=2, handlers=HANDLERS,
                        checkpoint=False, worker_env=env, **kwargs)


def finished(client, job_id: str) -> bool:
    return client.job_status(job_id)["state"] in ("succeeded", "failed", "cancelled")


def test_tasks_run_on_the_dask_cluster_with_progress_relayed(tmp_path, dask_cluster):
    with on_dask(tmp_path, dask_cluster) as cluster:
        client = cluster.client(timeout_s=5)
        pids = client.submit_job("pids", "testing.pid", [None] * 4)
        wait_for(lambda: finished(client, pids), 60, "the pid job")
        tasks = client.job_tasks(pids, 0, 10)
        assert all(t["state"] == "succeeded" for t in tasks), tasks
        # the Dask worker runs in this process: not in the mwcluster worker or a child of it
        assert {t["result"] for t in tasks} == {os.getpid()}
        assert cluster.workers[0].pid != os.getpid()

        job = client.submit_job("wc", demo_job.HANDLER, demo_job.job_inputs(7, 4, 200),
                                params={"read_delay_ms": 150})

        def progress_seen() -> bool:
            return any(t["state"] == "running" and t["counters"].get("records", 0) > 0
                       for t in client.job_tasks(job, 0, 10))

        wait_for(progress_seen, 60, "a running task's counters at the master")
        wait_for(lambda: finished(client, job), 60, "the word count job")
        status = client.job_status(job)
        tasks = client.job_tasks(job, 0, 10)
    assert status["state"] == "succeeded", status
    assert demo_job.combine([t["result"] for t in tasks]) == demo_job.direct(7, 4, 200)
    assert status["counters"]["records"] == 4 * 200      # the last report of every task
    assert dask_cluster.our_keys() == []                  # every future was released


def test_a_raising_handler_is_retried_by_the_masters_rules(tmp_path, dask_cluster):
    with on_dask(tmp_path, dask_cluster) as cluster:
        client = cluster.client(timeout_s=5)
        flaky = client.submit_job("flaky", demo_job.HANDLER, demo_job.job_inputs(7, 3, 80),
                                  params={"fail_shard": 1}, max_attempts=2)
        broken = client.submit_job("broken", "testing.sleep", [None], params={"s": "never"},
                                   max_attempts=2)
        wait_for(lambda: finished(client, flaky) and finished(client, broken), 60,
                 "both jobs to end")
        flaky_status, broken_status = client.job_status(flaky), client.job_status(broken)
        tasks = client.job_tasks(flaky, 0, 10)
    assert flaky_status["state"] == "succeeded", flaky_status
    assert [f[:2] for f in flaky_status["failures"]] == [[1, 1]]
    assert "OSError: shard 1: read error" in flaky_status["failures"][0][3]
    assert tasks[1]["attempt"] == 2
    assert demo_job.combine([t["result"] for t in tasks]) == demo_job.direct(7, 3, 80)
    assert broken_status["state"] == "failed", broken_status
    assert [f[1] for f in broken_status["failures"]] == [1, 2]
    assert all("ValueError" in f[3] for f in broken_status["failures"])


def test_a_cancelled_jobs_dask_tasks_are_cancelled_and_the_worker_keeps_serving(
        tmp_path, dask_cluster):
    with on_dask(tmp_path, dask_cluster) as cluster:
        client = cluster.client(timeout_s=5)
        long = client.submit_job("long", "testing.sleep", [None] * 2, params={"s": 60})
        wait_for(lambda: client.job_status(long)["counts"].get("running", 0) == 2, 30,
                 "both long tasks to run")
        wait_for(lambda: dask_cluster.executing() == 2, 30, "both on the Dask worker")
        assert len(dask_cluster.our_keys()) == 2
        client.cancel_job(long, "enough")
        wait_for(lambda: not dask_cluster.our_keys(), 30,
                 "the scheduler to forget the cancelled tasks")
        wait_for(lambda: dask_cluster.executing() == 0, 30,
                 "the Dask worker's threads to be free (report() returned False)")
        assert client.job_status(long)["state"] == "cancelled"
        again = client.submit_job("after", "testing.echo", [7, 8])
        wait_for(lambda: finished(client, again), 60, "a job after the cancel")
        assert [t["result"] for t in client.job_tasks(again, 0, 2)] == [7, 8]


def test_a_dask_scheduler_restart_mid_job_loses_nothing_the_master_knows(tmp_path,
                                                                         dask_cluster):
    with on_dask(tmp_path, dask_cluster) as cluster:
        client = cluster.client(timeout_s=5)
        quick = client.submit_job("quick", "testing.echo", [1, 2, 3, 4])
        wait_for(lambda: finished(client, quick), 60, "the quick job")
        before = client.job_tasks(quick, 0, 10)
        long = client.submit_job("long", "testing.sleep", [None] * 2, params={"s": 4},
                                 max_attempts=3)
        wait_for(lambda: client.job_status(long)["counts"].get("running", 0) == 2, 30,
                 "both long tasks to run")
        wait_for(lambda: dask_cluster.executing() == 2, 30, "both on the Dask worker")
        dask_cluster.close()
        wait_for(lambda: len(client.job_status(long)["failures"]) == 2, 30,
                 "the attempts the old Dask cluster ran to fail")
        failures = client.job_status(long)["failures"]
        dask_cluster.start()                     # a new scheduler on the same port
        wait_for(lambda: finished(client, long), 60, "the long job on the new Dask cluster")
        status = client.job_status(long)
        tasks = client.job_tasks(long, 0, 10)
        after = client.job_tasks(quick, 0, 10)
    assert sorted(f[:2] for f in failures) == [[0, 1], [1, 1]], failures
    assert all(f"the Dask cluster at {dask_cluster.address}" in f[3] for f in failures)
    assert status["state"] == "succeeded", status
    assert [(t["attempt"], t["result"]) for t in tasks] == [(2, 4.0), (2, 4.0)]
    assert after == before and [t["result"] for t in after] == [1, 2, 3, 4]
