"""The worker's executors (nodes/worker/executor.py): handlers run in the slot's thread
(`executor = "thread"`) or in a child process per slot (`executor = "process"`, the
default), measured in one run, thread and process alternated so that drift on a shared
machine shows.

    python benchmarks/bench_executor.py [--rounds 5] [--max-slots N] [--task-ms 75]
                                        [--cpu-tasks 16] [--echo-tasks 2000] [--trials 5]
                                        [--max-seconds 60] [--quick] [--record]
                                        [--results FILE]

Every throughput run starts a fresh in-memory master (mwcluster.testing.memory.MemoryMaster:
the real request handlers, engine and scheduler, no socket) and a WorkerNode on a thread of
this process (heartbeat 20 ms, idle poll 5 ms, progress interval 10 ms, handler modules
mwcluster.testing.handlers), with `slots` slots and one executor. A warm-up job of `slots`
testing.sleep tasks (0.1 s) runs first, so that the process slots have their children;
then one job is submitted and timed from the submission until the master has it succeeded
(polled every 5 ms). CPU seconds are those of this process (all its threads: the worker, the
fake master, the poll) plus those of its child processes (the forkserver and the handlers'
processes, read from /proc before the worker stops), over the timed job.

1. CPU-bound: testing.spin (a pure-Python loop) with `n` calibrated in this process so that
   one task takes about `--task-ms` ms; `--cpu-tasks` tasks per slot, for 1..`--max-slots`
   slots (default: max(2, os.cpu_count())).
2. Per-task overhead: testing.echo (returns its input after one progress report),
   `--echo-tasks` tasks, for 1 and 2 slots.

In each round, each slot count runs thread then process, or process then thread (the order
alternates from round to round). The process / thread ratio of a row is the median over the
rounds of (process in round r) / (thread in round r).

3. From cancel to stopped, with ProcessSlot directly (no worker, no master): testing.pid
   first (the child is up; not timed), then testing.sleep (s=30) or testing.stubborn (it
   ignores SIGTERM, then sleeps); once its first progress report has arrived, the slot's
   `current` callable turns False after (k + 0.5) / trials of the handler's report period
   (50 ms) in trial k, so that the cancels fall evenly between two reports, and the time
   until run() returns and until the child's pid is gone is measured, `--trials` times per
   handler. A stubborn child is stopped with
   SIGKILL after GRACE_S.

Every wait is bounded: a run gives up after `--max-seconds`. Without --record the tables
are only printed; with it they go to docs/benchmarks.md (section "worker executors"), or to
`--results FILE`. Not a test: nothing is asserted about the figures.
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
import mwcluster.testing.handlers  # noqa: E402,F401  (registers testing.* in REGISTRY)
from mwcluster.config import load_worker_config  # noqa: E402
from mwcluster.core import worker_machine as wm  # noqa: E402
from mwcluster.nodes.worker.executor import GRACE_S, ProcessSlot, process_context  # noqa: E402
from mwcluster.nodes.worker.node import WorkerNode  # noqa: E402
from mwcluster.testing.memory import MemoryMaster, RunningWorker  # noqa: E402
from mwcluster.testing.processes import descendants  # noqa: E402
from mwcluster.worker import REGISTRY, Task  # noqa: E402

SECTION = "worker executors"
MODULES = ["mwcluster.testing.handlers"]
EXECUTORS = ("thread", "process")
STOPPED = ("testing.sleep", "testing.stubborn")
# the tables' headers (the smoke test looks for them)
HEAD_RUNS = "| round | load | slots | executor | tasks | seconds | tasks/s | CPU s per task |"
HEAD_CPU = ("| slots | thread tasks/s | process tasks/s | process / thread "
            "| thread CPU s per task | process CPU s per task |")
HEAD_ECHO = ("| slots | thread tasks/s | process tasks/s | process / thread "
             "| thread ms per task | process ms per task | process - thread |")
HEAD_STOP = ("| handler | trials | run() returned, median | max | child gone, median "
             "| max |")
QUICK = {"rounds": 1, "max_slots": 2, "task_ms": 50.0, "cpu_tasks": 2, "echo_tasks": 50,
         "trials": 1, "max_seconds": 30.0}
TICK_S = os.sysconf("SC_CLK_TCK")
REPORT_S = 0.05      # testing.sleep reports every 50 ms: the cancels' phases spread over it


# --- CPU of this process and its children -----------------------------------------------------

def children_cpu() -> dict[int, float]:
    """CPU seconds of each descendant of this process now in /proc (the forkserver, its
    children)."""
    return {pid: stat.cpu_s for pid, stat in descendants(os.getpid(), zombies=True).items()}


def handler_processes(baseline: set[int]) -> set[int]:
    """Descendants of this process not in `baseline` but for its direct children (the
    forkserver, which lives as long as this process)."""
    me = os.getpid()
    return {pid for pid, stat in descendants(me, zombies=True).items()
            if pid not in baseline and stat.ppid != me}


def cpu_now() -> tuple[float, dict[int, float]]:
    return time.process_time(), children_cpu()


def cpu_used(before, after) -> float:
    own = after[0] - before[0]
    kids = sum(cpu - before[1].get(pid, 0.0) for pid, cpu in after[1].items())
    return own + kids


def alive(pid: int) -> bool:
    """The pid exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def wait_until(predicate, seconds: float, what: str, step: float = 0.005) -> None:
    deadline = time.monotonic() + seconds
    for _ in range(int(seconds / step) + 2):
        if predicate():
            return
        if time.monotonic() >= deadline:
            break
        time.sleep(step)
    if not predicate():
        raise RuntimeError(f"gave up after {seconds:g} s waiting for {what}")


