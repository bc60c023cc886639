"""Workers and jobs end to end, with real processes on 127.0.0.1: a master, workers running
mwcluster.demo.job, and the `job` commands. Every process is stopped by LocalCluster."""

from __future__ import annotations

import json
import os
import signal
import sys

import pytest

from mwcluster.demo import job as demo_job
from mwcluster.testing.cluster import LocalCluster, run_command
from mwcluster.testing import wait_for

HANDLERS = [demo_job.__name__]


def submit(client, shards, records=200, **params):
    return client.submit_job("wc", demo_job.HANDLER, demo_job.job_inputs(7, shards, records),
                             params=params or None, max_attempts=3, durability="sync")


def results(client, job_id):
    return client.job_tasks(job_id, 0, 10_000)


def finished(client, job_id):
    return client.job_status(job_id)["state"] in ("succeeded", "failed", "cancelled")


def test_a_job_completes_with_the_result_computed_directly(tmp_path):
    with LocalCluster(tmp_path, workers=2, slots=2, handlers=HANDLERS,
                      checkpoint=False) as cluster:
        client = cluster.client()
        job_id = submit(client, 24, read_delay_ms=20)
        wait_for(lambda: finished(client, job_id), 60, "the job to finish")
        status = client.job_status(job_id)
        tasks = results(client, job_id)
        listed = client.status()["worker_nodes"]       # each worker's status endpoint
    assert status["state"] == "succeeded", status
    assert sorted(w["worker_id"] for w in listed) == ["worker-1", "worker-2"], listed
    assert demo_job.combine([t["result"] for t in tasks]) == demo_job.direct(7, 24, 200)
    assert {t["worker"] for t in tasks} == {"worker-1", "worker-2"}
    assert status["counters"]["records"] == 24 * 200     # progress counters reached the master


def test_a_killed_workers_tasks_run_again_on_another_worker(tmp_path):
    with LocalCluster(tmp_path, workers=2, slots=1, handlers=HANDLERS, checkpoint=False,
                      worker_timeout_s=1.0, worker_heartbeat_ms=100) as cluster:
        client = cluster.client()
        job_id = submit(client, 6, read_delay_ms=100)
        victim = cluster.workers[0].worker_id

        def victim_runs() -> bool:
            return any(t["worker"] == victim and t["state"] in ("assigned", "running")
                       for t in results(client, job_id))

        wait_for(victim_runs, 30, f"{victim} to run a task")
        cluster.kill_worker(0)
        wait_for(lambda: finished(client, job_id), 60, "the job to finish")
        status = client.job_status(job_id)
        tasks = results(client, job_id)
    assert status["state"] == "succeeded", status
    lost = [f for f in status["failures"] if f[2] == victim]
    assert lost and all("lost" in f[3] for f in lost), status["failures"]
    for index, attempt, *_ in lost:
        assert tasks[index]["attempt"] > attempt and tasks[index]["worker"] != victim
    assert demo_job.combine([t["result"] for t in tasks]) == demo_job.direct(7, 6, 200)


def test_a_master_restart_mid_job_loses_no_durable_progress_and_the_job_completes(tmp_path):
    with LocalCluster(tmp_path, workers=2, slots=2, handlers=HANDLERS, checkpoint=False,
                      worker_timeout_s=5.0) as cluster:
        client = cluster.client(timeout_s=1.0, retries=5)
        job_id = submit(client, 40, read_delay_ms=20)
        wait_for(lambda: client.job_status(job_id)["counts"]["succeeded"] >= 10, 60,
                 "a quarter of the tasks")
        done = {t["index"]: t["result"] for t in results(client, job_id)
                if t["state"] == "succeeded"}
        txid = client.status()["txid"]
        wait_for(lambda: client.status()["durable_txid"] >= txid, 30, "those to be durable")
        epoch = cluster.master.epoch
        cluster.restart_master()
        assert cluster.master.epoch == epoch + 1
        after = {t["index"]: t for t in results(client, job_id)}
        assert all(after[i]["state"] == "succeeded" and after[i]["result"] == result
                   for i, result in done.items())
        wait_for(lambda: finished(client, job_id), 60, "the job to finish")
        status = client.job_status(job_id)
        tasks = results(client, job_id)
        workers = {w.worker_id: w.returncode for w in cluster.workers}
    assert status["state"] == "succeeded", status
    assert workers == {"worker-1": None, "worker-2": None}      # they rode it out
    assert demo_job.combine([t["result"] for t in tasks]) == demo_job.direct(7, 40, 200)


