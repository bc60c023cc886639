"""`mwcluster demo`: a whole cluster on this machine running a real job, with no setup.

1. Start a master, a checkpoint node and N workers as child processes on 127.0.0.1 (free
   ports, a temporary data directory unless --data-dir).
2. Submit a word-count job over a generated dataset of web-server log records split into
   shards (mwcluster/demo/job.py); show its progress live.
3. With --chaos: SIGKILL a worker once a quarter of the tasks are done (the master marks it
   lost after its timeout and its tasks run elsewhere), then SIGKILL the master at half way
   and start it again on the same data directory and ports (the workers reconnect, register
   again and carry on).
4. Summarise: tasks, retries, throughput, records in the master's journal, checkpoints the
   checkpoint node took, and the job's result checked against the same count computed
   directly in this process. Exit 1 if they differ or the job did not succeed.
5. Stop every process it started, by pid.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from mwcluster.demo import job as demo_job
from mwcluster.errors import MwclusterError
from mwcluster.client.watch import watch_jobs
from mwcluster.testing.cluster import LocalCluster, exit_on_sigterm


class Chaos:
    """The faults of --chaos, fired from the progress watcher at set points of the job."""

    def __init__(self, cluster: LocalCluster, console: Console, total: int) -> None:
        self.cluster = cluster
        self.console = console
        self.total = total
        self.killed_worker: str | None = None
        self.master_restarted_s: float | None = None

    def __call__(self, statuses: dict[str, dict]) -> None:
        if not statuses:
            return
        status = next(iter(statuses.values()))
        done = status.get("counts", {}).get("succeeded", 0)
        if self.killed_worker is None and done >= self.total // 4:
            worker = self.cluster.workers[0]
            pid = self.cluster.kill_worker(0)
            self.killed_worker = worker.worker_id
            self.console.log(f"[red]chaos:[/] killed {worker.worker_id} (pid {pid}) with "
                             "SIGKILL; its tasks go back to pending once the master notices")
        elif self.master_restarted_s is None and done >= self.total // 2:
            pid = self.cluster.master.pid
            started = time.monotonic()
            self.cluster.restart_master()
            self.master_restarted_s = time.monotonic() - started
            self.console.log(f"[red]chaos:[/] killed the master (pid {pid}) with SIGKILL and "
                             f"started it again on the same data directory and ports "
                             f"(pid {self.cluster.master.pid}, epoch "
                             f"{self.cluster.master.epoch}, {self.master_restarted_s:.2f} s)")


def fetch_results(client: Any, job_id: str) -> list[dict]:
    tasks: list[dict] = []
    while True:
        page = client.job_tasks(job_id, len(tasks), 500)
        if not page:
            return tasks
        tasks += page


def run_demo(*, data_dir: str | None = None, shards: int = 100, records: int = 5000,
             workers: int = 4, slots: int = 2, chaos: bool = False, seed: int = 2026,
             read_delay_ms: int = 0, executor: str = "process",
             console: Console | None = None) -> int:
    console = console or Console()
    exit_on_sigterm()          # a terminated demo still stops the processes it started
    owned = data_dir is None
    base = Path(tempfile.mkdtemp(prefix="mwcluster-demo-")) if owned else Path(data_dir)
    started = time.monotonic()
    console.rule("[bold]mwcluster demo: a master, a checkpoint node and workers running a job")
    console.print(f"data directory: {base}")
    cluster = LocalCluster(base, workers=workers, slots=slots, handlers=[demo_job.__name__],
                           checkpoint=True, checkpoint_period_s=2.0, checkpoint_txns=2000,
                           worker_timeout_s=3.0 if chaos else 10.0, worker_heartbeat_ms=500,
                           progress_interval_ms=100,
                           worker_env={**os.environ, "MWCLUSTER_WORKER_EXECUTOR": executor})
    ok = False
    try:
        with console.status("starting the master, the checkpoint node and "
                            f"{workers} workers ..."):
            cluster.start()
        console.print(f"master {cluster.master.client_endpoint} (pid {cluster.master.pid}), "
                      f"checkpoint node (pid {cluster.checkpoint.pid}), workers "
                      + ", ".join(f"{w.worker_id} (pid {w.pid})" for w in cluster.workers)
                      + f" with {slots} slots each ({executor} executor); up in "
                      f"{time.monotonic() - started:.1f} s")
        console.print(f"secured: every socket uses CURVE; keys and principals in "
                      f"{cluster.keys.dir} (the job is submitted as 'client', role write; "
                      "each worker acts as its own worker principal)")
        ok = _run_job(cluster, console, shards=shards, records=records, chaos=chaos,
                      seed=seed, read_delay_ms=read_delay_ms, executor=executor)
    except MwclusterError as exc:
        console.print(f"[red]the demo failed: {exc}")
        console.print(cluster.logs())
    finally:
        with console.status("stopping every process the demo started ..."):
            cluster.stop()
    if owned and ok:
        shutil.rmtree(base, ignore_errors=True)
    elif owned:
        console.print(f"kept {base} for inspection")
    console.print(f"[green]demo finished in {time.monotonic() - started:.1f} s[/]" if ok
                  else "[red]demo found a problem[/]")
    return 0 if ok else 1


def _run_job(cluster: LocalCluster, console: Console, *, shards: int, records: int,
             chaos: bool, seed: int, read_delay_ms: int, executor: str) -> bool:
    client = cluster.client(timeout_s=1.0, retries=2)
    params = {"read_delay_ms": read_delay_ms, "fail_shard": shards // 3}
    job_id = client.submit_job("wordcount-weblogs", demo_job.HANDLER,
                               demo_job.job_inputs(seed, shards, records), params=params,
                               max_attempts=4, durability="sync")
    console.print(f"submitted job [bold]{job_id}[/]: count the words of {shards * records:,} "
                  f"log records in {shards} shards (shard {params['fail_shard']} fails its "
                  "first attempt on purpose)")
    hook = Chaos(cluster, console, shards) if chaos else None
    watch_started = time.monotonic()
    statuses = watch_jobs(client, [job_id], console=console, poll_s=0.2, on_poll=hook)
    wall_s = time.monotonic() - watch_started
    status = statuses[job_id]
    tasks = fetch_results(client, job_id)
    with console.status("computing the same count directly in this process ..."):
        t0 = time.monotonic()
        expected = demo_job.direct(seed, shards, records)
        direct_s = time.monotonic() - t0
    succeeded = status["state"] == "succeeded"
    got = demo_job.combine([t["result"] for t in tasks]) if succeeded else None
    master = client.status()
    checkpoint = cluster.checkpoint_status() or {}

    table = Table(title=f"job {job_id}: {status['state']}")
    table.add_column("what")
    table.add_column("value", justify="right")
    counts = status.get("counts", {})
    by_state = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    table.add_row("tasks", f"{status['tasks']} ({by_state})")
    retried = [t for t in tasks if t["attempt"] > 1]
    table.add_row("tasks that needed another attempt", str(len(retried)))
    by_worker: dict[str, int] = {}
    for t in tasks:
        by_worker[t["worker"] or "-"] = by_worker.get(t["worker"] or "-", 0) + 1
    table.add_row("tasks per worker (last attempt)",
                  ", ".join(f"{w} {n}" for w, n in sorted(by_worker.items())))
    table.add_row("failures reported", str(len(status.get("failures") or [])))
    table.add_row("wall time of the job", f"{wall_s:.1f} s")
    table.add_row("throughput", f"{status['tasks'] / wall_s:.1f} tasks/s, "
                                f"{shards * records / wall_s:,.0f} log records/s")
    table.add_row("records in the master's journal (txid)", f"{master['txid']:,}")
    table.add_row("master epoch / durable txid", f"{master['epoch']} / {master['durable_txid']:,}")
    security = master.get("security") or {}
    table.add_row("security", f"CURVE, {security.get('principals')} principals, "
                              f"{security.get('unauthorized_requests')} requests refused"
                  if security.get("curve") else "[red]none[/]")
    table.add_row("checkpoints taken by the checkpoint node",
                  str(checkpoint.get("checkpoints_total", "?")))
    table.add_row("newest snapshot at the master (txid)", str(master.get("last_snapshot_txid")))
    if got is not None:
        table.add_row("words counted by the job", f"{got['words']:,}")
    table.add_row("words counted directly", f"{expected['words']:,} ({direct_s:.1f} s)")
    table.add_row("direct count time / job time",
                  f"{direct_s / wall_s:.2f} (above 1: the cluster was faster; "
                  f"{os.cpu_count()} CPUs shared by the "
                  f"master, the checkpoint node and {len(cluster.workers)} workers x "
                  f"{cluster.slots} {executor} slots)")
    same = got == expected
    table.add_row("result check", "[green]identical[/]" if same else "[red]DIFFERENT[/]")
    console.print(table)
    if got is not None:
        top = sorted(got["counts"].items(), key=lambda kv: (-kv[1], kv[0]))[:5]
        console.print("most frequent words: " + ", ".join(f"{w} {n:,}" for w, n in top))
    if status.get("failures"):
        index, attempt, worker, error, _ = status["failures"][-1]
        console.print(f"last failure: task {index} attempt {attempt} on {worker}: {error}")
    return succeeded and same
