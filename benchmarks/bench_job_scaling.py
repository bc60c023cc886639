"""How the master's job path scales with what it holds, in-process (no network): the request
handlers (nodes/master_handlers.Handlers) on an Engine, driven with encoded request frames
exactly as the master's loop hands them over, so each figure is time the loop is held.

1. TASK_REQUEST with finished jobs kept: assignments per second while one job of --tasks
   tasks runs on --workers workers (--slots each: every round each worker asks for its free
   slots, then its tasks are finished, untimed), with no finished jobs and with
   --finished-jobs finished one-task jobs kept in the state (--repeat runs of each,
   alternated; the median).
2. JOB_SUBMIT of one job of --submit-tasks tasks (inputs 0..n-1, empty params, as
   `bench_jobs.py` submits): the time `Handlers.handle` holds the loop, and a cProfile of
   one more submit split by where the time goes (request decoding, admission and encoding,
   apply, the rest), with the garbage collector as the master runs it (frozen after start).

Prints figures and records them in docs/benchmarks.md (section "job scaling"). Bounded: the
rounds stop after --max-seconds per configuration.

    python benchmarks/bench_job_scaling.py [--finished-jobs 10000] [--no-record]
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import os
import pstats
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import record_section  # noqa: E402
from mwcluster.core import records as r  # noqa: E402
from mwcluster.engine import Engine  # noqa: E402
from mwcluster.nodes.master_handlers import Handlers  # noqa: E402
from mwcluster.nodes.metrics import MasterStats  # noqa: E402
from mwcluster.wire.protocol import Op, decode_reply, encode_request  # noqa: E402

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
            h.handle(b"peer", frames(Op.WORKER_REGISTER, [w, "", args.slots]))
        h.handle(b"peer", frames(Op.JOB_SUBMIT, ["running", "bench", "bench:noop", 0, 3,
                                                 [[i, {}] for i in range(args.tasks)]]))
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
                                                              [w, args.slots])))
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
                                                              None]))
        jobs = len(engine.state.jobs.jobs)
    finally:
        gc.unfreeze()
        engine.close()
    return {"finished": finished, "jobs": jobs, "assigned": assigned, "rounds": rounds,
            "per_s": assigned / spent if spent else 0.0,
            "per_cpu_s": assigned / cpu if cpu else 0.0,
            "us_per_request": 1e6 * spent / (rounds * args.workers) if rounds else 0.0}


def _own(stats: pstats.Stats, *names: str) -> float:
    """Cumulative seconds of the profiled functions whose name ends with one of `names`."""
    total = 0.0
    for (path, _line, func), (_cc, _nc, _tt, ct, _callers) in stats.stats.items():
        if any(f"{Path(path).stem}.{func}" == n for n in names):
            total += ct
    return total


def bench_submit(base: Path, args) -> dict:
    engine, h = open_master(base, "submit")
    frames = Frames()
    tasks = [[i, {}] for i in range(args.submit_tasks)]
    try:
        gc.freeze()
        held = []
        cpu = []
        for n in range(args.submits):
            frame = frames(Op.JOB_SUBMIT, [f"big-{n}", "bench", "bench:noop", 0, 3, tasks])
            t0, c0 = time.perf_counter(), time.thread_time()
            reply = decode_reply(h.handle(b"peer", frame))
            held.append(time.perf_counter() - t0)
            cpu.append(time.thread_time() - c0)
            assert reply.status == 0, reply
        frame = frames(Op.JOB_SUBMIT, ["profiled", "bench", "bench:noop", 0, 3, tasks])
        profile = cProfile.Profile()
        profile.enable()
        h.handle(b"peer", frame)
        profile.disable()
        stats = pstats.Stats(profile)
        total = stats.total_tt
        parts = {
            "decode the request (msgpack)": _own(stats, "protocol.decode_request"),
            "admission checks and the record's encoding": _own(stats,
                                                              "records.check_admission"),
            "apply (tasks, pending set, digest)": _own(stats, "state.apply"),
        }
        parts["the rest (journal append, reply, garbage collector...)"] = \
            total - sum(parts.values())
    finally:
        gc.unfreeze()
        engine.close()
    return {"held": held, "cpu": cpu, "frame_bytes": len(frame), "profile_total": total, "parts": parts}


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
    args = parser.parse_args()

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
    for part, seconds in sub["parts"].items():
        print(f"  {part}: {seconds:.3f} s of {sub['profile_total']:.3f} s (profiled)")
    if args.no_record:
        return
    ratio = many["per_s"] / none["per_s"] if none["per_s"] else 0.0
    rows = "\n".join(f"| {part} | {seconds * 1000:.0f} ms |"
                     for part, seconds in sub["parts"].items())
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

With {args.finished_jobs:,} finished jobs the rate is {ratio:.2f} times the rate without.

**JOB_SUBMIT of {args.submit_tasks:,} tasks** ({sub['frame_bytes']:,}-byte request; the
garbage collector frozen after start, as the master does): the loop was held min
{held[0]:.3f} s, median {held[len(held) // 2]:.3f} s, max {held[-1]:.3f} s over {len(held)}
submits (the loop thread's CPU time: min {cpu[0]:.3f} s, median {cpu[len(cpu) // 2]:.3f} s; on
a busy machine the wall time also counts waiting for a core). One more submit under cProfile ({sub['profile_total']:.3f} s with the profiler's
overhead), by where the time went:

| part | time (profiled) |
|---|---|
{rows}
"""
    record_section(SECTION, command, body)


if __name__ == "__main__":
    main()
