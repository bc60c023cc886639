"""The process executor in a real cluster (LocalCluster, secured): a handler that kills its
process fails only its attempt and the retry succeeds on the same worker; a cancelled job's
running handlers are stopped (their processes end), and the worker keeps serving."""

from __future__ import annotations


from helpers import pid_alive
from mwcluster.testing import wait_for
from mwcluster.testing.cluster import LocalCluster

HANDLERS = ["mwcluster.testing.handlers"]


def finished(client, job_id: str) -> bool:
    return client.job_status(job_id)["state"] in ("succeeded", "failed", "cancelled")



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
