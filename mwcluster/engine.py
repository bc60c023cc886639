"""The metadata store: the state machine, the journal and the snapshots, and recovery.

The Engine is what a master (and, later, a promoted standby) runs in-process, with no network:

    submit(record): check the journal takes writes -> check the record against the limits ->
                    apply it to the state (raises and changes nothing if refused) ->
                    encode it and append it to the journal buffer -> in `sync` mode wait
                    for the fsync that covers it.

Recovery at open(): remove temporary files; open the journal (which cuts a torn tail of the
newest segment and keeps the cut bytes aside); load the newest snapshot whose checksums and
digest verify, falling back to older ones with a warning, with the table of recent requests
it carries; replay every journal record after it through the same `State.apply`, remembering
the request behind each. Anything that cannot be explained by a torn tail stops the
open with a CorruptionError naming the file, offset and txid.

Data directory layout: `journal/` (segments, see storage/segments.py) and `snapshots/`
(snapshot files, see storage/snapshot.py).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from mwcluster.core.changes import ChangeLog
from mwcluster.core.durability import Durability
from mwcluster.core.limits import Limits
from mwcluster.core.recent import RecentRequests
from mwcluster.core.records import (Origin, Record, admit_put, check_admission,
                                     decode_payload)
from mwcluster.core.state import State
from mwcluster.errors import (ApplyError, CorruptionError, InvalidRecord, JournalUnavailable,
                              MwclusterError, StorageError, Truncated)
from mwcluster.storage import snapshot as snapshots
from mwcluster.storage.journal import Journal

log = logging.getLogger(__name__)

# A submit's durability, by level or by name, without a parse per record: the engine's own
# (None, DEFAULT), or sync; anything else is async.
_DEFAULT = frozenset((Durability.DEFAULT, Durability.DEFAULT.label))
_SYNC = frozenset((Durability.SYNC, Durability.SYNC.label))


@dataclass(frozen=True, slots=True)
class RecoveryReport:
    snapshot_txid: int
    snapshot_path: str | None
    skipped_snapshots: list[tuple[str, str]]
    replayed_records: int
    last_txid: int
    digest: int
    seconds: float
    journal_cut_bytes: int
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"snapshot_txid": self.snapshot_txid, "snapshot_path": self.snapshot_path,
                "skipped_snapshots": [list(s) for s in self.skipped_snapshots],
                "replayed_records": self.replayed_records, "last_txid": self.last_txid,
                "digest": f"{self.digest:016x}", "seconds": round(self.seconds, 6),
                "journal_cut_bytes": self.journal_cut_bytes, "warnings": list(self.warnings)}


class Engine:
    def __init__(self, data_dir: str | Path, *, durability: str | Durability = "async",
                 limits: Limits | None = None, keep_snapshots: int = 2, epoch: int = 0,
                 segment_bytes: int = 64 << 20, buffer_limit_bytes: int = 64 << 20,
                 journal_io=None, on_durable: Callable[[int], None] | None = None,
                 clock: Callable[[], float] = time.monotonic, recent_requests: int = 100_000,
                 tail_bytes: int = 64 << 20, retry_initial_s: float = 0.05,
                 retry_max_s: float = 5.0, background: bool = True,
                 flush_interval_s: float = 0.0, watch_events: int = 0,
                 watch_bytes: int = 64 << 20) -> None:
        self.data_dir = Path(data_dir)
        self.durability = Durability.parse(durability)
        if self.durability not in (Durability.ASYNC, Durability.SYNC):
            raise ValueError(f"an engine's durability is async or sync, not {durability!r}")
        self._sync = self.durability is Durability.SYNC
        self.limits = limits or Limits()
        self.keep_snapshots = max(1, keep_snapshots)
        self.epoch = epoch
        self.clock = clock
        self.journal_dir = self.data_dir / "journal"
        self.snapshot_dir = self.data_dir / "snapshots"
        self.state = State()
        self.journal = Journal(self.journal_dir, segment_bytes=segment_bytes,
                               buffer_limit_bytes=buffer_limit_bytes,
                               max_record_bytes=self.limits.max_record_bytes, epoch=epoch,
                               io=journal_io, clock=clock, on_durable=on_durable,
                               retry_initial_s=retry_initial_s, retry_max_s=retry_max_s,
                               background=background, flush_interval_s=flush_interval_s)
        self.recovery: RecoveryReport | None = None
        # (client_id, request_id) -> (txid, result) of recent mutations: a retried request is
        # answered from here instead of being applied twice (core/recent.py)
        self.recent_requests = RecentRequests(recent_requests)
        self._remember = self.recent_requests.remember
        self.recent = self.recent_requests.get
        # the newest records, (txid, epoch, payload), for the log stream and FETCH
        # A list with a moving head rather than a deque: reads index it by txid in O(1)
        # (a deque walks its blocks), and the dead prefix is cut off in amortised O(1).
        self._tail: list[tuple[int, int, bytes] | None] = []
        self._tail_head = 0          # index of the oldest record still kept
        self._tail_bytes = 0
        self._tail_limit = max(0, tail_bytes)
        # the recent changes for watches (core/changes.py), kept from recovery on when
        # watch_events > 0; the owner calls changes.settle() between requests
        self._watch_bounds = (watch_events, watch_bytes)
        self.changes: ChangeLog | None = None

    # --- recovery ------------------------------------------------------------------------

    def open(self) -> RecoveryReport:
        started = self.clock()
        warnings: list[str] = []
        self.data_dir.mkdir(parents=True, exist_ok=True)
        for leftover in snapshots.clean_temp(self.snapshot_dir):
            warnings.append(f"removed {leftover.name}, left by a crash during a snapshot write")
        journal_report = self.journal.open()
        warnings.extend(journal_report.warnings)
        state, used, skipped = self._load_newest_snapshot()
        for path, reason in skipped:
            warnings.append(f"snapshot {path} was skipped: {reason}")
        snapshot_txid = state.txid
        first = self.journal.first_txid
        last = self.journal.last_txid
        if first is not None and first > snapshot_txid + 1:
            raise CorruptionError(
                f"the journal starts at txid {first} but the newest usable snapshot covers "
                f"only up to txid {snapshot_txid}: records {snapshot_txid + 1}..{first - 1} are "
                f"missing. Restore the missing segments or snapshots into {self.data_dir}",
                path=str(self.journal_dir), txid=snapshot_txid + 1)
        if first is not None and last < snapshot_txid:
            raise CorruptionError(
                f"the journal ends at txid {last}, before the snapshot's txid {snapshot_txid}; "
                "the journal lost records that a snapshot already covered. Inspect it with "
                f"`mwcluster log verify {self.journal_dir}`", path=str(self.journal_dir),
                txid=last)
        replayed = 0
        if self._watch_bounds[0] > 0:
            self.changes = ChangeLog(snapshot_txid, *self._watch_bounds)
            state.ns.changes = self.changes.events
        if last > snapshot_txid:
            replayed = self._replay(state, snapshot_txid + 1)
        elif first is None:
            self.journal.set_next_txid(snapshot_txid + 1)
        state.ns.max_merged_value_bytes = self.limits.max_value_bytes   # live path only
        self.state = state
        if self.changes is not None:
            self.changes.settle()
            self.changes.note_epoch(state.txid + 1, self.epoch)
        for message in warnings:
            log.warning("recovery: %s", message)
        self.recovery = RecoveryReport(
            snapshot_txid=snapshot_txid, snapshot_path=str(used) if used else None,
            skipped_snapshots=skipped, replayed_records=replayed, last_txid=state.txid,
            digest=state.digest, seconds=self.clock() - started,
            journal_cut_bytes=journal_report.cut_bytes, warnings=warnings)
        log.info("recovered txid=%d from snapshot txid=%d plus %d records in %.3f s",
                 state.txid, snapshot_txid, replayed, self.recovery.seconds)
        return self.recovery

    def _load_newest_snapshot(self) -> tuple[State, Path | None, list[tuple[str, str]]]:
        """The newest snapshot that verifies; its recent requests go to the engine's table
        (emptied again when a snapshot fails half-way)."""
        skipped: list[tuple[str, str]] = []
        for txid, path in snapshots.list_snapshots(self.snapshot_dir):
            try:
                return load_snapshot(path, self.recent_requests), path, skipped
            except MwclusterError as exc:
                self.recent_requests.clear()
                skipped.append((str(path), str(exc)))
        return State(), None, skipped

    def _replay(self, state: State, from_txid: int) -> int:
        count = 0
        changes = self.changes
        # open() has just checked every record's crc: replay does not check them again
        for txid, epoch, payload in self.journal.read(from_txid, verify=False):
            if changes is not None:
                changes.note_epoch(txid, epoch)
                if not count & 0x3fff:
                    changes.settle()
            try:
                rec, origin = decode_payload(payload)
                result = state.apply(txid, rec)
                if origin is not None:
                    self._remember(origin, txid, result)
            except (ApplyError, InvalidRecord) as exc:  # divergence, not a torn tail
                raise CorruptionError(
                    f"journal record {txid} cannot be applied during replay ({exc}); the journal "
                    f"and the snapshot disagree. Inspect with `mwcluster log dump "
                    f"{self.journal_dir} --from-txid {txid}`", path=str(self.journal_dir),
                    txid=txid) from None
            count += 1
        return count

    # --- the write path ------------------------------------------------------------------

    def submit(self, rec: Record, *, durability: Durability | str | None = None,
               origin: Origin | None = None, wake: bool = True) -> tuple[int, Any]:
        """Admit, apply and log one record; return (txid, result). Raises ApplyError (nothing
        changed), InvalidRecord (nothing changed) or JournalUnavailable (nothing changed).

        `origin` (client_id, request_id) is logged with the record and remembered, so that
        `recent(origin)` answers a retry of the same request, even after a restart (from the
        journal, or from a snapshot that covers the record and carries the table).
        `wake=False` leaves the journal flusher asleep until `journal.wake()` (see there)."""
        self.journal.check_writable()
        payload = check_admission(rec, self.limits, origin)
        state = self.state
        txid = state.txid + 1
        result = state.apply(txid, rec)
        self._logged(txid, payload, origin, result, wake)
        if (self._sync if durability is None or durability in _DEFAULT
                else durability in _SYNC) and \
                not self.journal.wait_durable(txid):
            # applied and buffered, but the journal stopped before an fsync covered it:
            # a sync caller must not take that for durable
            raise JournalUnavailable(f"record {txid} was applied but the journal stopped before "
                                     "it was made durable; it may be lost")
        return txid, result

    def submit_put(self, key: str, value: bytes, expected: int | None, origin: Origin | None,
                   wake: bool = True) -> tuple[int, int]:
        """submit(Put(key, value, expected), durability="async", origin=origin, wake=wake)
        for fields whose types are known to be right (str, bytes, None or int), without
        building the Put: the master's hot path. The same checks, errors, result (the new
        version) and record bytes (tests/unit/test_engine_put_path.py holds them equal)."""
        self.journal.check_writable()
        payload = admit_put(key, value, expected, self.limits, origin)
        state = self.state
        txid = state.txid + 1
        version = state.ns.put(txid, key, value, expected)
        state.txid = txid
        self._logged(txid, payload, origin, version, wake)
        return txid, version

    def _logged(self, txid: int, payload: bytes, origin: Origin | None, result: Any,
                wake: bool) -> None:
        """After `txid` was applied: its record into the journal's buffer, the table of
        recent requests and the tail of records."""
        self.journal.append(txid, self.epoch, payload, wake)
        if origin is not None:
            self._remember(origin, txid, result)
        if self._tail_limit:
            self._tail.append((txid, self.epoch, payload))
            self._tail_bytes += len(payload)
            if self._tail_bytes > self._tail_limit:
                self._trim_tail()

    def adopt_changes(self, changes: ChangeLog, through_txid: int) -> bool:
        """Serve watches from `changes`, a replica's change log up to `through_txid` (a
        promoted standby's): True when taken, False when it is not the log of this state."""
        if (self.changes is None or through_txid != self.state.txid
                or changes.oldest_txid > through_txid + 1):
            return False
        changes.max_events, changes.max_bytes = self.changes.max_events, self.changes.max_bytes
        changes.note_epoch(self.state.txid + 1, self.epoch)
        self.changes = changes
        self.state.ns.changes = changes.events
        return True

    def wait_durable(self, txid: int, timeout: float | None = None) -> bool:
        return self.journal.wait_durable(txid, timeout)

    # --- the record tail -----------------------------------------------------------------

    def _trim_tail(self) -> None:
        tail = self._tail
        head = self._tail_head
        durable = self.journal.durable_txid
        size = self._tail_bytes
        target = self._tail_limit * 3 // 4   # trim with slack, not on every record
        # never drop records that are not durable yet: they are not in the files to read
        while size > target and head < len(tail) and tail[head][0] <= durable:
            size -= len(tail[head][2])
            tail[head] = None
            head += 1
        if head > 4096 and head * 2 > len(tail):
            del tail[:head]
            head = 0
        self._tail_head, self._tail_bytes = head, size

    def records(self, from_txid: int, max_bytes: int = 1 << 20) -> list[tuple[int, int, bytes]]:
        """Durable records from `from_txid` on, at most `max_bytes` of payload (but at least
        one record when there is one): from the in-memory tail when it reaches back that
        far, else from the journal files. Raises Truncated when `from_txid` is older than
        every record kept (a snapshot covers it: fetch that instead)."""
        durable = self.journal.durable_txid
        if from_txid > durable:
            return []
        out: list[tuple[int, int, bytes]] = []
        size = 0
        tail = self._tail
        head = self._tail_head
        if head < len(tail) and tail[head][0] <= from_txid:
            for i in range(head + from_txid - tail[head][0], len(tail)):
                record = tail[i]
                if record[0] > durable or (out and size + len(record[2]) > max_bytes):
                    break
                out.append(record)
                size += len(record[2])
            return out
        first = self.journal.first_txid
        if first is None or from_txid < first:
            raise Truncated(f"records from txid {from_txid} are no longer kept (the oldest "
                            f"kept is {first}); fetch the newest snapshot, then the records "
                            "after it")
        try:
            for record in self.journal.read(from_txid, max_bytes=max_bytes):
                if record[0] > durable:
                    break
                out.append(record)
        except StorageError as exc:
            raise Truncated(str(exc)) from None
        return out

    # --- snapshots -----------------------------------------------------------------------

    def snapshot(self, created_ms: int | None = None) -> snapshots.SnapshotHeader:
        """Write a snapshot of the current state in-process (the state does not change while
        it is written), then prune old snapshots and the journal segments they cover.

        A master in production leaves this to the checkpoint node, which snapshots its
        replica; this path serves tests, the demo and offline compaction."""
        state = self.state
        txid = state.txid
        self.journal.wait_durable(txid)   # never snapshot past what the journal holds
        if created_ms is None:
            created_ms = int(time.time() * 1000)
        header = snapshots.write_snapshot(self.snapshot_dir, txid, self.epoch, state.digest,
                                          state.image_chunks(self.recent_requests),
                                          created_ms)
        self.journal.roll()
        self.retain()
        return header

    def retain(self) -> list[Path]:
        """Keep the newest `keep_snapshots` snapshots and the journal from the oldest kept;
        return the journal segments deleted. Safe off the loop thread (Journal.purge takes
        the journal's locks)."""
        snapshots.prune(self.snapshot_dir, self.keep_snapshots)
        kept = snapshots.list_snapshots(self.snapshot_dir)
        if kept:
            return self.journal.purge(kept[-1][0])
        return []

    def close(self) -> None:
        """Graceful stop: drain the journal buffer, fsync, close. Nothing accepted is lost."""
        self.journal.close()


def load_snapshot(path: str | Path, recent: RecentRequests | None = None) -> State:
    """Load and fully verify one snapshot file (checksums, image, digest). The recent
    requests it carries are remembered in `recent` (an empty table; checked and dropped when
    None); on an error the caller discards what the table got."""
    header, body = snapshots.read_body(path)
    state = State.from_image(body, source=str(path), recent=recent)
    if state.txid != header.txid or state.digest != header.digest:
        raise CorruptionError(f"snapshot image (txid {state.txid}, digest {state.digest:016x}) "
                              f"does not match its header (txid {header.txid}, digest "
                              f"{header.digest:016x})", path=str(path))
    return state


def replay_all(journal_dir: str | Path, from_state: State | None = None) -> State:
    """Replay a journal directory offline into a state (read only: nothing is cut)."""
    from mwcluster.storage.segments import iter_records

    state = from_state or State()
    for txid, _epoch, payload in iter_records(journal_dir, state.txid + 1):
        state.apply(txid, decode_payload(payload)[0])
    return state
