"""The demo's job on a whole local cluster: its wall time against the same count made directly
in one process, with the process and the thread executor alternated in one run.

    python benchmarks/bench_demo.py [--rounds 3] [--shards 100] [--records 5000] [--workers 4]
                                    [--slots 2] [--max-seconds 120] [--quick] [--record]
                                    [--results FILE]

Each run starts a fresh LocalCluster as `mwcluster demo` does (secured: a master, a
checkpoint node taking a checkpoint every 2 s or 2,000 records, `--workers` workers of
`--slots` slots, progress interval 100 ms), with every worker on one executor, and waits
until every worker has registered. Then the demo's job (mwcluster.demo.job: `--shards` tasks,
each generating `--records` web-server log records and counting their words; no simulated
read delay, no shard failing on purpose) is submitted and timed from the submission until the
master has it succeeded (polled every 20 ms). The cluster is stopped, and the same count is
made in this process (demo.job.direct, timed), so that the direct count has the machine to
itself; the job's result is checked against it.

In each round the process and the thread executor run once each, the order alternating from
round to round. "direct / job" is how many times faster than the direct count the cluster
was (above 1: faster). Every job gives up after `--max-seconds`. Without --record the table is
only printed; with it, it goes to docs/benchmarks.md (section "demo job") or to `--results
FILE`. Not a test: nothing is asserted about the figures.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import common  # noqa: E402
from mwcluster.demo import job as demo_job  # noqa: E402
from mwcluster.testing.cluster import LocalCluster  # noqa: E402

SECTION = "demo job"
QUICK = {"rounds": 1, "shards": 8, "records": 500, "workers": 2, "slots": 1,
         "max_seconds": 60.0}
HEAD = "| round | executor | tasks | job s | direct s | direct / job | result |"
EXECUTORS = ("process", "thread")
SEED = 2026


def one_run(args, directory: Path, executor: str) -> dict:
    cluster = LocalCluster(directory, workers=args.workers, slots=args.slots,
                           handlers=[demo_job.__name__], checkpoint=True,
                           checkpoint_period_s=2.0, checkpoint_txns=2000,
                           progress_interval_ms=100,
                           worker_env={**os.environ, "MWCLUSTER_WORKER_EXECUTOR": executor})
    pause = threading.Event()
    with cluster:
        client = cluster.client(timeout_s=5)
        started = time.monotonic()
        job_id = client.submit_job("bench-demo", demo_job.HANDLER,
                                   demo_job.job_inputs(SEED, args.shards, args.records),
                                   params={"read_delay_ms": 0}, max_attempts=2)
        deadline = started + args.max_seconds
        state = "pending"
        while time.monotonic() < deadline:
            state = client.job_status(job_id)["state"]
            if state in ("succeeded", "failed", "cancelled"):
                break
            pause.wait(0.02)
        job_s = time.monotonic() - started
        results = []
        while state == "succeeded" and len(results) < args.shards:
            page = client.job_tasks(job_id, len(results), 500)
            if not page:
                break
            results += [t["result"] for t in page]
    started = time.monotonic()
    expected = demo_job.direct(SEED, args.shards, args.records)
    direct_s = time.monotonic() - started
    same = state == "succeeded" and demo_job.combine(results) == expected
    return {"executor": executor, "job_s": job_s, "direct_s": direct_s,
            "result": "identical" if same else f"{state}, DIFFERENT"}


def run_all(args, directory: Path) -> list[list[dict]]:
    rounds = []
    for n in range(args.rounds):
        order = EXECUTORS if n % 2 == 0 else EXECUTORS[::-1]
        runs = [one_run(args, directory / f"r{n}-{executor}", executor) for executor in order]
        for run in runs:
            print(f"round {n + 1} {run['executor']}: job {run['job_s']:.2f} s, direct "
                  f"{run['direct_s']:.2f} s", flush=True)
        rounds.append(sorted(runs, key=lambda r: EXECUTORS.index(r["executor"])))
    return rounds


def tables(rounds: list[list[dict]], args) -> list[str]:
    lines = [HEAD, "|---|---|---|---|---|---|---|"]
    for n, runs in enumerate(rounds, 1):
        for run in runs:
            lines.append(f"| {n} | {run['executor']} | {args.shards} | {run['job_s']:.2f} | "
                         f"{run['direct_s']:.2f} | {run['direct_s'] / run['job_s']:.2f} | "
                         f"{run['result']} |")
    medians = {e: statistics.median(r[i]["direct_s"] / r[i]["job_s"] for r in rounds)
               for i, e in enumerate(EXECUTORS)}
    speedup = statistics.median(r[1]["job_s"] / r[0]["job_s"] for r in rounds)
    lines += ["", f"Median direct / job: process {medians['process']:.2f}, thread "
                  f"{medians['thread']:.2f}. Thread job s / process job s in the same round, "
                  f"median over the rounds: {speedup:.2f} (above 1: the process executor was "
                  "faster)."]
    return lines


def command(args) -> str:
    if args.quick:
        return "python benchmarks/bench_demo.py --quick --record"
    return (f"python benchmarks/bench_demo.py --rounds {args.rounds} --shards {args.shards} "
            f"--records {args.records} --workers {args.workers} --slots {args.slots} "
            f"--max-seconds {args.max_seconds:g} --record")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3, help="rounds of (process, thread)")
    ap.add_argument("--shards", type=int, default=100, help="tasks of the job")
    ap.add_argument("--records", type=int, default=5000, help="log records per shard")
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--slots", type=int, default=2, help="slots per worker")
    ap.add_argument("--max-seconds", type=float, default=120.0,
                    help="a job gives up after this long")
    args = common.parse_run_options(ap, QUICK)
    if min(args.rounds, args.shards, args.records, args.workers, args.slots) < 1 or \
            args.workers > 64 or args.slots > 64 or args.max_seconds <= 0:
        ap.error("counts must be at least 1, --workers and --slots at most 64, "
                 "--max-seconds positive")
    _, body, load = common.measured("bench-demo-", run_all, args,
                                    lambda rounds: tables(rounds, args))
    if not args.record:
        return
    cores = os.cpu_count()
    setup = [
        f"The demo's cluster on this {cores}-core machine: the master, the checkpoint node, "
        f"{args.workers} worker(s) of {args.slots} slots (their handler threads, or their "
        "slots' child processes) and this benchmark's poll all share the cores; the direct "
        "count runs alone after the cluster has stopped (benchmarks/bench_demo.py says "
        "exactly how). With the thread executor a worker computes on one core at most (one "
        "GIL), " + (f"so {args.workers} workers can still use every core"
                    if args.workers >= (cores or 1) else
                    f"so {args.workers} worker(s) use at most {args.workers} of the {cores} "
                    "cores") + "; the process executor lets each slot take a core.", ""]
    common.record_run(args, SECTION, command(args), setup + body + ["", load])


if __name__ == "__main__":
    main()
