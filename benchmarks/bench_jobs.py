"""Benchmark of the master's workers and jobs: one job of 100,000 tasks across 1,000 simulated
workers, and the time to detect a silent worker. Records the section "workers and jobs" of
docs/benchmarks.md.

    python benchmarks/bench_jobs.py [--tasks N] [--workers W] [--procs P] [--slots S]
                                    [--batch K] [--worker-timeout-s T] [--profile] [--no-record]

A master (mwcluster.testing.MasterProcess, async default durability, a temporary data
directory) gets one job of N tasks. P processes each drive W/P worker ids through one Client
with a pipeline of K requests per BATCH message, in rounds that all processes start together
(a barrier), so that each phase's wall time is the master's time for the whole phase:

    request:  one TASK_REQUEST per worker (sync, as workers send it), for its free slots:
              one logged TaskAssign per task; each worker also heartbeats once a round
    progress: one TASK_PROGRESS per running task (0.5 and a counter; the default durability)
    finish:   one TASK_FINISH per running task (sync, as workers send it)

Rates are tasks per second of phase wall time; master CPU is from /proc/PID/stat over the
same phases. Failure detection, twice: during the rounds (a worker "victim" takes 10 tasks of
the big job before the rounds and falls silent; a thread polls until they are pending again or
re-assigned) and on the idle master after them (a small job); the time from the victim's last
reply, against worker_timeout_s + 1 s. With --profile, py-spy records the master during the
rounds (a flame graph in the temporary directory, its top frames printed). Bounded: at most
--max-rounds rounds and --max-seconds seconds for the rounds.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import record_section  # noqa: E402
from mwcluster import Client  # noqa: E402
from mwcluster.testing import MasterProcess  # noqa: E402

TICK_S = os.sysconf("SC_CLK_TCK")
SECTION = "workers and jobs"


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK_S


def driver(endpoint: str, workers: list[str], slots: int, batch: int, barrier, out, stop) -> None:
    """One process driving many worker ids, phase by phase in step with the others."""
    done = {"assigned": 0, "progress": 0, "finished": 0, "requests": 0, "heartbeats": 0,
            "stale": 0}
    with Client(endpoint, timeout_s=60, client_id=f"bench-{os.getpid()}") as client:
        with client.pipeline(window=batch * 8, batch=batch) as p:
            for w in workers:
                p.register_worker(w, slots, address=f"sim://{w}")
        running: dict[str, list] = {w: [] for w in workers}
        barrier.wait()
        while True:
            barrier.wait()                       # the parent decides: go or stop
            if stop.value:
                break
            # request phase
            with client.pipeline(window=batch * 8, batch=batch) as p:
                beats = [p.worker_heartbeat(w, [(a.job_id, a.index, a.attempt)
                                                for a in running[w]]) for w in workers]
                asks = [(w, p.request_tasks(w, slots - len(running[w]))) for w in workers]
            done["heartbeats"] += len(beats)
            done["requests"] += len(asks)
            for w, future in asks:
                got = future.result()
                running[w].extend(got)
                done["assigned"] += len(got)
            barrier.wait()
            # progress phase
            with client.pipeline(window=batch * 8, batch=batch) as p:
                reports = [p.report_progress(w, a.job_id, a.index, a.attempt, 0.5,
                                             {"records": a.index})
                           for w in workers for a in running[w]]
            for future in reports:
                if future.exception() is None:
                    done["progress"] += 1
                else:
                    done["stale"] += 1
            barrier.wait()
            # finish phase
            with client.pipeline(window=batch * 8, batch=batch) as p:
                finishes = [p.finish_task(w, a.job_id, a.index, a.attempt, True, a.index)
                            for w in workers for a in running[w]]
            for future in finishes:
                if future.exception() is None:
                    done["finished"] += 1
                else:
                    done["stale"] += 1
            for w in workers:
                running[w] = []
            barrier.wait()
    out.put(done)


def run_rounds(master: MasterProcess, args) -> dict:
    ctx = mp.get_context("fork")
    ids = [f"sim-{i:04d}" for i in range(args.workers)]
    groups = [ids[i::args.procs] for i in range(args.procs)]
    barrier = ctx.Barrier(args.procs + 1)
    stop = ctx.Value("b", 0)
    out = ctx.Queue()
    procs = [ctx.Process(target=driver, args=(master.client_endpoint, g, args.slots,
                                              args.batch, barrier, out, stop), daemon=True)
             for g in groups]
    with Client(master.client_endpoint, timeout_s=120) as client:
        t0 = time.monotonic()
        job_id = client.submit_job("bench", "bench:noop", list(range(args.tasks)),
                                   max_attempts=3)
        submit_s = time.monotonic() - t0
        client.register_worker("victim", 10)
        victim = client.request_tasks("victim", 10)
        watch = Watch(master.client_endpoint, job_id, victim)
        for proc in procs:
            proc.start()
        try:
            barrier.wait(timeout=120)            # all registered
            phases = {"request": 0.0, "progress": 0.0, "finish": 0.0}
            cpu = dict.fromkeys(phases, 0.0)
            rounds = 0
            began = time.monotonic()
            profile = start_profile(master, args) if args.profile else None
            while rounds < args.max_rounds and time.monotonic() - began < args.max_seconds:
                if not client.jobs(include_finished=False):
                    break
                barrier.wait(timeout=300)        # go
                for phase in ("request", "progress", "finish"):
                    c0, w0 = cpu_seconds(master.pid), time.monotonic()
                    barrier.wait(timeout=300)
                    phases[phase] += time.monotonic() - w0
                    cpu[phase] += cpu_seconds(master.pid) - c0
                rounds += 1
            wall = time.monotonic() - began
            stop.value = 1
            barrier.wait(timeout=120)
            totals: dict[str, int] = {}
            for _ in procs:
                for key, value in out.get(timeout=120).items():
                    totals[key] = totals.get(key, 0) + value
            profile_text = finish_profile(profile) if profile else ""
            watch.thread.join(timeout=args.worker_timeout_s + 30)
        finally:
            watch.stop = True
            for proc in procs:
                proc.join(timeout=30)
                if proc.is_alive():
                    proc.kill()
        status = client.job_status(job_id)
        master_status = client.status()
    return {"job": status, "rounds": rounds, "detect_s": watch.seconds, "phases": phases,
            "cpu": cpu, "totals": totals, "wall": wall, "submit_s": submit_s,
            "status": master_status, "profile": profile_text}


class Watch:
    """A thread polling (every 10 ms, its own Client) until the silent worker's tasks are
    pending again or re-assigned at a later attempt; `seconds` from the victim's last reply."""

    def __init__(self, endpoint: str, job_id: str, tasks: list) -> None:
        self.since = time.monotonic()
        self.endpoint, self.job_id, self.tasks = endpoint, job_id, tasks
        self.seconds = float("nan")
        self.stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        first = min(a.index for a in self.tasks)
        last = max(a.index for a in self.tasks)
        wanted = {a.index for a in self.tasks}
        with Client(self.endpoint, timeout_s=60) as client:
            while not self.stop:
                rows = client.job_tasks(self.job_id, first, last - first + 1)
                if all(r["state"] == "pending" or r["attempt"] > 1
                       for r in rows if r["index"] in wanted):
                    self.seconds = time.monotonic() - self.since
                    return
                time.sleep(0.01)   # a benchmark's polling interval


