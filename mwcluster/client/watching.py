"""Watches and lease keepalives on the client side (docs/coordination.md).

`Watch` (what `Client.watch(prefix, from_txid)` returns) iterates the events of the keys under
a prefix, in txid order, from a txid on: one WATCH request in flight at a time (its credit),
each answered with the events the master holds up to what the request's durability level made
safe to show, or after its wait with none and the txid to ask from next. It keeps the txid it
has delivered up to (`next_txid`) and the epoch of the record before it, so that:

- across reconnects and a master restart the same request resumes where it stopped, and
  nothing is missed or repeated;
- when the master no longer holds those events (COMPACTED: the log moved past them, the
  master restarted from a newer snapshot, or a failover replaced the txids it had seen), it
  yields a `Resync`: every key under the prefix with its value, as of one txid, read with
  RANGE, then resumes after it. Events the pages read later already reflect are skipped, so a
  consumer that replaces its map with the Resync's entries and then applies the events holds
  exactly the master's keys after each event.

`KeepAlive` renews a lease from a thread of its own (a Client of its own: a Client is not
thread-safe) about every ttl/3; `lost` is set when the master says the lease is gone.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable, Iterator, NamedTuple

from mwcluster import errors
from mwcluster.client.calls import Entry, Lease
from mwcluster.core.values import decode
from mwcluster.wire.protocol import EVENT_DELETE, EVENT_PUT, Op, Reply

log = logging.getLogger(__name__)

_TYPES = {EVENT_PUT: "put", EVENT_DELETE: "delete"}


class WatchEvent(NamedTuple):
    """One change: `type` is "put" (value, version, create_txid of the key after it),
    "delete", or "record" (a job's or worker's record: `value` is a map with its `event`)."""
    txid: int
    type: str
    key: str
    value: Any
    version: int
    create_txid: int


class Resync(NamedTuple):
    """The watch resumed from a fresh read: `entries` (key -> Entry) is every key under the
    prefix as of `txid`; events after it follow. `reason` says why (the master's words)."""
    txid: int
    entries: dict
    reason: str


def _watch_reply(reply: Reply) -> tuple[int, int | None, list[WatchEvent]]:
    next_txid, epoch, events = reply.result
    out = []
    for txid, kind, key, value, version, create_txid in events:
        if kind == EVENT_PUT:
            value = decode(value)
        out.append(WatchEvent(txid, _TYPES.get(kind, "record"), key, value, version,
                              create_txid))
    return next_txid, epoch, out


class Watch:
    """Iterate to get WatchEvent (and Resync) items; `next_txid` is where it resumes."""

    def __init__(self, client, prefix: str, from_txid: int | None = None, *,
                 durability: str | int | None = None, consistency: str | None = None,
                 limit: int = 1000, wait_s: float | None = None, resync: bool = True,
                 give_up_s: float | None = None) -> None:
        self.client = client
        self.prefix = prefix
        self.limit = limit
        self.resync = resync
        self.give_up_s = give_up_s
        self._code = client._code(durability, consistency)
        # the master answers a waiting watch within about a tick of its wait: half the
        # client's timeout leaves room for that and the network
        self.wait_ms = int(1000 * (wait_s if wait_s is not None else
                                   min(30.0, client.timeout_s / 2)))
        self.epoch: int | None = None     # of the record at next_txid - 1, as the master said
        self.next_txid = from_txid if from_txid is not None else self._now() + 1
        self._skip: dict[str, int] = {}   # after a Resync: key -> txid its entry reflects
        self._skip_until = 0
        self.resyncs = 0
        self._pause = threading.Event()   # never set: a wait that is only a backoff

    def _now(self) -> int:
        """The txid a read is served at now (the watch starts after it)."""
        return self.client.range(self.prefix, 0, durability=self._code).txid

    def __iter__(self) -> Iterator[WatchEvent | Resync]:
        while True:
            batch = self.poll()
            if isinstance(batch, Resync):
                yield batch
            else:
                yield from batch

    def poll(self, deadline: float | None = None) -> list[WatchEvent] | Resync:
        """One WATCH: the events it brought (possibly none, after its wait), or a Resync.
        While the master is away it asks again, until give_up_s, or until `deadline` (a
        time.monotonic() value) has passed: then it returns no events."""
        started = time.monotonic()
        refusals = 0
        while True:
            try:
                next_txid, epoch, events = self.client._run(
                    Op.WATCH, [self.prefix, self.next_txid, self.epoch, self.limit,
                               self.wait_ms], self._code, _watch_reply)
            except errors.Compacted as exc:
                if not self.resync:
                    raise
                return self._resync(str(exc))
            except (errors.RequestTimeout, errors.JournalUnavailable) as exc:
                # the master is away (restarting, failing over) or holds too many watches:
                # the same request again, until give_up_s or the deadline
                now = time.monotonic()
                if self.give_up_s is not None and now - started > self.give_up_s:
                    raise
                if deadline is not None and now >= deadline:
                    return []
                log.info("watch of %r: %s; asking again", self.prefix, exc)
                if isinstance(exc, errors.JournalUnavailable):
                    # refused at once (max_watches): back off rather than ask in a loop
                    refusals += 1
                    self._pause.wait(min(1.0, 0.01 * 2 ** min(refusals, 7)))
                continue
            self.next_txid, self.epoch = next_txid, epoch
            if self._skip:
                events = [e for e in events if e.txid > self._skip.get(e.key, 0)]
                if next_txid > self._skip_until:
                    self._skip.clear()
            return events

    def _resync(self, reason: str) -> Resync:
        """Read every key under the prefix (pages of RANGE) and resume after the first
        page's txid; later pages may be newer, and their keys' events up to what they
        reflect are skipped."""
        entries: dict[str, Entry] = {}
        first = None
        start_after = None
        client = self.client
        while True:
            page = client.range(self.prefix, 1000, start_after, durability=self._code)
            if first is None:
                first = page.txid
            for entry in page.entries:
                entries[entry.key] = entry
                if entry.stat.modify_txid > first:
                    self._skip[entry.key] = entry.stat.modify_txid
            self._skip_until = max(self._skip_until, page.txid)
            if len(page.entries) < 1000:
                break
            start_after = page.entries[-1].key
        self.next_txid, self.epoch = first + 1, None
        self.resyncs += 1
        return Resync(first, entries, reason)


class KeepAlive:
    """Renews `lease` about every ttl/3 from a thread, on a Client of its own (made by
    `make_client`), until stop() or the master says the lease is gone (`lost` is set, `error`
    says why, `on_lost(error)` is called)."""

    def __init__(self, make_client: Callable[[], Any], lease: Lease,
                 interval_s: float | None = None,
                 on_lost: Callable[[BaseException], None] | None = None) -> None:
        self.lease = lease
        self.interval_s = interval_s if interval_s is not None else lease.ttl_s / 3
        self.on_lost = on_lost
        self.lost = threading.Event()
        self.error: BaseException | None = None
        self.sent = 0
        self._stop = threading.Event()
        self._client = make_client()
        self._thread = threading.Thread(target=self._run, name=f"keepalive-{lease.id}",
                                        daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    self._client.keepalive_once(self.lease)
                    self.sent += 1
                except errors.NotFound as exc:
                    self.error = exc
                    self.lost.set()
                    if self.on_lost is not None:
                        self.on_lost(exc)
                    return
                except errors.MwclusterError as exc:   # away: the next round tries again
                    log.info("keepalive of lease %d: %s", self.lease.id, exc)
                except Exception as exc:  # noqa: BLE001  a bug: say the lease may be lost
                    log.exception("keepalive of lease %d stopped", self.lease.id)
                    self.error = exc
                    self.lost.set()
                    if self.on_lost is not None:
                        self.on_lost(exc)
                    return
                self._stop.wait(self.interval_s)
        finally:
            self._client.close()

    def running(self) -> bool:
        return self._thread.is_alive()

    def stop(self) -> None:
        self._stop.set()
        if threading.current_thread() is not self._thread:
            self._thread.join()