# --- the spin size ----------------------------------------------------------------------------

def calibrate(task_ms: float) -> tuple[int, list[float]]:
    """testing.spin's n for a task of about `task_ms` ms here; (n, its ms in nine runs)."""
    fn = REGISTRY.get("testing.spin")

    def once(n: int) -> float:
        started = time.perf_counter()
        fn(Task(None, {"n": n}, "calibrate", 0, 1), lambda *a, **k: True)
        return time.perf_counter() - started

    n = 200_000
    for tries in (3, 5):           # the cost per iteration grows with n: measure twice
        seconds = statistics.median(once(n) for _ in range(tries))
        n = max(1000, min(10 ** 9, int(n * task_ms / 1000 / seconds)))
    return n, [1000 * once(n) for _ in range(9)]


# --- a throughput run -------------------------------------------------------------------------

def worker_config(executor: str, slots: int, n: int):
    return load_worker_config(env={}, flags={
        "worker_id": f"bench-{executor}-{slots}-{n}", "slots": slots, "executor": executor,
        "handlers": ",".join(MODULES), "heartbeat_ms": 20, "idle_poll_ms": 5,
        "progress_interval_ms": 10, "stop_timeout_s": 10.0})


def job_done(fake: MemoryMaster, job: str) -> bool:
    state = fake.job_state(job)
    if state in ("failed", "cancelled"):
        raise RuntimeError(f"job {job} {state}: {fake.job_status(job).get('failures')}")
    return state == "succeeded"


RUNS = iter(range(1, 1 << 30))


def one_run(executor: str, slots: int, handler: str, params: dict, tasks: int,
            max_seconds: float) -> dict:
    """A fresh MemoryMaster and WorkerNode; the timed job's figures."""
    baseline = set(children_cpu())
    fake = MemoryMaster()
    try:
        node = WorkerNode(worker_config(executor, slots, next(RUNS)), REGISTRY,
                          client_factory=fake.client)
        with RunningWorker(node):
            warm = fake.submit_job("warm-up", "testing.sleep", [None] * slots,
                                   params={"s": 0.1})
            wait_until(lambda: job_done(fake, warm), max_seconds, "the warm-up job")
            before = cpu_now()
            started = time.perf_counter()
            job = fake.submit_job("timed", handler, list(range(tasks)), params=params)
            wait_until(lambda: job_done(fake, job), max_seconds, f"the {handler} job")
            seconds = time.perf_counter() - started
            after = cpu_now()        # before the worker stops: its children still run
        if node.exit_code != 0:
            raise RuntimeError(f"the worker exited with {node.exit_code}")
    finally:
        fake.close()
    # the handlers' processes of this run end with its slots; wait, so they cost no later run
    wait_until(lambda: not handler_processes(baseline), 30, "the handlers' processes to end")
    return {"executor": executor, "slots": slots, "tasks": tasks, "seconds": seconds,
            "tasks_per_s": tasks / seconds, "cpu_per_task": cpu_used(before, after) / tasks}