def test_a_worker_restarted_with_the_same_id_hands_back_the_attempts_it_lost(tmp_path):
    """A worker killed and started again under the same id, long before the master would
    time it out: at register the master lists the attempts it still has on that id, the new
    process does not run them and reports them failed, so they run again at once."""
    with LocalCluster(tmp_path, workers=1, slots=2, handlers=HANDLERS, checkpoint=False,
                      worker_timeout_s=60.0) as cluster:
        client = cluster.client()
        job_id = submit(client, 6, read_delay_ms=100)
        wait_for(lambda: client.job_status(job_id)["counts"]["running"] >= 1, 30, "running")
        cluster.kill_worker(0)
        again = cluster.add_worker("worker-1")
        wait_for(lambda: finished(client, job_id), 60, "the job to finish")
        status = client.job_status(job_id)
        tasks = results(client, job_id)
        assert again.returncode is None
    assert status["state"] == "succeeded", status
    assert status["failures"] and all("does not run this attempt" in f[3]
                                      for f in status["failures"]), status["failures"]
    assert demo_job.combine([t["result"] for t in tasks]) == demo_job.direct(7, 6, 200)


def test_a_worker_back_from_a_pause_cannot_overwrite_the_tasks_new_owner(tmp_path):
    """SIGSTOP a worker mid-task (a partition, seen from the master): it is marked lost and
    its task runs elsewhere as attempt 2. After SIGCONT its old attempt's reports are stale:
    they are refused (the worker drops the attempt, or its result is refused) and the task
    keeps the new owner's result."""
    with LocalCluster(tmp_path, workers=2, slots=1, handlers=HANDLERS, checkpoint=False,
                      worker_timeout_s=1.0, worker_heartbeat_ms=100) as cluster:
        client = cluster.client()
        job_id = submit(client, 4, read_delay_ms=150)
        paused = cluster.workers[0]

        def held_by_paused() -> list[int]:
            return [t["index"] for t in results(client, job_id)
                    if t["worker"] == paused.worker_id and t["state"] == "running"]

        wait_for(held_by_paused, 30, f"{paused.worker_id} to be running a task")
        index = held_by_paused()[0]
        os.kill(paused.pid, signal.SIGSTOP)
        try:
            wait_for(lambda: results(client, job_id)[index]["attempt"] >= 2, 30,
                     "the task to be given to the other worker")
        finally:
            os.kill(paused.pid, signal.SIGCONT)
        wait_for(lambda: finished(client, job_id), 60, "the job to finish")
        status = client.job_status(job_id)
        tasks = results(client, job_id)
        task = tasks[index]
        # The handler runs in a child process that SIGSTOP did not stop, so after SIGCONT the
        # old attempt is either still running (its progress is refused: dropped) or finished
        # (its result is refused as stale, or discarded at the new registration).
        refused = (f"task {job_id}/{index} attempt 1 dropped",
                   f"task {job_id}/{index} attempt 1: the master refused its result",
                   f"task {job_id}/{index} attempt 1: the master no longer has it")
        wait_for(lambda: any(r in paused.stderr_text() for r in refused), 30,
                 "the paused worker's old attempt to be refused")
        assert paused.returncode is None                  # it carried on
    assert status["state"] == "succeeded", status
    assert task["worker"] != paused.worker_id and task["attempt"] >= 2
    assert demo_job.combine([t["result"] for t in tasks]) == demo_job.direct(7, 4, 200)


