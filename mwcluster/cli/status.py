"""`mwcluster status`: the master's status, its checkpoint nodes' and its workers', as tables
(rich) or one JSON object. The nodes and workers to ask are those named with --checkpoint and
--worker, and those the master lists (`checkpoint_nodes`, `worker_nodes`); each is asked with
a short timeout (the workers in parallel), and one that does not answer is shown as
unreachable, never an error.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import click

from mwcluster.cli.common import cli_credentials, connect, dumps, master_option, timeout_option
from mwcluster.errors import MwclusterError, RequestTimeout

STATUS_ORDER = ("epoch", "txid", "durable_txid", "loss_window_s", "buffered_bytes",
                "journal_bytes", "journal_segments", "last_snapshot_txid",
                "last_snapshot_age_s", "requests_per_s", "uptime_s", "recovery_s", "peers",
                "durability")


def format_status_value(name: str, value: Any) -> str:
    """One status value for people: sizes in KiB/MiB, durations in ms or s, digests in hex."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int) and "digest" in name:
        return f"{value:016x}"
    if name.endswith("_bytes") and isinstance(value, int):
        size, unit = float(value), "B"
        for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
            if size < 1024 or unit == "TiB":
                break
            size /= 1024
        return f"{value:,}" if unit == "B" else f"{size:.1f} {unit} ({value:,})"
    if isinstance(value, (int, float)) and name.endswith("_per_s"):
        return f"{value:,.1f}"
    if isinstance(value, (int, float)) and name.endswith("_s"):
        return f"{value * 1000:.1f} ms" if abs(value) < 1 else f"{value:,.2f} s"
    if isinstance(value, (int, float)) and name.endswith("_ms"):
        return f"{value:,.1f} ms"
    if isinstance(value, float):
        return f"{value:,.3f}"
    if isinstance(value, int):
        return f"{value:,}" if name.endswith("_total") else str(value)
    if isinstance(value, (dict, list, tuple, bytes)):
        return dumps(value, sort_keys=True)
    return str(value)


def status_rows(info: dict) -> list[tuple[str, str]]:
    """(name, text) rows: the known fields first, then the rest by name; the fields of a
    nested map (e.g. `recovery`) become rows of their own, `recovery.seconds`."""
    names = [n for n in STATUS_ORDER if n in info] + sorted(
        (n for n in info if n not in STATUS_ORDER), key=str)
    rows = []
    for name in names:
        value = info[name]
        if isinstance(value, dict):
            for sub in sorted(value, key=str):
                rows.append((f"{name}.{sub}", format_status_value(str(sub), value[sub])))
        else:
            rows.append((str(name), format_status_value(str(name), value)))
    return rows


# per checkpoint node or worker: one that does not answer must not hold the rest up
NODE_TIMEOUT_S = 1.0
MAX_PARALLEL = 16


def ask_status(endpoint: str, source: str, timeout_s: float, credentials=None,
               server_key: str | None = None) -> dict[str, Any]:
    """The STATUS at a node's status endpoint, as {endpoint, source, reachable, error,
    status}: an unreachable node is reported as such, never raised."""
    from mwcluster.client import Client

    entry: dict[str, Any] = {"endpoint": endpoint, "source": source, "reachable": False,
                             "error": None, "status": None}
    if credentials is not None and server_key:   # a worker serves with its own key
        credentials = credentials._replace(server_key=server_key.encode())
    try:
        with Client(endpoint, timeout_s=timeout_s, retries=0,
                    credentials=credentials) as client:
            entry["status"] = client.status()
        entry["reachable"] = True
    except RequestTimeout:
        entry["error"] = f"timeout: no reply within {timeout_s:g} s"
    except MwclusterError as exc:
        entry["error"] = f"{exc.code}: {exc}"
    except ValueError as exc:
        entry["error"] = f"bad endpoint: {exc}"
    return entry


def checkpoint_statuses(endpoints: list[tuple[str, str]], timeout_s: float,
                        credentials=None) -> list[dict]:
    """STATUS of each checkpoint node (ask_status), in the order given."""
    return [ask_status(endpoint, source, timeout_s, credentials)
            for endpoint, source in endpoints]


def checkpoint_endpoints(explicit: tuple[str, ...], master_info: dict | None
                         ) -> list[tuple[str, str]]:
    """(endpoint, source) of the nodes to ask: those named with --checkpoint, then those the
    master heard from (`checkpoint_nodes` in its STATUS), without repeats."""
    seen: dict[str, str] = {}
    for item in explicit:
        for endpoint in item.split(","):
            if endpoint.strip():
                seen.setdefault(endpoint.strip(), "option")
    for node in (master_info or {}).get("checkpoint_nodes") or ():
        endpoint = node.get("endpoint") if isinstance(node, dict) else None
        if isinstance(endpoint, str) and endpoint:
            seen.setdefault(endpoint, "master")
    return list(seen.items())


