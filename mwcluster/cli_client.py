"""The commands that talk to a running master: put, get, rm, ls, stat, status and bench.

A thin shell over mwcluster.client and mwcluster.bench. Values go in as JSON (or, when VALUE
is not JSON, as a string) and come out as JSON; byte strings, which JSON lacks, are written
`{"$bytes": "<hex>"}` both ways. An error is one line on stderr and exit status 1, as is a
missing key for `get` and `stat`.
"""

from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from typing import Any, Iterator

import click

from mwcluster.errors import MwclusterError

DEFAULT_MASTER = "tcp://127.0.0.1:5550"

master_option = click.option(
    "--master", default=DEFAULT_MASTER, show_default=True, envvar="MWCLUSTER_MASTER",
    metavar="ENDPOINT", help="The master's client endpoint (env MWCLUSTER_MASTER); several "
                             "separated by commas are tried in turn.")
timeout_option = click.option(
    "--timeout", "timeout_s", type=click.FloatRange(0.01), default=3.0, show_default=True,
    help="Seconds to wait for each reply before retrying once on a new connection.")


@contextmanager
def connect(master: str, timeout_s: float) -> Iterator[Any]:
    """A Client for one command; errors become a one-line message and exit status 1."""
    from mwcluster.client import Client

    try:
        with Client(master.split(",") if "," in master else master, timeout_s=timeout_s,
                    retries=1) as client:
            yield client
    except MwclusterError as exc:
        raise click.ClickException(f"{exc.code}: {exc}") from None
    except ValueError as exc:      # a malformed endpoint (zmq reports it as a ValueError)
        raise click.ClickException(f"bad --master {master!r}: {exc}") from None


# --- JSON <-> values ----------------------------------------------------------------------


def parse_value(text: str) -> Any:
    """VALUE as JSON when it parses, else the string itself."""
    try:
        return from_json(json.loads(text))
    except ValueError:
        return text


