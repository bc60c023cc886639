"""The `mwcluster` command line: a thin shell over the library (click).

Logging is configured here and only here.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import click

from mwcluster.errors import MwclusterError


def _setup_logging(verbose: int) -> None:
    level = logging.WARNING - 10 * verbose
    logging.basicConfig(level=max(level, logging.DEBUG),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@click.group()
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
@click.version_option(package_name="mwcluster")
def main(verbose: int) -> None:
    """mwcluster: an in-memory metadata master with a journal, snapshots and checkpoints."""
    _setup_logging(verbose)


@main.command()
@click.option("--data-dir", type=click.Path(file_okay=False), default=None,
              help="Where to keep the cluster's files (default: a temporary directory, "
                   "removed when the demo passes).")
@click.option("--shards", type=click.IntRange(1, 100_000), default=300, show_default=True,
              help="Tasks of the job (one shard of the dataset each).")
@click.option("--records", type=click.IntRange(1, 1_000_000), default=1000, show_default=True,
              help="Log records per shard.")
@click.option("--workers", type=click.IntRange(2, 64), default=4, show_default=True)
@click.option("--slots", type=click.IntRange(1, 64), default=2, show_default=True,
              help="Tasks each worker runs at once.")
@click.option("--read-delay-ms", type=click.IntRange(0, 10_000), default=10,
              show_default=True, help="Simulated storage latency per chunk of a shard.")
@click.option("--chaos", is_flag=True,
              help="Kill a worker (SIGKILL) and restart the master (SIGKILL, start again) "
                   "in the middle of the job.")
def demo(data_dir: str | None, shards: int, records: int, workers: int, slots: int,
         read_delay_ms: int, chaos: bool) -> None:
    """Start a master, a checkpoint node and workers here, run a word-count job, check it."""
    from mwcluster.demo_cluster import run_demo

    sys.exit(run_demo(data_dir=data_dir, shards=shards, records=records, workers=workers,
                      slots=slots, chaos=chaos, read_delay_ms=read_delay_ms))


@main.command("demo-crash")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None,
              help="Where to keep the demo's files (default: a temporary directory, removed "
                   "when the demo passes).")
@click.option("--records", type=click.IntRange(1000, 10_000_000), default=60000,
              show_default=True, help="How many updates the writer makes.")
def demo_crash(data_dir: str | None, records: int) -> None:
    """The engine alone: write, crash with SIGKILL, recover, stop gracefully."""
    from mwcluster.demo import run_demo

    sys.exit(run_demo(data_dir, records))


# --- offline tools -----------------------------------------------------------------------


@main.group()
def log() -> None:
    """Inspect journal directories offline (nothing is modified)."""


def _journal_dir(path: str) -> Path:
    p = Path(path)
    if (p / "journal").is_dir():
        return p / "journal"
    return p


@log.command("dump")
@click.argument("directory", type=click.Path(exists=True, file_okay=False))
@click.option("--from-txid", type=click.IntRange(1), default=1, show_default=True)
@click.option("--limit", type=click.IntRange(1), default=None, help="Stop after N records.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def log_dump(directory: str, from_txid: int, limit: int | None, as_json: bool) -> None:
    """Print the records of a journal (DIRECTORY: a journal or a data directory)."""
    from mwcluster.core.records import decode_payload
    from mwcluster.storage.segments import iter_records

    count = 0
    try:
        for txid, epoch, payload in iter_records(_journal_dir(directory), from_txid):
            origin = None
            try:
                rec, origin = decode_payload(payload)
                name, fields = type(rec).__name__, _jsonable(rec._asdict())
            except MwclusterError as exc:
                name, fields = "UNDECODABLE", {"error": str(exc), "hex": payload[:64].hex()}
            by = None if origin is None else {"client_id": origin[0].hex(),
                                               "request_id": origin[1]}
            if as_json:
                click.echo(json.dumps({"txid": txid, "epoch": epoch, "type": name,
                                       "record": fields, "origin": by}, sort_keys=True))
            else:
                suffix = "" if by is None else f" (from {by['client_id']}#{by['request_id']})"
                click.echo(f"{txid:>10} e{epoch} {name} "
                           f"{json.dumps(fields, sort_keys=True)}{suffix}")
            count += 1
            if limit is not None and count >= limit:
                break
    except MwclusterError as exc:
        raise click.ClickException(str(exc)) from None


@log.command("verify")
@click.argument("directory", type=click.Path(exists=True, file_okay=False))
@click.option("--json", "as_json", is_flag=True)
def log_verify(directory: str, as_json: bool) -> None:
    """Check a journal: exit 0 when consistent, 1 with the first problem otherwise."""
    from mwcluster.storage.segments import verify_dir

    report = verify_dir(_journal_dir(directory))
    data = report.to_dict()
    if as_json:
        click.echo(json.dumps(data, indent=2, sort_keys=True))
    else:
        for seg in data["segments"]:
            click.echo(f"{seg['name']}: txids {seg['first_txid']}..{seg['last_txid']} "
                       f"({seg['records']} records, {seg['bytes']} bytes)")
        if data["problem"]:
            click.echo(f"PROBLEM: {data['problem']}", err=True)
        else:
            click.echo("ok")
    sys.exit(0 if report.ok else 1)


@main.group()
def snapshot() -> None:
    """Inspect snapshot files offline."""


@snapshot.command("inspect")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--json", "as_json", is_flag=True)
def snapshot_inspect(file: str, as_json: bool) -> None:
    """Header, counts and digest of a snapshot; exit 1 if it does not verify."""
    from mwcluster.core.recent import RecentRequests
    from mwcluster.engine import load_snapshot
    from mwcluster.storage.snapshot import read_header

    recent = RecentRequests(1 << 62)     # room for every entry: count them all
    try:
        header = read_header(file)
        state = load_snapshot(file, recent)
    except MwclusterError as exc:
        if as_json:
            click.echo(json.dumps({"path": file, "ok": False, "error": str(exc)}))
            sys.exit(1)
        raise click.ClickException(str(exc)) from None
    counts = {"keys": len(state.ns), "jobs": len(state.jobs.jobs),
              "tasks": sum(len(j.tasks) for j in state.jobs.jobs.values()),
              "workers": len(state.jobs.workers), "recent_requests": len(recent)}
    data = {**header.to_dict(), "ok": True, "counts": counts,
            "verified_digest": f"{state.digest:016x}"}
    if as_json:
        click.echo(json.dumps(data, indent=2, sort_keys=True))
    else:
        for name, value in data.items():
            click.echo(f"{name:>16}: {value}")


def _jsonable(value):
    if hasattr(value, "_asdict"):   # a record inside a Multi
        return {"type": type(value).__name__, **_jsonable(value._asdict())}
    if isinstance(value, bytes):
        try:
            from mwcluster.core.values import decode

            return {"msgpack": _jsonable(decode(value))}
        except Exception:
            return {"hex": value.hex()}
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


from mwcluster import cli_client  # noqa: E402  (commands that talk to a master)

main.add_command(cli_client.put)
main.add_command(cli_client.get)
main.add_command(cli_client.rm)
main.add_command(cli_client.ls)
main.add_command(cli_client.stat)
main.add_command(cli_client.status)
main.add_command(cli_client.bench)

from mwcluster.cli_master import master  # noqa: E402
main.add_command(master)

from mwcluster.cli_checkpoint import checkpoint  # noqa: E402
main.add_command(checkpoint)

from mwcluster.cli_failover import promote  # noqa: E402
main.add_command(promote)

from mwcluster.cli_worker import worker  # noqa: E402
main.add_command(worker)

from mwcluster.cli_jobs import job  # noqa: E402
main.add_command(job)


if __name__ == "__main__":  # pragma: no cover
    main()
