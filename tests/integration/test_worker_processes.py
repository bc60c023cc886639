"""The process executor in a real cluster (LocalCluster, secured): a handler that kills its
process fails only its attempt and the retry succeeds on the same worker; a cancelled job's
running handlers are stopped (their processes end), and the worker keeps serving."""

from __future__ import annotations

import os

from helpers import pid_alive
from mwcluster.testing import wait_for
from mwcluster.testing.cluster import LocalCluster
from mwcluster.testing.processes import RawDealer, descendants

HANDLERS = ["mwcluster.testing.handlers"]


def finished(client, job_id: str) -> bool:
    return client.job_status(job_id)["state"] in ("succeeded", "failed", "cancelled")


def worker_status(cluster: LocalCluster, n: int = 0) -> dict:
    """The worker's own STATUS (its endpoint is served with its key, to the cluster's admin)."""
    worker = cluster.workers[n]
    with RawDealer(worker.info["status_endpoint"],
                   credentials=cluster.keys.credentials("admin", worker.worker_id)) as dealer:
        return dealer.status()



def test_crashes_and_cancellation_in_handler_processes(tmp_path):
    with LocalCluster(tmp_path / "c", workers=1, slots=2, handlers=HANDLERS,
                      checkpoint=False) as cluster:
        client = cluster.client(timeout_s=5)
        worker_pid = cluster.workers[0].pid
        job = client.submit_job("crash", "testing.kill", [None], max_attempts=2)
        wait_for(lambda: finished(client, job), 60, "the crashing job to end")
        status = client.job_status(job)
        assert status["state"] == "failed"
        assert all("killed by SIGKILL" in f[3] for f in status["failures"]), status["failures"]
        assert len(status["failures"]) == 2 and cluster.workers[0].returncode is None

        pids = client.submit_job("pids", "testing.pid", [None] * 4)
        wait_for(lambda: finished(client, pids), 60, "the pid job")
        tasks = client.job_tasks(pids, 0, 10)
        children = {t["result"] for t in tasks}
        assert all(t["state"] == "succeeded" for t in tasks)
        assert worker_pid not in children and 1 <= len(children) <= 2   # one per slot

        long = client.submit_job("long", "testing.sleep", [None] * 2, params={"s": 60})
        wait_for(lambda: client.job_status(long)["counts"].get("running", 0) == 2, 30,
                 "both long tasks to run")
        client.cancel_job(long, "enough")
        wait_for(lambda: not any(pid_alive(pid) for pid in children), 30,
                 "the cancelled handlers' processes to be stopped")
        again = client.submit_job("after", "testing.echo", [7])
        wait_for(lambda: finished(client, again), 60, "a job after the cancel")
        assert client.job_tasks(again, 0, 1)[0]["result"] == 7


def test_a_jobs_timeout_stops_hanging_handlers_in_processes_and_in_threads(tmp_path):
    """timeout_s per job: past it the attempt is failed as timed out and retried by the job's
    rules; a handler's process is stopped, a handler's thread sees report() return False.
    The job's executor hint runs the second job in the worker's own threads."""
    with LocalCluster(tmp_path / "c", workers=1, slots=2, handlers=HANDLERS,
                      checkpoint=False) as cluster:
        client = cluster.client(timeout_s=5)
        worker = cluster.workers[0]
        before = client.submit_job("pids", "testing.pid", [None] * 2)
        wait_for(lambda: finished(client, before), 60, "the pid job")
        children = {t["result"] for t in client.job_tasks(before, 0, 10)}
        hung = client.submit_job("hung", "testing.stubborn", [None], params={"s": 60},
                                 max_attempts=2, timeout_s=0.5)
        wait_for(lambda: finished(client, hung), 60, "the hanging job to time out")
        status = client.job_status(hung)
        assert status["state"] == "failed" and status["options"] == {"timeout_s": 0.5}
        assert [f[1] for f in status["failures"]] == [1, 2]          # retried once, then failed
        assert all("timed out after 0.5 s" in f[3] for f in status["failures"]), status
        wait_for(lambda: not any(pid_alive(pid) for pid in children), 30,
                 "the timed-out handlers' processes to be stopped (SIGKILL after SIGTERM)")

        threaded = client.submit_job("threaded", "testing.sleep", [None], params={"s": 60},
                                     max_attempts=1, timeout_s=0.5, executor="thread")
        wait_for(lambda: finished(client, threaded), 60, "the thread job to time out")
        status = client.job_status(threaded)
        assert status["state"] == "failed" and "timed out" in status["failures"][0][3]
        in_thread = client.submit_job("where", "testing.pid", [None], executor="thread")
        wait_for(lambda: finished(client, in_thread), 60, "a thread job after the timeouts")
        assert client.job_tasks(in_thread, 0, 1)[0]["result"] == worker.pid   # the worker's own
        # the thread's handler saw report() return False and returned: its slot is free again
        wait_for(lambda: worker_status(cluster)["dropped_handlers_running"] == 0, 30,
                 "the abandoned thread to return")
        assert worker_status(cluster)["tasks_timed_out"] == 3 and worker.returncode is None


def test_a_worker_stop_past_its_deadline_stops_the_handlers_processes(tmp_path):
    """SIGTERM with tasks that will not finish in stop_timeout_s: the worker abandons them
    (the master requeues them), its slots stop their handlers' processes (SIGTERM, then
    SIGKILL for one that ignores it), and it exits 0 leaving no handler process behind."""
    env = {**os.environ, "MWCLUSTER_WORKER_STOP_TIMEOUT_S": "0.5"}
    with LocalCluster(tmp_path / "c", workers=2, slots=2, handlers=HANDLERS, checkpoint=False,
                      worker_env=env) as cluster:
        client = cluster.client(timeout_s=5)
        leaving = cluster.workers[0]
        stuck = client.submit_job("stuck", "testing.stubborn", [None] * 4, params={"s": 60})

        def on_leaving() -> int:
            return sum(1 for t in client.job_tasks(stuck, 0, 10)
                       if t["worker"] == leaving.worker_id and t["state"] == "running")
        wait_for(lambda: on_leaving() == 2, 30, f"{leaving.worker_id} to run two stuck tasks")
        children = set(descendants(leaving.pid))     # forkservers, slot processes
        assert len(children) >= 3, children
        assert leaving.terminate() == 0
        log = leaving.stderr_text()
        assert "abandoning 2 running tasks" in log, log[-2000:]
        wait_for(lambda: not any(pid_alive(pid) for pid in children), 10,
                 "the worker's handler processes to be gone")
        assert client.job_status(stuck)["state"] == "running"     # requeued, not failed