def from_json(value: Any) -> Any:
    if isinstance(value, dict):
        if len(value) == 1 and isinstance(value.get("$bytes"), str):
            try:
                return bytes.fromhex(value["$bytes"])
            except ValueError:
                pass
        return {k: from_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [from_json(v) for v in value]
    return value


def to_json(value: Any) -> Any:
    """A value as JSON can carry it: bytes as {"$bytes": hex}, map keys as strings."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"$bytes": bytes(value).hex()}
    if isinstance(value, dict):
        return {(k.hex() if isinstance(k, bytes) else k if isinstance(k, str)
                 else json.dumps(k)): to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    return value


def dumps(value: Any, **kw: Any) -> str:
    return json.dumps(to_json(value), ensure_ascii=False, **kw)


# --- commands -----------------------------------------------------------------------------


@click.command()
@click.argument("key")
@click.argument("value")
@click.option("--expected-version", type=click.IntRange(0), default=None,
              help="Only if KEY is at this version (0: only if it does not exist).")
@click.option("--sync", is_flag=True, help="Reply only once the write is fsynced.")
@master_option
@timeout_option
def put(key: str, value: str, expected_version: int | None, sync: bool, master: str,
        timeout_s: float) -> None:
    """Set KEY to VALUE (JSON, or a plain string); print the txid it was logged at."""
    with connect(master, timeout_s) as client:
        txid = client.put(key, parse_value(value), expected_version=expected_version,
                          durability="sync" if sync else None)
    click.echo(txid)


@click.command()
@click.argument("key")
@master_option
@timeout_option
def get(key: str, master: str, timeout_s: float) -> None:
    """Print the value of KEY as JSON; exit 1 if KEY does not exist."""
    with connect(master, timeout_s) as client:
        found = client.get_with_stat(key)
    if found is None:
        click.echo(f"Error: no such key: {key}", err=True)
        sys.exit(1)
    click.echo(dumps(found[0]))


@click.command()
@click.argument("key")
@click.option("--recursive", "-r", is_flag=True, help="Also delete every key below KEY.")
@click.option("--expected-version", type=click.IntRange(1), default=None)
@master_option
@timeout_option
def rm(key: str, recursive: bool, expected_version: int | None, master: str,
       timeout_s: float) -> None:
    """Delete KEY; print the txid it was logged at."""
    with connect(master, timeout_s) as client:
        txid = client.delete(key, recursive=recursive, expected_version=expected_version)
    click.echo(txid)


@click.command()
@click.argument("prefix", default="/")
@click.option("--keys", "as_keys", is_flag=True,
              help="List every key starting with the string PREFIX instead of the names "
                   "directly below the path PREFIX.")
@click.option("--limit", type=click.IntRange(1), default=None, help="Print at most N.")
@master_option
@timeout_option
def ls(prefix: str, as_keys: bool, limit: int | None, master: str, timeout_s: float) -> None:
    """List the names below PREFIX (default "/"), one per line."""
    with connect(master, timeout_s) as client:
        if as_keys:
            for count, key in enumerate(client.iter_keys(prefix), 1):
                click.echo(key)
                if limit is not None and count >= limit:
                    break
        else:
            for name in client.children(prefix, limit):
                click.echo(name)


@click.command()
@click.argument("key")
@click.option("--json", "as_json", is_flag=True)
@master_option
@timeout_option
def stat(key: str, as_json: bool, master: str, timeout_s: float) -> None:
    """Print the version, txids and size of KEY; exit 1 if KEY does not exist."""
    with connect(master, timeout_s) as client:
        found = client.stat(key)
    if found is None:
        click.echo(f"Error: no such key: {key}", err=True)
        sys.exit(1)
    if as_json:
        click.echo(json.dumps({"key": key, **found._asdict()}))
    else:
        for name, value in found._asdict().items():
            click.echo(f"{name:>12}: {value}")


# The status fields people look at first, in this order; the rest follow by name.
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


CHECKPOINT_TIMEOUT_S = 1.0     # per checkpoint node: an unreachable one must not hold us up


def checkpoint_statuses(endpoints: list[tuple[str, str]], timeout_s: float) -> list[dict]:
    """STATUS of each checkpoint node, as {endpoint, source, reachable, error, status}: an
    unreachable node is reported as such, never raised."""
    from mwcluster.client import Client

    out = []
    for endpoint, source in endpoints:
        entry: dict[str, Any] = {"endpoint": endpoint, "source": source, "reachable": False,
                                 "error": None, "status": None}
        try:
            with Client(endpoint, timeout_s=timeout_s, retries=0) as client:
                entry["status"] = client.status()
            entry["reachable"] = True
        except MwclusterError as exc:
            entry["error"] = f"{exc.code}: {exc}"
        except ValueError as exc:
            entry["error"] = f"bad endpoint: {exc}"
        out.append(entry)
    return out


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
    from mwcluster.cli_status_workers import (WORKER_TIMEOUT_S, print_worker_detail,
                                              print_workers_table, worker_endpoints,
                                              worker_statuses)

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
    nodes = checkpoint_statuses(checkpoint_endpoints(checkpoints, discovered),
                                min(timeout_s, CHECKPOINT_TIMEOUT_S))
    worker_entries = worker_statuses(worker_endpoints(workers, discovered),
                                     min(timeout_s, WORKER_TIMEOUT_S))
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


def parse_mix(text: str) -> dict[str, int]:
    from mwcluster.bench import OPS

    mix: dict[str, int] = {}
    for part in text.split(","):
        name, _, weight = part.partition("=")
        name = name.strip()
        if name not in OPS or not weight.strip().isdigit():
            raise click.BadParameter(f"{part!r}: expected OP=WEIGHT with OP one of "
                                     f"{', '.join(OPS)}", param_hint="--mix")
        mix[name] = mix.get(name, 0) + int(weight)
    if sum(mix.values()) <= 0:
        raise click.BadParameter("the weights must not all be 0", param_hint="--mix")
    return mix


@click.command()
@master_option
@click.option("--clients", type=click.IntRange(1, 256), default=2, show_default=True,
              help="Client processes.")
@click.option("--inflight", type=click.IntRange(1, 100_000), default=64, show_default=True,
              help="Requests each client keeps in flight.")
@click.option("--ops", type=click.IntRange(1), default=200_000, show_default=True,
              help="Requests in all (split between the clients).")
@click.option("--batch", type=click.IntRange(1, 1024), default=1, show_default=True,
              help="Requests per message: 1 sends each alone; K > 1 sends BATCH messages of "
                   "up to K (--inflight still counts requests).")
@click.option("--value-bytes", type=click.IntRange(0, 1 << 20), default=64, show_default=True)
@click.option("--mix", default="put=100", show_default=True,
              help="Weights of the operations: put, get, stat, ping (e.g. put=90,get=10).")
@click.option("--durability", type=click.Choice(["async", "sync", "default"]),
              default="async", show_default=True)
@click.option("--keys", type=click.IntRange(1), default=10_000, show_default=True,
              help="How many distinct keys the requests cycle through.")
@click.option("--max-seconds", type=click.FloatRange(0.1), default=120.0, show_default=True,
              help="Stop measuring after this long even if requests remain.")
@click.option("--timeout", "timeout_s", type=click.FloatRange(0.1), default=10.0,
              show_default=True, help="Give up on a client after this long without a reply.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object with the results.")
def bench(master: str, clients: int, inflight: int, ops: int, batch: int, value_bytes: int,
          mix: str, durability: str, keys: int, max_seconds: float, timeout_s: float,
          as_json: bool) -> None:
    """Load a running master and print throughput and latency percentiles."""
    from mwcluster.bench import BenchConfig, print_table, run

    config = BenchConfig(master=master, clients=clients, inflight=inflight, ops=ops,
                         batch=batch, value_bytes=value_bytes, mix=parse_mix(mix),
                         durability=durability, keys=keys, max_seconds=max_seconds,
                         timeout_s=timeout_s)
    try:
        result = run(config)
    except MwclusterError as exc:
        raise click.ClickException(f"{exc.code}: {exc}") from None
    if as_json:
        click.echo(json.dumps(result, sort_keys=True))
    else:
        print_table(result)
