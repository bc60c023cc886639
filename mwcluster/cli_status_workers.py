"""The workers in `mwcluster status`: which status endpoints to ask (named with --worker, and
those the master lists in `worker_nodes`), asking them in parallel with a short timeout each
(an unreachable worker is shown as such, never an error), and their tables (rich).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from mwcluster.errors import MwclusterError, RequestTimeout

WORKER_TIMEOUT_S = 1.0     # per worker: one that does not answer must not hold the rest up
MAX_PARALLEL = 16


def worker_endpoints(explicit: tuple[str, ...], master_info: dict | None
                     ) -> list[tuple[str, str, str | None]]:
    """(endpoint, source, worker id the master knows it by) of the workers to ask: those
    named with --worker first, then those in the master's `worker_nodes`, without repeats."""
    seen: dict[str, tuple[str, str | None]] = {}
    for item in explicit:
        for endpoint in item.split(","):
            if endpoint.strip():
                seen.setdefault(endpoint.strip(), ("option", None))
    for node in (master_info or {}).get("worker_nodes") or ():
        if not isinstance(node, dict):
            continue
        endpoint = node.get("status_endpoint")
        if isinstance(endpoint, str) and endpoint:
            if endpoint in seen:
                seen[endpoint] = (seen[endpoint][0], node.get("worker_id"))
            else:
                seen[endpoint] = ("master", node.get("worker_id"))
    return [(endpoint, source, wid) for endpoint, (source, wid) in seen.items()]


def _ask(endpoint: str, source: str, worker_id: str | None, timeout_s: float) -> dict:
    from mwcluster.client import Client

    entry: dict[str, Any] = {"endpoint": endpoint, "source": source, "worker_id": worker_id,
                             "reachable": False, "error": None, "status": None}
    try:
        with Client(endpoint, timeout_s=timeout_s, retries=0) as client:
            entry["status"] = client.status()
        entry["reachable"] = True
        entry["worker_id"] = entry["status"].get("worker_id", worker_id)
    except RequestTimeout:
        entry["error"] = f"timeout: no reply within {timeout_s:g} s"
    except MwclusterError as exc:
        entry["error"] = f"{exc.code}: {exc}"
    except ValueError as exc:
        entry["error"] = f"bad endpoint: {exc}"
    return entry


def worker_statuses(endpoints: list[tuple[str, str, str | None]], timeout_s: float
                    ) -> list[dict]:
    """STATUS of each worker as {endpoint, source, worker_id, reachable, error, status}, in
    the order given; asked in parallel so that unreachable ones cost one timeout in all."""
    if not endpoints:
        return []
    with ThreadPoolExecutor(max_workers=min(MAX_PARALLEL, len(endpoints))) as pool:
        return list(pool.map(lambda e: _ask(*e, timeout_s), endpoints))


def _age(value: Any) -> str:
    return "-" if value is None else f"{value:,.1f} s"


def worker_row(entry: dict) -> list[str]:
    """One line of the workers table."""
    wid = entry["worker_id"] or "?"
    if not entry["reachable"]:
        return [wid, entry["endpoint"], "unreachable"] + ["-"] * 8
    s = entry["status"]
    state = ("stopping" if s.get("stopping") else "registered" if s.get("registered")
             else "registering" if s.get("registering") else "not registered")
    return [wid, entry["endpoint"], state, str(s.get("epoch")),
            f"{s.get('free_slots')}/{s.get('slots')}", str(s.get("tasks_running")),
            str(s.get("tasks_succeeded")), str(s.get("tasks_failed")),
            str((s.get("tasks_dropped") or 0) + (s.get("tasks_abandoned") or 0)),
            _age(s.get("last_exchange_age_s")), _age(s.get("uptime_s"))]


def print_workers_table(entries: list[dict]) -> None:
    import click
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"workers ({len(entries)})")
    for name in ("worker", "status endpoint", "state", "epoch", "free/slots", "running",
                 "succeeded", "failed", "given up", "last answer", "uptime"):
        table.add_column(name, justify="left" if name in ("worker", "status endpoint", "state")
                         else "right")
    for entry in entries:
        table.add_row(*worker_row(entry))
    Console().print(table)
    for entry in entries:
        if not entry["reachable"] and entry["source"] != "option":   # those get a detail
            click.echo(f"worker {entry['worker_id'] or ''} at {entry['endpoint']}: "
                       f"unreachable ({entry['error']})".replace("  ", " "))


def print_worker_detail(entry: dict) -> None:
    """A worker named with --worker: every field, then its running tasks."""
    import click
    from rich.console import Console
    from rich.table import Table

    from mwcluster.cli_client import print_status_table

    title = f"worker {entry['worker_id'] or ''} at {entry['endpoint']}".replace("  ", " ")
    if not entry["reachable"]:
        click.echo(f"{title}: unreachable ({entry['error']})")
        return
    status = entry["status"]
    print_status_table(title, {k: v for k, v in status.items() if k != "tasks"})
    tasks = status.get("tasks") or []
    table = Table(title=f"tasks running on {entry['worker_id']} ({len(tasks)})")
    for name in ("job", "index", "attempt", "handler", "progress", "counters", "running",
                 "last progress"):
        table.add_column(name)
    for task in tasks:
        progress = task.get("progress")
        table.add_row(str(task.get("job_id")), str(task.get("index")),
                      str(task.get("attempt")), str(task.get("handler")),
                      "-" if progress is None else f"{progress:.1%}",
                      ", ".join(f"{k}={v}" for k, v in sorted((task.get("counters")
                                                                or {}).items())) or "-",
                      _age(task.get("running_s")), _age(task.get("last_progress_age_s")))
    Console().print(table)