def throughput(args, n: int) -> list[dict]:
    runs = []
    cpu_slots = list(range(1, args.max_slots + 1))
    for r in range(args.rounds):
        order = EXECUTORS if r % 2 == 0 else EXECUTORS[::-1]
        for load, slot_counts in (("spin", cpu_slots), ("echo", [1, 2])):
            for slots in slot_counts:
                for executor in order:
                    if load == "spin":
                        out = one_run(executor, slots, "testing.spin", {"n": n},
                                      args.cpu_tasks * slots, args.max_seconds)
                    else:
                        out = one_run(executor, slots, "testing.echo", {},
                                      args.echo_tasks, args.max_seconds)
                    out.update(round=r + 1, load=load)
                    runs.append(out)
                    print(f"round {r + 1}, {load}, {slots} slot(s), {executor}: "
                          f"{out['tasks_per_s']:,.1f} tasks/s, {out['cpu_per_task']:.4f} CPU "
                          f"s per task", flush=True)
    return runs


# --- from cancel to stopped -------------------------------------------------------------------

def start(name: str, params=None) -> wm.Start:
    return wm.Start("bench-job", 0, 1, name, None, params)


def one_stop(slot: ProcessSlot, name: str, phase_s: float) -> tuple[float, float]:
    """(seconds until run() returned, seconds until the child was gone) after the cancel,
    which comes `phase_s` after the handler's first progress report."""
    ok, child = slot.run(start("testing.pid"), lambda: True, lambda p, c: None)
    if not ok:
        raise RuntimeError(f"testing.pid failed: {child}")
    cancel, running = threading.Event(), threading.Event()
    out: dict = {}

    def go():
        try:
            out["r"] = slot.run(start(name, {"s": 30}), lambda: not cancel.is_set(),
                                lambda p, c: running.set())
        finally:
            out["t"] = time.perf_counter()

    runner = threading.Thread(target=go, daemon=True)
    runner.start()
    try:
        if not running.wait(20):
            raise RuntimeError(f"{name} sent no progress within 20 s")
        time.sleep(phase_s)
        cancelled = time.perf_counter()
        cancel.set()
        runner.join(GRACE_S * 2 + 20)
        if runner.is_alive():
            raise RuntimeError(f"run() of {name} did not return after the cancel")
        returned = out["t"] - cancelled
        wait_until(lambda: not alive(child), 20, f"the {name} child to end", step=0.001)
        gone = time.perf_counter() - cancelled
    finally:
        cancel.set()
        runner.join(GRACE_S * 2 + 20)
    ok, why = out["r"]
    if ok or "no longer this worker's" not in why:
        raise RuntimeError(f"{name}: unexpected outcome {out['r']!r}")
    return returned, gone


def stopping(args) -> dict[str, list[tuple[float, float]]]:
    slot = ProcessSlot(process_context(MODULES), MODULES)
    result: dict[str, list[tuple[float, float]]] = {name: [] for name in STOPPED}
    try:
        for trial in range(args.trials):
            for name in STOPPED:
                phase = REPORT_S * (trial + 0.5) / args.trials
                result[name].append(one_stop(slot, name, phase))
                returned, gone = result[name][-1]
                print(f"stop {trial + 1}, {name}: run() returned after {returned * 1000:.1f} "
                      f"ms, child gone after {gone * 1000:.1f} ms", flush=True)
    finally:
        slot.close()
    return result


# --- the whole run ----------------------------------------------------------------------------

