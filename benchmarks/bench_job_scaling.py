"""How the master's job path scales with what it holds, in-process (no network): the request
handlers (nodes/master/handlers.Handlers) on an Engine, driven with encoded request frames
exactly as the master's loop hands them over, so each figure is time the loop is held.

1. TASK_REQUEST with finished jobs kept: assignments per second while one job of --tasks
   tasks runs on --workers workers (--slots each: every round each worker asks for its free
   slots, then its tasks are finished, untimed), with no finished jobs and with
   --finished-jobs finished one-task jobs kept in the state (--repeat runs of each,
   alternated; the median).
2. JOB_SUBMIT of one job of --submit-tasks tasks (inputs 0..n-1, empty params, as
   `bench_jobs.py` submits), --submits times: the time `Handlers.handle` holds the loop (wall
   and thread CPU), the garbage collector's share (gc.callbacks; it runs as in the master,
   frozen after start), and the parts on their own, without the collector: request
   decoding, admission checks and the record's encoding, apply.

Prints figures and records them in docs/benchmarks.md (section "job scaling"). Bounded: the
rounds stop after --max-seconds per configuration.

With --real-master, only: --submits JOB_SUBMITs of --submit-tasks tasks to a master process
(MasterProcess, default configuration) while another process sends PING in a loop, printing
the longest PING during each submit: the wait of every other client.

    python benchmarks/bench_job_scaling.py [--finished-jobs 10000] [--no-record]
    python benchmarks/bench_job_scaling.py --real-master [--submits 4]
"""

from __future__ import annotations

import argparse
import gc
import multiprocessing as mp
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import record_section  # noqa: E402
from mwcluster import Client  # noqa: E402
from mwcluster.core import records as r  # noqa: E402
from mwcluster.core.state import State  # noqa: E402
from mwcluster.engine import Engine  # noqa: E402
from mwcluster.nodes.master.handlers import Drain, Handlers  # noqa: E402
from mwcluster.nodes.master.stats import MasterStats  # noqa: E402
from mwcluster.testing import MasterProcess  # noqa: E402
from mwcluster.wire.protocol import (Op, decode_reply, decode_request,  # noqa: E402
                                     encode_request)

SECTION = "job scaling"
CLIENT = b"bench-scaling"


class Frames:
    def __init__(self) -> None:
        self.request_id = 0

    def __call__(self, op: int, args: list) -> bytes:
        self.request_id += 1
        return encode_request(CLIENT, self.request_id, op, args, 1)   # async


def open_master(base: Path, name: str) -> tuple[Engine, Handlers]:
    engine = Engine(base / name, durability="async")
    engine.open()
    clock = iter(range(1, 1 << 62))
    handlers = Handlers(engine, 1, MasterStats(), wall_ms=lambda: next(clock))
    return engine, handlers


def add_finished_jobs(engine: Engine, count: int) -> None:
    """`count` one-task jobs, each run to success by a worker of its own: records straight
    into the engine (their cost is not measured)."""
    if count:
        engine.submit(r.WorkerRegister("filler", "", 1, 0))
    for n in range(count):
        job_id = f"done-{n:06d}"
        engine.submit(r.JobSubmit(job_id, "done", "bench:noop", 0, 1, [[n, {}]], n))
        engine.submit(r.TaskAssign(job_id, 0, "filler", 1, n))
        engine.submit(r.TaskFinish(job_id, 0, 1, True, None, n))


def bench_assign(base: Path, name: str, args, finished: int) -> dict:
    engine, h = open_master(base, name)
    try:
        add_finished_jobs(engine, finished)
        frames = Frames()
        workers = [f"w{i:03d}" for i in range(args.workers)]
        for w in workers:
            h.handle(b"peer", frames(Op.WORKER_REGISTER, [w, "", args.slots]), Drain(0.0))
        h.handle(b"peer", frames(Op.JOB_SUBMIT, ["running", "bench", "bench:noop", 0, 3,
                                                 [[i, {}] for i in range(args.tasks)]]),
                 Drain(0.0))
        gc.collect()    # nothing left over from the previous configuration
        gc.freeze()     # as the master does after recovery
        assigned = 0
        spent = cpu = 0.0
        rounds = 0
        began = time.monotonic()
        while time.monotonic() - began < args.max_seconds:
            got = []
            t0, c0 = time.perf_counter(), time.thread_time()
            for w in workers:
                reply = decode_reply(h.handle(b"peer", frames(Op.TASK_REQUEST,
                                                              [w, args.slots]), Drain(0.0)))
                got.append((w, reply.result))
            spent += time.perf_counter() - t0
            cpu += time.thread_time() - c0
            count = sum(len(tasks) for _, tasks in got)
            if not count:
                break
            assigned += count
            rounds += 1
            for w, tasks in got:
                for job_id, index, attempt, *_ in tasks:
                    h.handle(b"peer", frames(Op.TASK_FINISH, [w, job_id, index, attempt, True,
                                                              None]), Drain(0.0))
        jobs = len(engine.state.jobs.jobs)
    finally:
        gc.unfreeze()
        engine.close()
    return {"finished": finished, "jobs": jobs, "assigned": assigned, "rounds": rounds,
            "per_s": assigned / spent if spent else 0.0,
            "per_cpu_s": assigned / cpu if cpu else 0.0,
            "us_per_request": 1e6 * spent / (rounds * args.workers) if rounds else 0.0}


