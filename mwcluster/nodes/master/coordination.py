"""The master's watches and leases (docs/coordination.md): no sockets, no threads, and only
the times it is given.

**Watches.** A WATCH asks for the events of keys under a prefix from a txid on (the change
log, core/changes.py). It is answered at once when the log holds such events up to its
horizon; otherwise it waits here, parked, until some arrive or its wait ends (then it is
answered with no events and the txid to ask from next, so a quiet watcher never falls behind
the log). The horizon is what the request's durability level has made safe to show: records
fsynced here (default, async, sync), acknowledged by the standby (replicated), or applied
(consistency "fast"; a kill -9 can take those back). Each watcher has one request in flight:
its credit is one answer of at most `limit` events, so a slow watcher costs the master
nothing but its place in the log, and one that falls out of it is answered COMPACTED.

`deliver()` (the loop, after each drain and wake-up) matches the events that passed a level's
horizon against the parked watches of that level by prefix (one dict lookup per distinct
prefix length per event), and answers each matched watch with its prefix's events gathered
on the way (no second pass over the log, whose cost would grow with the number of watchers);
`tick(now)` answers the ones whose wait is over.

**Leases.** LEASE_GRANT logs a LeaseGrant (the lease's id is its txid) and LEASE_REVOKE a
LeaseRevoke that deletes the lease's keys; a key is attached by a MULTI with an Attach.
Expiry is the serving master's soft state: a deadline per lease, renewed by LEASE_KEEPALIVE
(not logged), set to a whole TTL from the start for every lease a master recovers or a
promoted standby takes over, so that a master change never expires a live holder. `tick`
logs LeaseRevoke(reason "expired") for every lease past its deadline.
"""

from __future__ import annotations

from bisect import bisect_right
from operator import itemgetter
from typing import Any, Callable, NamedTuple

from mwcluster import errors
from mwcluster.core.changes import ChangeLog, Compacted
from mwcluster.core.durability import FAST, LEVEL_MASK, Durability
from mwcluster.core.records import LeaseGrant, LeaseRevoke
from mwcluster.engine import Engine
from mwcluster.nodes.master.answers import Answer, refusal
from mwcluster.nodes.master.stats import MasterStats
from mwcluster.wire.protocol import (EVENT_DELETE, EVENT_PUT, EVENT_RECORD, ErrorCode, Op,
                                     ProtocolError, Request, args_check, encode_reply,
                                     error_code_for)

MAX_WATCH_EVENTS = 10_000      # events per WATCH answer
MAX_WAIT_MS = 60_000           # the longest a WATCH waits for events
_META = 32                     # an entry's header bytes (core/namespace.py)
_REPLICATED = int(Durability.REPLICATED)
_OPT_INT = (int, type(None))
_GRANT, _REVOKE = int(Op.LEASE_GRANT), int(Op.LEASE_REVOKE)
_txid_of = itemgetter(0)


class Parked(NamedTuple):
    ident: bytes
    request_id: int
    prefix: str
    from_txid: int
    limit: int
    deadline: float


class _Level:
    """The parked watches of one horizon (applied, durable or replicated)."""

    __slots__ = ("checked", "by_prefix", "lengths")

    def __init__(self, checked: int) -> None:
        self.checked = checked          # events up to here were matched against the parked
        self.by_prefix: dict[str, dict[tuple[bytes, int], Parked]] = {}
        self.lengths: dict[int, int] = {}

    def add(self, watch: Parked) -> None:
        group = self.by_prefix.get(watch.prefix)
        if group is None:
            group = self.by_prefix[watch.prefix] = {}
            self.lengths[len(watch.prefix)] = self.lengths.get(len(watch.prefix), 0) + 1
        group[watch.ident, watch.request_id] = watch

    def remove(self, watch: Parked) -> None:
        group = self.by_prefix[watch.prefix]
        del group[watch.ident, watch.request_id]
        if not group:
            del self.by_prefix[watch.prefix]
            n = len(watch.prefix)
            self.lengths[n] -= 1
            if not self.lengths[n]:
                del self.lengths[n]

    def __len__(self) -> int:
        return sum(map(len, self.by_prefix.values()))