def run_all(args, _root: Path) -> dict:
    n, ms = calibrate(args.task_ms)
    print(f"testing.spin n={n:,}: {statistics.median(ms):.1f} ms per task in this process "
          f"({min(ms):.1f}-{max(ms):.1f} ms over {len(ms)} runs)", flush=True)
    # the forkserver starts once per process: start it before anything is timed
    warm = ProcessSlot(process_context(MODULES), MODULES)
    try:
        warm.run(start("testing.pid"), lambda: True, lambda p, c: None)
    finally:
        warm.close()
    return {"n": n, "spin_ms": ms, "runs": throughput(args, n), "stops": stopping(args)}


# --- the report -------------------------------------------------------------------------------

def rows(runs: list[dict], load: str, slots: int, executor: str) -> list[dict]:
    return [x for x in runs if x["load"] == load and x["slots"] == slots
            and x["executor"] == executor]


def ratio(runs: list[dict], load: str, slots: int) -> float:
    """The median over the rounds of process / thread tasks/s."""
    per_round = {}
    for x in runs:
        if x["load"] == load and x["slots"] == slots:
            per_round.setdefault(x["round"], {})[x["executor"]] = x["tasks_per_s"]
    return statistics.median(r["process"] / r["thread"] for r in per_round.values())


def med(runs: list[dict], load: str, slots: int, executor: str, field: str) -> float:
    return statistics.median(x[field] for x in rows(runs, load, slots, executor))


def ms(seconds: float) -> str:
    return f"{seconds * 1000:,.1f} ms"


def tables(result: dict, args) -> list[str]:
    runs = result["runs"]
    rounds = max(x["round"] for x in runs)
    one_slot = [x["seconds"] / x["tasks"] for x in runs if x["load"] == "spin"
                and x["slots"] == 1]
    spin = result["spin_ms"]
    lines = [f"testing.spin with n={result['n']:,}: {statistics.median(spin):.1f} ms per task "
             f"(median; {min(spin):.1f} to {max(spin):.1f} ms over {len(spin)} runs) when "
             f"timed alone in the benchmark's process before the runs, "
             f"{statistics.median(one_slot) * 1000:.1f} ms (median) per task in the 1-slot "
             f"runs; {args.cpu_tasks} tasks per slot. "
             f"testing.echo: {args.echo_tasks:,} tasks. Each run:", "", HEAD_RUNS,
             "|---" * 8 + "|"]
    for x in runs:
        lines.append(f"| {x['round']} | {x['load']} | {x['slots']} | {x['executor']} | "
                     f"{x['tasks']:,} | {x['seconds']:.2f} | {x['tasks_per_s']:,.1f} | "
                     f"{x['cpu_per_task']:.4f} |")
    lines += ["", f"CPU-bound (testing.spin), medians over the {rounds} round(s); process / "
              "thread is the median of the per-round ratios of tasks/s:", "", HEAD_CPU,
              "|---" * 6 + "|"]
    for slots in sorted({x["slots"] for x in runs if x["load"] == "spin"}):
        lines.append(f"| {slots} | {med(runs, 'spin', slots, 'thread', 'tasks_per_s'):,.2f} | "
                     f"{med(runs, 'spin', slots, 'process', 'tasks_per_s'):,.2f} | "
                     f"{ratio(runs, 'spin', slots):.2f} | "
                     f"{med(runs, 'spin', slots, 'thread', 'cpu_per_task'):.4f} | "
                     f"{med(runs, 'spin', slots, 'process', 'cpu_per_task'):.4f} |")
    lines += ["", f"Per-task overhead (testing.echo), medians over the {rounds} round(s); ms "
              "per task is 1 / (tasks/s), the wall time per task of the whole worker:", "",
              HEAD_ECHO, "|---" * 7 + "|"]
    for slots in sorted({x["slots"] for x in runs if x["load"] == "echo"}):
        thread = med(runs, "echo", slots, "thread", "tasks_per_s")
        process = med(runs, "echo", slots, "process", "tasks_per_s")
        lines.append(f"| {slots} | {thread:,.0f} | {process:,.0f} | "
                     f"{ratio(runs, 'echo', slots):.2f} | {1000 / thread:.3f} | "
                     f"{1000 / process:.3f} | {1000 / process - 1000 / thread:+.3f} ms |")
    stops = result["stops"]
    lines += ["", f"From cancel to stopped (ProcessSlot; GRACE_S = {GRACE_S:g} s), over "
              f"{args.trials} trial(s) per handler:", "", HEAD_STOP, "|---" * 6 + "|"]
    for name in STOPPED:
        returned = [r for r, _g in stops[name]]
        gone = [g for _r, g in stops[name]]
        lines.append(f"| {name} | {len(returned)} | {ms(statistics.median(returned))} | "
                     f"{ms(max(returned))} | {ms(statistics.median(gone))} | "
                     f"{ms(max(gone))} |")
    return lines