class GcTimer:
    """Seconds the cyclic garbage collector ran, through gc.callbacks."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.collections = 0
        self._began = 0.0

    def __call__(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._began = time.perf_counter()
        else:
            self.seconds += time.perf_counter() - self._began
            self.collections += 1


def _best_cpu(fn, times: int) -> float:
    """The least thread CPU time of `times` calls (what a call returns is freed untimed)."""
    best = float("inf")
    for _ in range(times):
        c0 = time.thread_time()
        out = fn()
        best = min(best, time.thread_time() - c0)
        del out
    return best


def bench_submit(base: Path, args) -> dict:
    engine, h = open_master(base, "submit")
    frames = Frames()
    tasks = [[i, {}] for i in range(args.submit_tasks)]
    gc_timer = GcTimer()
    try:
        gc.collect()
        gc.freeze()
        gc.callbacks.append(gc_timer)
        held, cpu, in_gc = [], [], []
        for n in range(args.submits):
            frame = frames(Op.JOB_SUBMIT, [f"big-{n}", "bench", "bench:noop", 0, 3, tasks])
            gc_before = gc_timer.seconds
            t0, c0 = time.perf_counter(), time.thread_time()
            reply = decode_reply(h.handle(b"peer", frame, Drain(0.0)))
            held.append(time.perf_counter() - t0)
            cpu.append(time.thread_time() - c0)
            in_gc.append(gc_timer.seconds - gc_before)
            assert reply.status == 0, reply
        gc.callbacks.remove(gc_timer)
        # the parts, each on its own (the best of --submits runs, thread CPU time)
        req = decode_request(frame, 1 << 31)
        rec = r.JobSubmit("parts", *req.args[1:], 1)
        limits = engine.limits
        states = iter([State() for _ in range(args.submits)])
        gc.disable()          # the parts without the collector (its share is measured above)
        parts = {
            "decode the request (msgpack)": _best_cpu(
                lambda: decode_request(frame, 1 << 31), args.submits),
            "admission checks and the record's encoding": _best_cpu(
                lambda: r.check_admission(rec, limits, (CLIENT, 1)), args.submits),
            "apply (tasks, pending set, digest)": _best_cpu(
                lambda: next(states).apply(1, rec), args.submits),
        }
        gc.enable()
    finally:
        if gc_timer in gc.callbacks:
            gc.callbacks.remove(gc_timer)
        gc.enable()
        gc.unfreeze()
        engine.close()
    return {"held": held, "cpu": cpu, "gc": in_gc, "frame_bytes": len(frame), "parts": parts}


def _pinger(endpoint: str, ready, stop, out) -> None:
    with Client(endpoint, timeout_s=60) as client:
        client.ping()
        ready.set()
        worst, count = 0.0, 0
        while not stop.is_set():
            t0 = time.perf_counter()
            client.ping()
            worst = max(worst, time.perf_counter() - t0)
            count += 1
        out.put((worst, count))


def bench_real_master(base: Path, args) -> list[tuple[float, float, int]]:
    """--submits JOB_SUBMITs of --submit-tasks tasks to a master process while another
    process sends PING in a loop: (submit seconds, longest PING, PINGs) per submit."""
    ctx = mp.get_context("fork")
    out = []
    with MasterProcess(base / "real") as master, \
            Client(master.client_endpoint, timeout_s=120) as client:
        inputs = list(range(args.submit_tasks))
        for _ in range(args.submits):
            ready, stop, results = ctx.Event(), ctx.Event(), ctx.Queue()
            proc = ctx.Process(target=_pinger, args=(master.client_endpoint, ready, stop,
                                                     results), daemon=True)
            proc.start()
            try:
                ready.wait(30)
                t0 = time.perf_counter()
                client.submit_job("bench", "bench:noop", inputs)
                took = time.perf_counter() - t0
                stop.set()
                worst, count = results.get(timeout=60)
            finally:
                stop.set()
                proc.join(30)
                if proc.is_alive():
                    proc.kill()
            out.append((took, worst, count))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--finished-jobs", type=int, default=10_000)
    parser.add_argument("--tasks", type=int, default=50_000)
    parser.add_argument("--workers", type=int, default=200)
    parser.add_argument("--slots", type=int, default=8)
    parser.add_argument("--max-seconds", type=float, default=10.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--submit-tasks", type=int, default=100_000)
    parser.add_argument("--submits", type=int, default=5)
    parser.add_argument("--no-record", action="store_true")
    parser.add_argument("--real-master", action="store_true",
                        help="only submit to a master process while another process pings "
                             "it, and print the longest PING per submit (nothing recorded)")
    args = parser.parse_args()

    if args.real_master:
        base = Path(tempfile.mkdtemp(prefix="bench-job-scaling-"))
        try:
            print(f"load average {os.getloadavg()[0]:.2f}")
            for took, worst, count in bench_real_master(base, args):
                print(f"JOB_SUBMIT of {args.submit_tasks:,} tasks: {took:.3f} s at the client "
                      f"(with its encoding); the longest of {count} PINGs meanwhile: "
                      f"{worst:.3f} s")
            print(f"load average {os.getloadavg()[0]:.2f}")
        finally:
            shutil.rmtree(base, ignore_errors=True)
        return

    load = os.getloadavg()[0]
    base = Path(tempfile.mkdtemp(prefix="bench-job-scaling-"))
    try:
        runs: dict[int, list[dict]] = {0: [], args.finished_jobs: []}
        for n in range(args.repeat):      # alternated, so that a busy moment hits both
            for finished in runs:
                runs[finished].append(bench_assign(base, f"assign-{n}-{finished}", args,
                                                   finished))
        none, many = (sorted(runs[f], key=lambda res: res["per_s"])[args.repeat // 2]
                      for f in runs)
        sub = bench_submit(base, args)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    load_after = os.getloadavg()[0]
    for res in (none, many):
        print(f"{res['finished']:,} finished jobs: {res['per_s']:,.0f} assignments/s "
              f"({res['per_cpu_s']:,.0f} per CPU second; "
              f"{res['us_per_request']:.0f} us per TASK_REQUEST, {res['assigned']:,} "
              f"assigned in {res['rounds']} rounds)")
    held = sorted(sub["held"])
    cpu = sorted(sub["cpu"])
    print(f"JOB_SUBMIT of {args.submit_tasks:,} tasks ({sub['frame_bytes']:,} bytes): loop held "
          f"min {held[0]:.3f} s, median {held[len(held) // 2]:.3f} s, max {held[-1]:.3f} s; "
          f"thread CPU min {cpu[0]:.3f} s, median {cpu[len(cpu) // 2]:.3f} s")
    in_gc = sorted(sub["gc"])
    print(f"  of which the garbage collector: median {in_gc[len(in_gc) // 2]:.3f} s")
    for part, seconds in sub["parts"].items():
        print(f"  {part}: {seconds:.3f} s CPU (best of {args.submits}, no collector)")
    if args.no_record:
        return
    ratio = many["per_s"] / none["per_s"] if none["per_s"] else 0.0
    cpu_ratio = many["per_cpu_s"] / none["per_cpu_s"] if none["per_cpu_s"] else 0.0
    rows = "\n".join(f"| {part} | {seconds * 1000:.0f} ms |"
                     for part, seconds in sub["parts"].items())
    in_gc = sorted(sub["gc"])
    command = "python benchmarks/bench_job_scaling.py" + (
        " " + " ".join(sys.argv[1:]) if sys.argv[1:] else "")
    body = f"""In-process: `Handlers.handle` on an Engine (async durability), fed encoded request