def start_profile(master: MasterProcess, args):
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    out = Path(tempfile.mkdtemp(prefix="bench-jobs-prof-")) / "master.txt"
    proc = subprocess.Popen([spy, "record", "-p", str(master.pid), "-d",
                             str(int(args.max_seconds)), "-r", "200", "-f", "raw",
                             "--nonblocking", "-o", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return proc, out


def finish_profile(profile) -> str:
    proc, out = profile
    proc.send_signal(2)                     # SIGINT: py-spy writes what it has
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    if not out.exists():
        return "(py-spy wrote nothing)"
    own: dict[str, int] = {}
    total = 0
    for line in out.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        for frame in frames:
            if "mwcluster" in frame:
                own[frame] = own.get(frame, 0) + n
    top = sorted(own.items(), key=lambda kv: -kv[1])[:15]
    lines = [f"{100 * n / total:5.1f}%  {frame}" for frame, n in top]
    return f"py-spy samples {total} (raw file {out}); frames inclusive:\n" + "\n".join(lines)


def detect_failure(master: MasterProcess, timeout_s: float) -> float:
    """Seconds from a worker's last reply to all its tasks being pending again."""
    with Client(master.client_endpoint, timeout_s=30) as client:
        job_id = client.submit_job("detect", "bench:noop", list(range(10)), priority=10)
        client.register_worker("victim", 10)
        got = client.request_tasks("victim", 10)
        silent_since = time.monotonic()
        assert len(got) == 10, got
        deadline = silent_since + timeout_s + 30
        while time.monotonic() < deadline:
            if client.job_status(job_id)["counts"]["pending"] == 10:
                return time.monotonic() - silent_since
            time.sleep(0.01)    # a benchmark's polling interval, not a test's synchronisation
        raise RuntimeError("the silent worker's tasks did not come back")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=1000)
    parser.add_argument("--procs", type=int, default=2)
    parser.add_argument("--slots", type=int, default=10)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--worker-timeout-s", type=float, default=5.0)
    parser.add_argument("--max-rounds", type=int, default=1000)
    parser.add_argument("--max-seconds", type=float, default=150.0)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()

    load = os.getloadavg()[0]
    data = Path(tempfile.mkdtemp(prefix="bench-jobs-"))
    env = {**os.environ, "MWCLUSTER_WORKER_TIMEOUT_S": str(args.worker_timeout_s)}
    try:
        with MasterProcess(data / "data", env=env) as master:
            res = run_rounds(master, args)
            detect_s = detect_failure(master, args.worker_timeout_s)
    finally:
        shutil.rmtree(data, ignore_errors=True)
    t, ph, cpu = res["totals"], res["phases"], res["cpu"]
    rate = {k: (n / ph[p] if ph[p] else 0.0) for k, n, p in (
        ("assign", t.get("assigned", 0), "request"), ("progress", t.get("progress", 0),
                                                      "progress"),
        ("finish", t.get("finished", 0), "finish"))}
    job = res["job"]
    print(f"job {job['state']}: {job['counts']} in {res['rounds']} rounds, {res['wall']:.1f} s")
    print(f"assignments/s {rate['assign']:,.0f}, progress/s {rate['progress']:,.0f}, "
          f"finishes/s {rate['finish']:,.0f}; failure detection {res['detect_s']:.2f} s "
          f"during the rounds, {detect_s:.2f} s idle")
    if res["profile"]:
        print(res["profile"])
    if args.no_record:
        return

    def pct(phase: str) -> str:
        return f"{100 * cpu[phase] / ph[phase]:.0f}%" if ph[phase] else "-"

    limit = f"<= worker_timeout_s + 1 s = {args.worker_timeout_s + 1:g} s"
    rows = [("assignments per second (TaskAssign records logged and answered)",
             ">= 10,000/s", f"{rate['assign']:,.0f}/s (master CPU {pct('request')})"),
            ("progress reports accepted per second", "-",
             f"{rate['progress']:,.0f}/s (master CPU {pct('progress')})"),
            ("finishes per second", "-",
             f"{rate['finish']:,.0f}/s (master CPU {pct('finish')})"),
            ("failure detection during the rounds: a worker's last reply to its 10 tasks "
             "pending again", limit, f"{res['detect_s']:.2f} s"),
            ("failure detection on an idle master, the same way", limit, f"{detect_s:.2f} s")]
    table = "\n".join(["| target | goal | measured |", "|---|---|---|"]
                      + [f"| {a} | {b} | {c} |" for a, b, c in rows])
    command = "python benchmarks/bench_jobs.py" + (" " + " ".join(sys.argv[1:])
                                                    if sys.argv[1:] else "")
    body = f"""One job of {args.tasks:,} tasks across {args.workers:,} simulated workers
({args.slots} slots each), driven by {args.procs} processes on the same machine as the master,
each one Client sending {args.batch} requests per BATCH message, in rounds that all processes
start together: every worker heartbeats and sends one TASK_REQUEST (sync) for its free slots,
then one TASK_PROGRESS per task it got (default durability, async here), then one TASK_FINISH
per task (sync). Rates are tasks per second of each phase's wall time (all processes);
master CPU is its utime + stime over the same phases (100% = one core; the loop is one thread,
the journal flusher and ZeroMQ's I/O thread add to it). The master runs its default
configuration (async default durability, max_assign_per_request 64) with worker_timeout_s
{args.worker_timeout_s:g}. Load average before the run: {load:.2f} (2 cores shared with the
drivers{", and with other work on the machine" if load > 0.5 else ""}).

{table}

The job ended `{job['state']}` with {job['counts']['succeeded']:,} tasks succeeded in
{res['rounds']} rounds ({res['wall']:.1f} s of rounds; the submit of the {args.tasks:,}-task job
took {res['submit_s']:.2f} s). Requests: {t.get('requests', 0):,} TASK_REQUEST,
{t.get('heartbeats', 0):,} heartbeats, {t.get('progress', 0):,} progress reports,
{t.get('finished', 0):,} finishes, {t.get('stale', 0)} refused. Master txid at the end:
{res['status']['txid']:,}; its workers: {res['status']['workers_active']:,} active.
Failure detection is measured from the reply to the silent worker's TASK_REQUEST, polling
every 10 ms (during the rounds: JOB_TASKS for its 10 tasks, until each is pending again or
re-assigned at attempt 2; after them: JOB_STATUS of a small job); the master checks liveness at
its 0.25 s tick, so the expected value is worker_timeout_s plus up to 0.25 s plus the polling.
"""
    record_section(SECTION, command, body)


if __name__ == "__main__":
    main()
