"""A worker's status map, assembled from its machine without I/O.

Two steps, so that no thread ever reads a structure another one changes:

- `snapshot(machine, shell, now_ms)` runs on the worker's owner thread after each batch of
  events: it copies what the machine knows (registration, slots, the attempts it runs, its
  counters) and what the shell adds (`Shell`: the master endpoint in use, request counters,
  the times of the start and of the last answer from the master) into a fresh dict that
  nobody changes afterwards. Times stay monotonic milliseconds (`*_at_ms`).
- `render(snap, now_ms)` runs on whichever thread answers (the status endpoint's, the
  metrics server's): a new dict with the times turned into ages at `now_ms`, so an idle
  worker's status still tells how long ago it last heard from its master.

The rendered map is what STATUS on the worker's status endpoint answers (docs/protocol.md,
"A worker's status").
"""

from __future__ import annotations

from typing import Any, NamedTuple

# counters of the machine, named as in the status map
MACHINE_COUNTERS = ("tasks_started", "tasks_succeeded", "tasks_failed", "tasks_dropped",
                    "tasks_abandoned", "tasks_timed_out", "progress_sent", "progress_coalesced", "registrations",
                    "reconnects")


class Shell(NamedTuple):
    """What the I/O shell knows and the machine does not."""
    master_endpoint: str          # the endpoint the worker's Client uses now
    started_at_ms: int            # the worker's start (monotonic ms)
    last_exchange_at_ms: int | None   # the last answer from the master, success or refusal
    requests_timed_out: int       # requests the master left unanswered after every retry
    requests_refused: int         # error answers other than stale attempts
    status_endpoint: str | None
    metrics_port: int | None
    pid: int


def snapshot(machine, shell: Shell, now_ms: int) -> dict[str, Any]:
    """An immutable copy of the status at now_ms (owner thread). `machine` is a
    core.worker_machine.WorkerMachine."""
    tasks = []
    for (job_id, index), run in sorted(machine.running.items()):
        latest = run.latest
        tasks.append({
            "job_id": job_id, "index": index, "attempt": run.attempt, "handler": run.handler,
            # run.latest is replaced whole on each report, never changed in place
            "progress": latest[0] if latest else None,
            "counters": latest[1] if latest else {},
            "started_at_ms": run.started_ms, "reported_at_ms": run.reported_ms,
        })
    counters = machine.counters
    return {
        "role": "worker", "worker_id": machine.worker_id, "pid": shell.pid,
        "registered": machine.registered, "registering": machine.registering,
        "stopping": machine.stopping, "master_endpoint": shell.master_endpoint,
        "epoch": machine.epoch, "slots": machine.slots, "free_slots": machine.free_slots(),
        "tasks_running": len(tasks), "tasks": tasks,
        "finishes_unreported": len(machine.outbox),
        "dropped_handlers_running": len(machine.zombies),
        "heartbeat_ms": machine.heartbeat_ms,
        **{name: counters.get(name, 0) for name in MACHINE_COUNTERS},
        "requests_timed_out": shell.requests_timed_out,
        "requests_refused": shell.requests_refused,
        "status_endpoint": shell.status_endpoint, "metrics_port": shell.metrics_port,
        "started_at_ms": shell.started_at_ms,
        "last_exchange_at_ms": shell.last_exchange_at_ms,
        "snapshot_at_ms": now_ms,
    }


def _age_s(now_ms: int, at_ms: int | None) -> float | None:
    return None if at_ms is None else round(max(0, now_ms - at_ms) / 1000, 3)


def render(snap: dict[str, Any], now_ms: int) -> dict[str, Any]:
    """The status map at now_ms, from a snapshot (any thread; `snap` is not changed)."""
    if not snap:
        return {"role": "worker", "starting": True}
    out = {k: v for k, v in snap.items()
           if k not in ("tasks", "started_at_ms", "last_exchange_at_ms", "snapshot_at_ms")}
    out["tasks"] = [
        {**{k: v for k, v in task.items() if not k.endswith("_at_ms")},
         "running_s": _age_s(now_ms, task["started_at_ms"]),
         "last_progress_age_s": _age_s(now_ms, task["reported_at_ms"])}
        for task in snap["tasks"]]
    out["uptime_s"] = _age_s(now_ms, snap["started_at_ms"])
    out["last_exchange_age_s"] = _age_s(now_ms, snap["last_exchange_at_ms"])
    out["snapshot_age_s"] = _age_s(now_ms, snap["snapshot_at_ms"])
    return out
