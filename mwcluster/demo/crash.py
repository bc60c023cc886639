"""`mwcluster demo-crash`: the core engine on this machine, with a real crash and a real
recovery.

What it does, with the real journal and snapshot files in a data directory:
1. A writer process opens the engine in `async` mode, registers workers, submits a job, runs
   its tasks' progress and writes namespace metadata; midway it writes a snapshot. It reports
   every acknowledged txid to this process over a pipe.
2. This process kills the writer with SIGKILL while it is still writing: whatever was still
   in the journal buffer is lost, as the async mode allows.
3. It recovers from the files (newest snapshot + journal replay), shows what came back, checks
   every invariant, and measures the loss against the acknowledged history.
4. It writes again, stops gracefully, reopens, and shows that a graceful stop loses nothing.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from mwcluster.core import records as r
from mwcluster.core.values import encode
from mwcluster.engine import Engine

TASKS = 64


def writer_main(data_dir: str, records: int) -> None:
    """The child: act as a master running jobs on 8 workers, reporting acknowledged txids.

    Tasks get assigned, report progress, finish; every tenth task fails its first attempt
    and is retried. When a job is done the next one is submitted. Dataset metadata is merged
    alongside, and a snapshot is written halfway."""
    from mwcluster.core.jobs import TaskState

    engine = Engine(data_dir, durability="async")
    engine.open()
    out = sys.stdout
    clock_ms = int(time.time() * 1000)
    txid = 0

    def submit(rec) -> None:
        nonlocal txid
        txid, _ = engine.submit(rec)

    for w in range(8):
        submit(r.WorkerRegister(f"worker-{w}", f"tcp://127.0.0.1:{6000 + w}", 8, clock_ms))
    submit(r.Put("/datasets/logs/schema", encode({"fields": ["ts", "host", "msg"]}), 0))
    out.write("ready\n")
    out.flush()
    job_no = 0
    snapshot_done = False
    while txid < records:
        job_no += 1
        job_id = f"job-{job_no}"
        submit(r.JobSubmit(job_id, f"clean-logs-{job_no}", "demo.clean", 0, 3,
                           [[{"path": f"/data/logs/part-{i:05d}"}, {}] for i in range(TASKS)],
                           clock_ms))
        job = engine.state.jobs.jobs[job_id]
        while job.state.value not in ("succeeded", "failed") and txid < records:
            for task in job.tasks:
                clock_ms += 1
                if task.state is TaskState.PENDING:
                    submit(r.TaskAssign(job_id, task.index, f"worker-{task.index % 8}",
                                        task.attempt + 1, clock_ms))
                elif task.state in (TaskState.ASSIGNED, TaskState.RUNNING):
                    progress = round(task.progress + 0.125, 3)
                    if progress < 1.0:
                        submit(r.TaskProgress(job_id, task.index, task.attempt, progress,
                                              {"rows": int(progress * 80_000)}, clock_ms))
                    else:
                        failing = task.index % 10 == 3 and task.attempt == 1
                        submit(r.TaskFinish(job_id, task.index, task.attempt, not failing,
                                            "disk quota exceeded" if failing else {"rows": 80_000},
                                            clock_ms))
                        submit(r.Merge(f"/datasets/logs/2026-11-26/part-{task.index:05d}",
                                       encode({"rows": 80_000, "job": job_id}), None))
                if txid % 200 < 2:
                    stats = engine.journal.stats()
                    out.write(f"{txid} {stats.durable_txid} "
                              f"{stats.oldest_unflushed_age_s * 1000:.1f}\n")
                    out.flush()
            if not snapshot_done and txid >= records // 2:
                engine.snapshot()
                snapshot_done = True
    out.write(f"{txid} {engine.journal.durable_txid} 0\n")
    out.flush()
    sys.stdin.read()   # wait to be killed


def run_crash_demo(data_dir: str | None, records: int, console: Console | None = None) -> int:
    console = console or Console()
    owned = data_dir is None
    base = Path(tempfile.mkdtemp(prefix="mwcluster-demo-")) if owned else Path(data_dir)
    console.rule("[bold]mwcluster demo: the core engine, a crash, and recovery")
    console.print(f"data directory: {base}")
    console.print("[bold]1.[/] a writer process applies metadata updates in async mode "
                  "(journal flushed by a background thread) ...")
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys; from mwcluster.demo.crash import writer_main; "
         "writer_main(sys.argv[1], int(sys.argv[2]))", str(base), str(records)],
        stdout=subprocess.PIPE, stdin=subprocess.PIPE, text=True)
    acked = durable = 0
    window_ms = 0.0
    try:
        assert child.stdout is not None
        if child.stdout.readline().strip() != "ready":
            console.print("[red]the writer process failed to start")
            return 1
        target = records * 3 // 4
        for line in child.stdout:   # the writer reports about every 200 txids
            fields = line.split()
            acked, durable, window_ms = int(fields[0]), int(fields[1]), float(fields[2])
            if acked >= target:
                break
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    if acked == 0:
        console.print("[red]the writer acknowledged nothing before it was killed")
        return 1
    console.print(f"[bold]2.[/] killed the writer with SIGKILL after it acknowledged txid "
                  f"[bold]{acked}[/] (it kept writing until the signal landed)")
    engine = Engine(base, durability="async")
    report = engine.open()
    state = engine.state
    problems = state.validate()
    table = Table(title="3. recovery from the files")
    table.add_column("what")
    table.add_column("value", justify="right")
    table.add_row("snapshot used (txid)", str(report.snapshot_txid))
    table.add_row("journal records replayed", str(report.replayed_records))
    table.add_row("recovered txid", str(report.last_txid))
    table.add_row("acknowledged txid we saw", str(acked))
    table.add_row("durable txid the writer last reported", str(durable))
    table.add_row("its loss window then (oldest unflushed)", f"{window_ms:.1f} ms")
    lost = max(0, acked - report.last_txid)
    table.add_row("acknowledged records lost (async window)", str(lost))
    table.add_row("torn-tail bytes cut", str(report.journal_cut_bytes))
    table.add_row("recovery time", f"{report.seconds * 1000:.1f} ms")
    table.add_row("state digest", f"{report.digest:016x}")
    table.add_row("invariants", "ok" if not problems else "; ".join(problems))
    console.print(table)
    jobs = list(state.jobs.jobs.values())
    by_state: dict[str, int] = {}
    for job in jobs:
        by_state[job.state.value] = by_state.get(job.state.value, 0) + 1
    console.print(f"{len(jobs)} jobs recovered: "
                  + ", ".join(f"{n} {name}" for name, n in sorted(by_state.items())))
    if jobs:
        info = jobs[-1].summary()
        counts = ", ".join(f"{k} {v}" for k, v in info["counts"].items() if v)
        console.print(f"the newest, {info['job_id']} '{info['name']}': {info['state']}, "
                      f"progress {info['progress'] * 100:.1f}% ({counts})")
    sample = "/datasets/logs/2026-11-26/part-00007"
    console.print(f"{sample} = {state.ns.get(sample)} (stat {state.ns.stat(sample)})")
    console.print("[bold]4.[/] graceful stop: write 1,000 more updates, close, reopen ...")
    for i in range(1000):
        txid, _ = engine.submit(r.Put(f"/demo/graceful/{i:04d}", encode({"i": i})))
    digest = state.digest
    engine.close()
    again = Engine(base, durability="async")
    report2 = again.open()
    same = report2.last_txid == txid and again.state.digest == digest
    console.print(f"   before close: txid {txid}, digest {digest:016x}; after reopen: txid "
                  f"{report2.last_txid}, digest {again.state.digest:016x} -> "
                  + ("[green]nothing lost[/]" if same else "[red]MISMATCH[/]"))
    again.close()
    if owned and same and not problems:
        import shutil

        shutil.rmtree(base, ignore_errors=True)
    elif owned:
        console.print(f"kept {base} for inspection")
    ok = same and not problems and report.last_txid >= durable
    console.print("[green]demo finished[/]" if ok else "[red]demo found a problem[/]")
    return 0 if ok else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run_crash_demo(os.environ.get("MWCLUSTER_DATA_DIR"), 60000))
