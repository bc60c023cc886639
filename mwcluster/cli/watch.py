"""`mwcluster watch PREFIX`: print the changes of the keys under PREFIX as they come
(docs/coordination.md), one line each, until interrupted, --count events or --for seconds.

    <txid> put <key> <value as JSON> v<version>
    <txid> delete <key>
    <txid> record <key> <the record as JSON>        (a job's or worker's, under @job/...)
    # resync at txid <txid>: <n> keys (<why>)       (the master no longer held the events)

With --json each line is one JSON object: {"txid", "type", "key", "value", "version",
"create_txid"}, or {"type": "resync", "txid", "keys", "reason"}. The watch resumes by
itself across reconnects, master restarts and failovers (give several --master endpoints,
comma-separated), from the txid it reached.
"""

from __future__ import annotations

import json
import time

import click

from mwcluster.cli.common import connect, consistency_option, dumps, master_option, to_json
from mwcluster.client.watching import Resync


@click.command()
@click.argument("prefix")
@click.option("--from-txid", type=click.IntRange(1), default=None,
              help="The first txid to show (default: changes after now).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.option("--count", type=click.IntRange(1), default=None,
              help="Exit after this many events.")
@click.option("--for", "for_s", type=click.FloatRange(0), default=None,
              help="Exit after this many seconds.")
@consistency_option
@master_option
@click.option("--timeout", "timeout_s", type=click.FloatRange(0.5), default=10.0,
              show_default=True, help="Seconds to wait for each reply (a watch waits at "
                                      "the master for about half of it).")
def watch(prefix: str, from_txid: int | None, as_json: bool, count: int | None,
          for_s: float | None, consistency: str | None, master: str, timeout_s: float) -> None:
    """Print the changes of the keys under PREFIX (a string prefix: "/jobs/" or "@job/")."""
    deadline = None if for_s is None else time.monotonic() + for_s
    shown = 0
    with connect(master, timeout_s, consistency=consistency) as client:
        stream = client.watch(prefix, from_txid)
        try:
            while count is None or shown < count:
                if deadline is not None:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    stream.wait_ms = max(1, int(1000 * min(left, timeout_s / 2)))
                batch = stream.poll(deadline)
                if isinstance(batch, Resync):
                    click.echo(_resync_line(batch, as_json))
                    continue
                for event in batch[:None if count is None else count - shown]:
                    click.echo(_event_line(event, as_json))
                    shown += 1
        except KeyboardInterrupt:
            pass


def _event_line(event, as_json: bool) -> str:
    if as_json:
        return json.dumps({"txid": event.txid, "type": event.type, "key": event.key,
                           "value": to_json(event.value), "version": event.version,
                           "create_txid": event.create_txid}, ensure_ascii=False)
    if event.type == "delete":
        return f"{event.txid} delete {event.key}"
    if event.type == "put":
        return f"{event.txid} put {event.key} {dumps(event.value)} v{event.version}"
    return f"{event.txid} {event.type} {event.key} {dumps(event.value)}"


def _resync_line(resync: Resync, as_json: bool) -> str:
    if as_json:
        return json.dumps({"type": "resync", "txid": resync.txid,
                           "keys": len(resync.entries), "reason": resync.reason})
    return f"# resync at txid {resync.txid}: {len(resync.entries)} keys ({resync.reason})"
