"""Failure drill: kill a worker, restart the master, and watch the job finish anyway.

From the root of a fresh clone (after `pip install .`):

    python examples/failure_drill.py
    python examples/failure_drill.py --shards 40 --workers 3     # a shorter drill

Step by step, with the cluster's own view printed after each step:
1. start a master (worker timeout 2 s) and N workers running mwcluster.demo.job;
2. submit a job and wait until a worker is busy;
3. SIGKILL that worker: after the timeout the master marks it lost (a logged record) and its
   tasks go back to pending, to be run by the others with a new attempt number;
4. SIGKILL the master and start it again on the same data directory and ports: it recovers
   from its journal, the workers reconnect and register again and keep reporting;
5. wait for the job and check its result against the same count computed here.
Every process it started is stopped at the end; exit 0 when the result is right.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from mwcluster.demo import job as demo_job
from mwcluster.testing import LocalCluster, exit_on_sigterm, wait_for


def show(client, job_id: str, what: str) -> dict:
    status = client.job_status(job_id)
    counts = {k: v for k, v in status["counts"].items() if v}
    print(f"[{time.strftime('%H:%M:%S')}] {what}: job {status['state']}, {counts}")
    return status


def drill(cluster: LocalCluster, shards: int) -> int:
    client = cluster.client(timeout_s=1.0, retries=5)
    job_id = client.submit_job("drill", demo_job.HANDLER,
                               demo_job.job_inputs(11, shards, 500),
                               params={"read_delay_ms": 40}, durability="sync")
    show(client, job_id, f"1. submitted {job_id} ({shards} tasks)")
    victim = cluster.workers[0].worker_id

    def victim_busy() -> bool:
        return any(t["worker"] == victim and t["state"] in ("assigned", "running")
                   for t in client.job_tasks(job_id, 0, shards))

    wait_for(victim_busy, 60, f"{victim} to be running a task")
    held = [t["index"] for t in client.job_tasks(job_id, 0, shards)
            if t["worker"] == victim and t["state"] in ("assigned", "running")]
    pid = cluster.kill_worker(0)
    show(client, job_id, f"2. killed {victim} (pid {pid}) while it ran tasks {held}")

    def requeued() -> bool:
        tasks = client.job_tasks(job_id, 0, shards)
        return all(tasks[i]["worker"] != victim or tasks[i]["state"] == "pending"
                   for i in held)

    wait_for(requeued, 30, "the master to mark the worker lost")
    show(client, job_id, f"3. the master marked {victim} lost and requeued its tasks")

    epoch = cluster.master.epoch
    cluster.restart_master()
    show(client, job_id, f"4. killed the master and started it again (epoch {epoch} -> "
                         f"{cluster.master.epoch})")

    wait_for(lambda: client.job_status(job_id)["state"] in ("succeeded", "failed"), 120,
             "the job to finish")
    status = show(client, job_id, "5. finished")
    tasks = client.job_tasks(job_id, 0, shards)
    for i in held:
        print(f"   task {i}: attempt {tasks[i]['attempt']} on {tasks[i]['worker']}")
    got = demo_job.combine([t["result"] for t in tasks])
    same = status["state"] == "succeeded" and got == demo_job.direct(11, shards, 500)
    print("result checked against a direct count: " + ("identical" if same else "DIFFERENT"))
    return 0 if same else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", type=int, default=120)
    parser.add_argument("--workers", type=int, default=3)
    args = parser.parse_args()
    exit_on_sigterm()          # a terminated run still stops the processes it started
    with tempfile.TemporaryDirectory(prefix="mwcluster-drill-") as tmp:
        with LocalCluster(Path(tmp), workers=args.workers, slots=2,
                          handlers=[demo_job.__name__], checkpoint=False,
                          worker_timeout_s=2.0, worker_heartbeat_ms=200) as cluster:
            print(f"master {cluster.master.client_endpoint} (pid {cluster.master.pid}), "
                  f"workers {', '.join(w.worker_id for w in cluster.workers)}")
            return drill(cluster, args.shards)


if __name__ == "__main__":
    sys.exit(main())