def print_status_table(title: str, info: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, show_header=False, min_width=48)
    table.add_column("field", style="bold")
    table.add_column("value", justify="right")
    for name, text in status_rows(info):
        table.add_row(name, text)
    Console().print(table)


# --- workers ----------------------------------------------------------------------------

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


def _ask_worker(endpoint: str, source: str, worker_id: str | None, timeout_s: float,
                credentials=None, server_key: str | None = None) -> dict:
    entry = ask_status(endpoint, source, timeout_s, credentials, server_key)
    entry["worker_id"] = (entry["status"] or {}).get("worker_id", worker_id)
    return entry


def worker_statuses(endpoints: list[tuple[str, str, str | None]], timeout_s: float,
                    credentials=None, keys: dict[str, str] | None = None) -> list[dict]:
    """STATUS of each worker as {endpoint, source, worker_id, reachable, error, status}, in
    the order given; asked in parallel so that unreachable ones cost one timeout in all.
    With CURVE, a worker's status endpoint serves with the worker's own key: `keys` maps an
    endpoint to it (the master's `worker_nodes` list it)."""
    if not endpoints:
        return []
    keys = keys or {}
    with ThreadPoolExecutor(max_workers=min(MAX_PARALLEL, len(endpoints))) as pool:
        return list(pool.map(lambda e: _ask_worker(*e, timeout_s, credentials,
                                                   keys.get(e[0])), endpoints))


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
    from rich.console import Console
    from rich.table import Table

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


# --- the command ---------------------------------------------------------------------------


@click.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON object (for scripts).")
@click.option("--checkpoint", "checkpoints", multiple=True, metavar="ENDPOINT",
              help="Also show this checkpoint node's status (repeatable, or comma-separated). "
                   "The nodes the master knows of are shown too.")
@click.option("--worker", "workers", multiple=True, metavar="ENDPOINT",
              help="Show this worker's status in full, from its status endpoint (repeatable, "
                   "or comma-separated). The workers the master lists are shown in a table.")
@click.option("--no-discover", is_flag=True,
              help="Do not ask the checkpoint nodes and workers the master knows of.")
@master_option
@timeout_option
def status(as_json: bool, checkpoints: tuple[str, ...], workers: tuple[str, ...],
           no_discover: bool, master: str, timeout_s: float) -> None:
    """The master's state (epoch, txids, loss window, journal, snapshots, load, peers), its
    checkpoint nodes' (replica, lag, checkpoints, uploads) and its workers' (registration,
    slots, running tasks, counters, the age of their last answer from the master).

    Checkpoint nodes and workers named with --checkpoint and --worker, and those the master
    lists, are asked with a short timeout; one that does not answer is shown as unreachable.
    With --worker and no --master (nor MWCLUSTER_MASTER), only the workers are asked. The
    exit status is 1 only when the master was asked and cannot be read."""
    from click.core import ParameterSource

    master_error = None
    info = None
    ask_master = not workers or (click.get_current_context().get_parameter_source("master")
                                 is not ParameterSource.DEFAULT)
    try:
        if ask_master:
            with connect(master, timeout_s) as client:
                info = client.status()
    except click.ClickException as exc:
        if not checkpoints and not workers:
            raise
        master_error = exc
    discovered = None if no_discover else info
    creds = cli_credentials()
    nodes = checkpoint_statuses(checkpoint_endpoints(checkpoints, discovered),
                                min(timeout_s, NODE_TIMEOUT_S), creds)
    keys = {n.get("status_endpoint"): n.get("status_key")
            for n in (discovered or {}).get("worker_nodes") or () if isinstance(n, dict)}
    worker_entries = worker_statuses(worker_endpoints(workers, discovered),
                                     min(timeout_s, NODE_TIMEOUT_S), creds, keys)
    if as_json:
        out = dict(info or ({"error": master_error.message if master_error else None}
                            if ask_master else {}))
        if checkpoints or nodes:
            out["checkpoint_node_status"] = nodes
        if workers or worker_entries:
            out["worker_status"] = worker_entries
        click.echo(dumps(out, sort_keys=True, indent=2))
    else:
        if info is not None:
            print_status_table(f"master at {master}", info)
        for node in nodes:
            if node["reachable"]:
                print_status_table(f"checkpoint node at {node['endpoint']} (from "
                                   f"{node['source']})", node["status"])
            else:
                click.echo(f"checkpoint node at {node['endpoint']} (from {node['source']}): "
                           f"unreachable ({node['error']})")
        if any(entry["source"] == "master" for entry in worker_entries):
            print_workers_table(worker_entries)
        for entry in worker_entries:
            if entry["source"] == "option":
                print_worker_detail(entry)
    if master_error is not None:
        raise master_error
