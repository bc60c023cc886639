"""`mwcluster log dump/verify` and `mwcluster snapshot inspect`: journal directories and
snapshot files read offline (nothing is modified).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from mwcluster.errors import MwclusterError


@click.group()
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


@click.group()
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