def command(args) -> str:
    parts = ["python benchmarks/bench_executor.py"]
    if args.quick:
        parts.append("--quick")
    else:
        parts += [f"--rounds {args.rounds}", f"--max-slots {args.max_slots}",
                  f"--task-ms {args.task_ms:g}", f"--cpu-tasks {args.cpu_tasks}",
                  f"--echo-tasks {args.echo_tasks}", f"--trials {args.trials}",
                  f"--max-seconds {args.max_seconds:g}"]
    return " ".join(parts + ["--record"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5,
                    help="rounds of (thread, process), the order alternated")
    ap.add_argument("--max-slots", type=int, default=max(2, os.cpu_count() or 1),
                    help="CPU-bound runs for 1..this many slots")
    ap.add_argument("--task-ms", type=float, default=75.0,
                    help="testing.spin is sized to take about this long per task")
    ap.add_argument("--cpu-tasks", type=int, default=16, help="CPU-bound tasks per slot")
    ap.add_argument("--echo-tasks", type=int, default=2000, help="testing.echo tasks per run")
    ap.add_argument("--trials", type=int, default=5,
                    help="cancel-to-stopped trials per handler")
    ap.add_argument("--max-seconds", type=float, default=60.0,
                    help="any one job gives up after this long")
    args = common.parse_run_options(ap, QUICK)
    if min(args.rounds, args.max_slots, args.cpu_tasks, args.echo_tasks, args.trials) < 1 or \
            args.max_slots > 256 or not 1 <= args.task_ms <= 10_000 or args.max_seconds <= 0:
        ap.error("counts must be at least 1, --max-slots at most 256, --task-ms within "
                 "1..10000, --max-seconds positive")
    result, body, load = common.measured("bench-executor-", run_all, args,
                                         lambda result: tables(result, args))
    if not args.record:
        return
    cores = os.cpu_count()
    setup = [
        "Thread against process executor, alternated in one run: each run is a fresh "
        "in-memory master (MemoryMaster) and a WorkerNode on a thread of the benchmark's "
        "process, timed from the job's submission until the master has it succeeded, after a "
        "warm-up job that gives the process slots their children (benchmarks/bench_executor.py "
        "says exactly how). CPU s per task is the CPU of the benchmark's process (worker, fake "
        "master, poll) and of its child processes over the timed job, divided by the tasks. "
        f"On this {cores}-core machine everything shares the {cores} cores: the worker "
        "(its owner thread and handler threads), the handlers' child processes, the fake "
        "master and the benchmark's poll. A thread worker runs Python handlers one at a "
        "time under one GIL whatever its slots, so its CPU-bound tasks/s cannot grow with "
        f"the slots; process slots can each take a core, so {cores} slots can at best reach "
        f"{cores} times one slot, and the worker's loop and the master take their share from "
        "the same cores: the process / thread ratio at the top slot count is likely lower than "
        "on a machine with cores to spare, and the per-task overhead (the pipe "
        "round trip, pickling, the hand-offs between the worker's threads) is paid on the "
        "cores the handlers use. The stop figures hardly depend on the load: a cancel is "
        "seen when the slot's poll wakes (a progress report from the child, every 50 ms "
        "for testing.sleep, or POLL_S), then the child gets SIGTERM; one that ignores it "
        "gets SIGKILL after GRACE_S.", ""]
    common.record_run(args, SECTION, command(args), setup + body + ["", load])


if __name__ == "__main__":
    main()