frames, so each figure is time the master's loop would be held (the network and the clients
are left out). Load average {load:.2f} before the run, {load_after:.2f} after (2 cores, shared
with other work).

**TASK_REQUEST with finished jobs kept.** One job of {args.tasks:,} tasks, {args.workers}
workers of {args.slots} slots; each round every worker asks for its free slots (timed), then
its tasks are finished (untimed), for at most {args.max_seconds:g} s; {args.repeat} runs of each
configuration, alternated, the median shown.

| finished jobs in the state | assignments/s | per CPU second of the loop | per TASK_REQUEST |
|---|---|---|---|
| 0 | {none['per_s']:,.0f} | {none['per_cpu_s']:,.0f} | {none['us_per_request']:.0f} us |
| {args.finished_jobs:,} | {many['per_s']:,.0f} | {many['per_cpu_s']:,.0f} | {many['us_per_request']:.0f} us |

With {args.finished_jobs:,} finished jobs the rate is {ratio:.2f} times the rate without
({cpu_ratio:.2f} times per CPU second of the loop).

**JOB_SUBMIT of {args.submit_tasks:,} tasks** ({sub['frame_bytes']:,}-byte request; the
garbage collector frozen after start, as the master does): the loop was held min
{held[0]:.3f} s, median {held[len(held) // 2]:.3f} s, max {held[-1]:.3f} s over {len(held)}
submits (the loop thread's CPU time: min {cpu[0]:.3f} s, median {cpu[len(cpu) // 2]:.3f} s; on
a busy machine the wall time also counts waiting for a core), of which the garbage collector
took a median {in_gc[len(in_gc) // 2]:.3f} s (wall). The parts measured on their own, without the
garbage collector (thread CPU, the best of {args.submits}):

| part | CPU time |
|---|---|
{rows}
"""
    record_section(SECTION, command, body)


if __name__ == "__main__":
    main()