class Coordination:
    def __init__(self, engine: Engine, stats: MasterStats, epoch: int, now: float, *,
                 replica_txid: Callable[[], int], max_watches: int = 10_000) -> None:
        self.engine = engine
        self.stats = stats
        self.epoch = epoch
        self.max_watches = max_watches
        self._replica_txid = replica_txid
        # every lease recovered gets a whole TTL from now (etcd's choice at a leader change)
        self.deadlines: dict[int, float] = {}
        self.started(now)
        # each level's events are matched from its own horizon on (a restarted master's
        # replicated horizon starts below its txid): 0 until the first deliver() or park
        self._levels = {level: _Level(0) for level in ("applied", "durable", "replicated")}
        self.parked = 0
        self.counts = {"watch_answers": 0, "watch_events": 0, "watch_compacted": 0,
                       "watch_refused": 0, "lease_grants": 0, "lease_keepalives": 0,
                       "lease_revokes": 0, "lease_expiries": 0}

    def started(self, now: float) -> None:
        """The master serves from `now`: every lease it holds has a whole TTL from now."""
        self.deadlines = {lease_id: now + ttl_ms / 1000
                          for lease_id, ttl_ms in self.engine.state.ns.leases.items()}

    @property
    def changes(self) -> ChangeLog | None:
        return self.engine.changes

    # --- leases ------------------------------------------------------------------------

    def handle(self, req: Request, now: float) -> Answer:
        """LEASE_GRANT and LEASE_REVOKE: logged, idempotent by (client_id, request_id)."""
        op = req[2]
        engine = self.engine
        if op == _GRANT:
            ttl_ms, = args_check(req, (int,), ("ttl_ms",))
            rec: Any = LeaseGrant(ttl_ms)
        else:
            lease_id, = args_check(req, (int,), ("lease_id",))
            rec = LeaseRevoke(lease_id, "revoked")
        origin = (req[0], req[1])
        hit = engine.recent(origin)
        if hit is not None:
            self.stats.retries += 1
            return 0, *hit
        try:
            txid, result = engine.submit(rec, durability=Durability.ASYNC, origin=origin,
                                         wake=False)
        except errors.MwclusterError as exc:
            return refusal(self.stats, error_code_for(exc), str(exc))
        if op == _GRANT:
            self.deadlines[txid] = now + ttl_ms / 1000
            self.counts["lease_grants"] += 1
        else:
            self.deadlines.pop(rec.lease_id, None)
            self.counts["lease_revokes"] += 1
        return 0, txid, result

    def keepalive(self, req: Request, now: float) -> Answer:
        lease_id, = args_check(req, (int,), ("lease_id",))
        ttl_ms = self.engine.state.ns.leases.get(lease_id)
        if ttl_ms is None:
            return refusal(self.stats, ErrorCode.NOT_FOUND,
                           f"lease {lease_id} does not exist (it expired or was revoked, and "
                           "its keys were deleted): grant a new lease and write them again")
        self.deadlines[lease_id] = now + ttl_ms / 1000
        self.counts["lease_keepalives"] += 1
        return 0, 0, ttl_ms

    def expire(self, now: float) -> int:
        """Log a LeaseRevoke for every lease past its deadline; how many were logged."""
        leases = self.engine.state.ns.leases
        due = [lease_id for lease_id, deadline in self.deadlines.items()
               if deadline <= now or lease_id not in leases]
        logged = 0
        for lease_id in due:
            del self.deadlines[lease_id]
            if lease_id not in leases:
                continue            # revoked meanwhile
            try:
                self.engine.submit(LeaseRevoke(lease_id, "expired"),
                                   durability=Durability.ASYNC, wake=False)
            except errors.JournalUnavailable:
                self.deadlines[lease_id] = now      # the disk refuses: the next tick retries
                continue
            logged += 1
            self.counts["lease_expiries"] += 1
        return logged

    # --- watches -----------------------------------------------------------------------

    def _horizon(self, level: str) -> int:
        if level == "applied":
            return self.engine.state.txid
        if level == "replicated":
            return self._replica_txid()
        return self.engine.journal.durable_txid

    def watch(self, ident: bytes, req: Request, now: float) -> tuple[int, int, Any] | None:
        """A WATCH: its answer (status, txid, result) now, or None when parked."""
        prefix, from_txid, after_epoch, limit, wait_ms = args_check(
            req, (str, int, _OPT_INT, int, int),
            ("prefix", "from_txid", "after_epoch", "limit", "wait_ms"))
        if from_txid < 1 or limit < 1 or wait_ms < 0:
            raise ProtocolError(ErrorCode.BAD_REQUEST, "WATCH: from_txid and limit must be "
                                "at least 1 and wait_ms not negative", req[1])
        if self.changes is None:
            return refusal(self.stats, ErrorCode.BAD_STATE, "this master keeps no changes "
                           "for watches (watch_events = 0): set watch_events above 0")
        durability = req[3]
        level = ("applied" if durability & FAST else
                 "replicated" if durability & LEVEL_MASK == _REPLICATED else "durable")
        limit = min(limit, MAX_WATCH_EVENTS)
        answer, horizon = self._answer(prefix, from_txid, after_epoch, limit, level)
        if answer is not None or wait_ms == 0:
            return answer if answer is not None else self._empty(from_txid, horizon)
        if self.parked >= self.max_watches:
            self.counts["watch_refused"] += 1
            return refusal(self.stats, ErrorCode.UNAVAILABLE,
                           f"this master holds {self.parked} waiting watches, its max_watches: "
                           "retry later, or raise max_watches")
        group = self._levels[level]
        if not group.by_prefix:         # matched from here on: this one looked up to horizon
            group.checked = horizon
        group.add(Parked(ident, req[1], prefix, max(from_txid, horizon + 1),
                                       limit, now + min(wait_ms, MAX_WAIT_MS) / 1000))
        self.parked += 1
        return None

    def _answer(self, prefix: str, from_txid: int, after_epoch: int | None, limit: int,
                level: str) -> tuple[tuple[int, int, Any] | None, int]:
        """The answer when there are events (or the log refuses), else None; and the horizon
        the events were looked for up to (none matched up to it when the answer is None)."""
        changes = self.changes
        horizon = self._horizon(level)
        try:
            events, next_txid = changes.since(from_txid, prefix, limit, horizon,
                                              self.engine.state.txid, after_epoch)
        except Compacted as exc:
            self.counts["watch_compacted"] += 1
            counts = self.stats.errors_by_code
            counts[ErrorCode.COMPACTED] = counts.get(ErrorCode.COMPACTED, 0) + 1
            return (int(ErrorCode.COMPACTED), 0,
                    ("compacted", f"{exc}: re-read, then watch from the txid the read was "
                     "served at + 1", exc.oldest_txid, exc.current_txid)), horizon
        if not events and next_txid > horizon:
            return None, horizon
        self.counts["watch_answers"] += 1
        self.counts["watch_events"] += len(events)
        return (0, horizon, (next_txid, changes.epoch_after(next_txid),
                             _wire_events(events))), horizon

    def _empty(self, from_txid: int, horizon: int) -> tuple[int, int, Any]:
        """No events from `from_txid` up to `horizon`: ask from after it next."""
        next_txid = max(from_txid, horizon + 1)
        self.counts["watch_answers"] += 1
        return 0, horizon, (next_txid, self.changes.epoch_after(next_txid), [])

    def deliver(self) -> list[tuple[bytes, bytes]]:
        """Answers for the parked watches that events reached since the last call."""
        if self.changes is None:
            return []
        out: list[tuple[bytes, bytes]] = []
        for level, group in self._levels.items():
            horizon = self._horizon(level)
            if horizon <= group.checked:
                continue
            if not group.by_prefix:
                group.checked = horizon
                continue
            changes = self.changes
            if changes.oldest_txid > group.checked + 1:
                # the log moved past what was matched: each is answered from the log itself
                # (COMPACTED for those whose txid it no longer holds)
                out.extend(self._answer_each(group, level,
                                             [w for by in group.by_prefix.values()
                                              for w in by.values()]))
                group.checked = horizon
                continue
            # each prefix's events up to the horizon, in order: a parked watch had none before
            # its from_txid, so these are its answer unless over its limit
            hits: dict[str, list[tuple]] = {}
            by_prefix, lengths = group.by_prefix, group.lengths
            events = changes.events
            i = bisect_right(events, group.checked, key=_txid_of)
            for event in events[i:]:
                if event[0] > horizon:
                    break
                key = event[1]
                for n in lengths:
                    if n > len(key):
                        continue            # key[:n] would be the key again: matched once
                    prefix = key[:n]
                    if prefix in by_prefix:
                        found = hits.get(prefix)
                        if found is None:
                            hits[prefix] = [event]
                        else:
                            found.append(event)
            group.checked = horizon
            if not hits:
                continue
            next_txid = horizon + 1
            epoch = changes.epoch_after(next_txid)
            over: list[Parked] = []
            for prefix, found in hits.items():
                wire = None
                for watch in list(by_prefix[prefix].values()):
                    if len(found) > watch.limit or found[0][0] < watch.from_txid:
                        over.append(watch)      # cut at its limit, or parked meanwhile
                        continue
                    if wire is None:
                        wire = _wire_events(found)
                    group.remove(watch)
                    self.parked -= 1
                    self.counts["watch_answers"] += 1
                    self.counts["watch_events"] += len(found)
                    out.append((watch.ident, encode_reply(watch.request_id, self.epoch, 0,
                                                          horizon, (next_txid, epoch, wire))))
            out.extend(self._answer_each(group, level, over))
        return out

    def _answer_each(self, group: _Level, level: str,
                     watches: list[Parked]) -> list[tuple[bytes, bytes]]:
        """Answers from the log for those of `watches` it has events (or a refusal) for."""
        out = []
        for watch in watches:
            answer = self._answer(watch.prefix, watch.from_txid, None, watch.limit, level)[0]
            if answer is not None:
                group.remove(watch)
                self.parked -= 1
                out.append((watch.ident, encode_reply(watch.request_id, self.epoch, *answer)))
        return out

    def tick(self, now: float) -> tuple[list[tuple[bytes, bytes]], int]:
        """Answers for the parked watches whose wait is over (no events came), and how many
        expired leases were revoked (expire)."""
        revoked = self.expire(now)
        out: list[tuple[bytes, bytes]] = []
        if not self.parked:
            return out, revoked
        for level, group in self._levels.items():
            for by in list(group.by_prefix.values()):
                for watch in [w for w in by.values() if w.deadline <= now]:
                    group.remove(watch)
                    self.parked -= 1
                    # no event of its prefix up to what was matched (else it was answered)
                    out.append((watch.ident, encode_reply(
                        watch.request_id, self.epoch, *self._empty(watch.from_txid,
                                                                   group.checked))))
        return out, revoked

    def status(self) -> dict[str, Any]:
        changes = self.changes
        return {**self.counts, "leases": len(self.engine.state.ns.leases),
                "leased_keys": len(self.engine.state.ns.lease_of), "watches_waiting":
                self.parked, "max_watches": self.max_watches,
                "change_log": None if changes is None else {
                    "events": len(changes), "bytes": changes.bytes,
                    "oldest_txid": changes.oldest_txid}}


def _wire_events(events: list[tuple]) -> list[list]:
    """[[txid, type, key, value, version, create_txid], ...] of change-log events."""
    out = []
    for txid, key, what in events:
        if what is None:
            out.append([txid, EVENT_DELETE, key, None, 0, 0])
        elif what.__class__ is bytes:
            out.append([txid, EVENT_PUT, key, what[_META:], int.from_bytes(what[:8], "little"),
                        int.from_bytes(what[8:16], "little")])
        else:
            out.append([txid, EVENT_RECORD, key, what, 0, 0])
    return out