def test_sigterm_lets_the_running_task_finish_then_the_worker_leaves(tmp_path):
    with LocalCluster(tmp_path, workers=2, slots=1, handlers=HANDLERS,
                      checkpoint=False) as cluster:
        client = cluster.client()
        job_id = submit(client, 6, read_delay_ms=60)
        leaving = cluster.workers[0]

        def running() -> list[int]:
            return [t["index"] for t in results(client, job_id)
                    if t["worker"] == leaving.worker_id and t["state"] == "running"]

        wait_for(running, 30, f"{leaving.worker_id} to be running a task")
        index = running()[0]
        assert leaving.terminate() == 0
        log = leaving.stderr_text()
        task = results(client, job_id)[index]
        wait_for(lambda: finished(client, job_id), 60, "the job to finish")
        status = client.job_status(job_id)
    assert "left the cluster" in log, log[-2000:]
    assert (task["state"], task["worker"], task["attempt"]) == ("succeeded", leaving.worker_id, 1)
    assert status["state"] == "succeeded" and not status["failures"], status


def run_cli(*args, timeout=60):
    return run_command([sys.executable, "-m", "mwcluster.cli", *args], timeout)


def test_job_commands_submit_list_status_wait_and_cancel(tmp_path):
    spec = tmp_path / "job.toml"
    spec.write_text(f'name = "cli-wc"\nhandler = "{demo_job.HANDLER}"\ncount = 8\n'
                    '[input]\nseed = 3\nshard = "{i}"\nrecords = 100\n')
    with LocalCluster(tmp_path / "c", workers=1, slots=2, handlers=HANDLERS,
                      checkpoint=False) as cluster:
        # a secured cluster: the commands connect as its "client" principal (role write)
        master = ["--master", cluster.master.client_endpoint,
                  "--key", str(cluster.keys.secret("client")),
                  "--server-key", str(cluster.keys.public("server"))]
        sub = run_cli("job", "submit", str(spec), *master)
        assert sub.returncode == 0, sub.stderr
        job_id = sub.stdout.strip()
        wait = run_cli("job", "wait", job_id, *master)
        assert wait.returncode == 0, wait.stdout + wait.stderr
        assert f"{job_id}: succeeded" in wait.stdout
        status = run_cli("job", "status", job_id, "--json", *master)
        info = json.loads(status.stdout)
        assert info["counts"]["succeeded"] == 8 and info["name"] == "cli-wc"
        assert "cli-wc" in run_cli("job", "list", *master).stdout
        text = run_cli("job", "status", job_id, *master).stdout
        assert "throughput:" in text and "8 succeeded" in text
        # A job no worker can run (no such handler... it fails) and one that is cancelled.
        spec.write_text('name = "never"\nhandler = "no.such.handler"\ntasks = [1]\n'
                        'max_attempts = 1\n')
        failing = run_cli("job", "submit", str(spec), *master).stdout.strip()
        assert run_cli("job", "wait", failing, *master).returncode == 2
        spec.write_text(f'name = "slow"\nhandler = "{demo_job.HANDLER}"\ncount = 50\n'
                        'params = { read_delay_ms = 200 }\n'
                        '[input]\nseed = 3\nshard = "{i}"\nrecords = 100\n')
        slow = run_cli("job", "submit", str(spec), *master).stdout.strip()
        cancel = run_cli("job", "cancel", slow, *master)
        assert cancel.returncode == 0 and "tasks cancelled" in cancel.stdout
        assert run_cli("job", "wait", slow, *master).returncode == 2
        missing = run_cli("job", "status", "job-nope", *master)
        assert missing.returncode == 1 and "job-nope" in missing.stderr


@pytest.mark.parametrize("chaos", [False, True], ids=["plain", "chaos"])
def test_the_demo_runs_and_exits_0(tmp_path, chaos):
    args = ["demo", "--shards", "40", "--records", "300", "--workers", "3",
            "--data-dir", str(tmp_path / "demo")]
    if chaos:
        args += ["--chaos", "--read-delay-ms", "30"]
    proc = run_cli(*args, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "identical" in proc.stdout and "demo finished" in proc.stdout
    if chaos:
        assert "killed worker-1" in proc.stdout and "started it again" in proc.stdout
