"""Watching jobs: a live rich progress bar per job and one overall, fed by JOB_STATUS.

Used by `mwcluster job wait` and `mwcluster demo`. The watcher polls the master; when the
master does not answer (it is restarting) it says so and keeps polling, so a wait survives a
master restart.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable

from rich.console import Console
from rich.progress import (BarColumn, Progress, TaskProgressColumn, TextColumn,
                           TimeElapsedColumn)

from mwcluster.errors import MwclusterError, RequestTimeout, ShuttingDown

FINISHED = ("succeeded", "failed", "cancelled")

__all__ = ["FINISHED", "describe_counts", "watch_jobs"]


def describe_counts(status: dict) -> str:
    counts = status.get("counts", {})
    order = ("running", "assigned", "pending", "succeeded", "failed", "cancelled")
    return ", ".join(f"{counts[s]} {s}" for s in order if counts.get(s))


def _done(status: dict) -> int:
    return sum(status.get("counts", {}).get(s, 0) for s in FINISHED)


def _fields(status: dict) -> dict[str, Any]:
    rate = status.get("rate_per_s") or 0.0
    eta = status.get("eta_s")
    extra = f"{_done(status)}/{status.get('tasks', 0)} tasks, {rate:.1f}/s"
    if eta is not None and status.get("state") not in FINISHED:
        extra += f", ETA {eta:.0f} s"
    return {"state": status.get("state", "?"), "extra": extra}


def watch_jobs(client: Any, job_ids: list[str], *, console: Console | None = None,
               poll_s: float = 0.25, timeout_s: float | None = None,
               on_poll: Callable[[dict[str, dict]], None] | None = None,
               transient: bool = False) -> dict[str, dict]:
    """Show progress until every job is finished (or `timeout_s` passes); return the last
    status of each job. `on_poll(statuses)` is called after every poll (the demo uses it to
    inject its faults at the right moments)."""
    console = console or Console()
    statuses: dict[str, dict] = {}
    columns = (TextColumn("{task.description:<28}"), BarColumn(), TaskProgressColumn(),
               TextColumn("{task.fields[state]:<9} {task.fields[extra]}"),
               TimeElapsedColumn())
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    pause = threading.Event()
    note = ""
    with Progress(*columns, console=console, transient=transient, refresh_per_second=8) as bar:
        rows: dict[str, int] = {}
        overall = None
        while True:
            try:
                for job_id in job_ids:
                    statuses[job_id] = client.job_status(job_id)
                if note:
                    console.log("the master answers again")
                    note = ""
            except (RequestTimeout, ShuttingDown) as exc:
                if not note:
                    note = str(exc)
                    console.log(f"[yellow]the master does not answer ({exc}); still waiting")
            for job_id in job_ids:
                status = statuses.get(job_id)
                if status is None:
                    continue
                total = max(1, status.get("tasks", 0))
                # The bar follows the tasks' reported progress, so running tasks move it.
                completed = (1.0 if status.get("state") in FINISHED
                             else status.get("progress", 0.0)) * total
                if job_id not in rows:
                    rows[job_id] = bar.add_task(f"{job_id} {status.get('name', '')}"[:28],
                                                total=total, **_fields(status))
                bar.update(rows[job_id], completed=completed, **_fields(status))
            if len(job_ids) > 1 and statuses:
                total = sum(s.get("tasks", 0) for s in statuses.values())
                done = sum(_done(s) for s in statuses.values())
                if overall is None:
                    overall = bar.add_task("overall", total=max(1, total), state="",
                                           extra="")
                bar.update(overall, completed=done, total=max(1, total),
                           extra=f"{done}/{total} tasks")
            if on_poll is not None:
                on_poll(statuses)
            if len(statuses) == len(job_ids) and all(
                    s.get("state") in FINISHED for s in statuses.values()):
                return statuses
            if deadline is not None and time.monotonic() > deadline:
                raise MwclusterError(f"the jobs did not finish within {timeout_s} s")
            pause.wait(poll_s)
