"""What the checkpoint node does with its decision machine's instructions, without a socket:
the replica (its State and its table of recent requests) and the one executor of the
instructions of core/follower.py. The node (node.py), its tests and the in-memory cluster
simulation (mwcluster/testing/simulation) all run this code; only the two ports differ.

    feed(event): the machine answers the event with instructions; each is executed in order,
        and the outcome of one (a FETCH reply, a loaded snapshot, a digest) is queued as an
        event of its own, fed once the whole list has run: the machine never sees a state it
        did not plan for. After a record that fails to apply, the rest of the list (which
        assumed it) is skipped, but a Checkpoint the machine counts as started is answered
        CheckpointFailed.

    Apply          State.apply, the one apply path, and the record's origin remembered
    Fetch          link.fetch                   -> Fetched, FetchTruncated or FetchFailed
    FetchSnapshot  link.load_master_snapshot    -> SnapshotLoaded, NoSnapshot or
                                                   SnapshotFailed (the replica is replaced)
    ResetEmpty     an empty replica             CheckDigest   -> DigestResult
    Checkpoint     checkpoints.start_checkpoint (the node forks a writer: its outcome comes
                   later as an event of the node's loop)
    SetAsideSnapshots  checkpoints.set_aside
    DigestMismatch logged at ERROR with the epoch and txid, and counted      Note   logged

The ports: `link` (MasterLink over the DEALER, or a twin) answers `fetch(from_txid,
max_bytes) -> (durable_txid, records)` (raising Truncated or another MwclusterError),
`load_master_snapshot(work_dir, chunk_bytes, credit, recent) -> State` (raising NoSnapshot,
MwclusterError or OSError) and `epoch`; `checkpoints` answers `start_checkpoint(ins)` and
`set_aside(ins)`, each returning an event or None. Time comes from `clock`.
"""

from __future__ import annotations

import gc
import logging
from collections import deque
from pathlib import Path
from typing import Any, Callable, Protocol

from mwcluster import errors
from mwcluster.core import follower as fm
from mwcluster.core.recent import RecentRequests
from mwcluster.core.records import decode_payload
from mwcluster.core.changes import ChangeLog
from mwcluster.core.state import State
from mwcluster.engine import load_snapshot
from mwcluster.storage import snapshot as snapshots
from mwcluster.wire.protocol import (TOPIC_LOG, ErrorCode, ProtocolError, check_records,
                                     decode_pub)

log = logging.getLogger(__name__)

_LEVELS = {"info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


class CheckpointPort(Protocol):
    def start_checkpoint(self, ins: fm.Checkpoint) -> fm.Event | None: ...

    def set_aside(self, ins: fm.SetAsideSnapshots) -> fm.Event | None: ...


class ReplicaExecutor:
    def __init__(self, machine: fm.Follower, checkpoints: CheckpointPort, *,
                 incoming_dir: Path, recent_requests: int, fetch_max_bytes: int,
                 snapshot_chunk_bytes: int, snapshot_credit: int,
                 clock: Callable[[], float], link: Any = None,
                 freeze_loaded: bool = True) -> None:
        self.machine = machine
        self.checkpoints = checkpoints
        self.link = link                  # set by the node once its DEALER is connected
        self.incoming_dir = incoming_dir
        self.recent_requests = recent_requests
        self.fetch_max_bytes = fetch_max_bytes
        self.snapshot_chunk_bytes = snapshot_chunk_bytes
        self.snapshot_credit = snapshot_credit
        self.clock = clock
        # gc.freeze() after the master's snapshot is loaded (see _load_master_snapshot): for
        # the node's process; its tests and the simulation, in a shared process, say False
        self.freeze_loaded = freeze_loaded
        self.state = State()
        # the replica's recent changes, as a master keeps them for watches: a promotion hands
        # them to the master it becomes, so that watchers resume there without a Resync
        self.changes: ChangeLog
        self._track()
        # the requests behind the records this replica covers (from the snapshot it loaded,
        # then the records it applied): its checkpoints carry them to the master, and a
        # promotion to the master it becomes, so that a retry is answered, not applied again
        self.recent = RecentRequests(recent_requests)
        self.digest_mismatches = 0

    def replace(self, state: State, recent: RecentRequests) -> None:
        """A new base: a local snapshot loaded at start, or the master's."""
        self.state = state
        self.recent = recent
        self._track()

    def _track(self) -> None:
        """Keep the changes of the replica from its state's txid on (a new log per base)."""
        self.changes = ChangeLog(self.state.txid)
        self.state.ns.changes = self.changes.events

    def feed(self, event: fm.Event) -> None:
        events = deque([event])
        while events:
            instructions = self.machine.handle(events.popleft())
            failed = None
            for ins in instructions:
                if failed is not None:
                    # The rest assumed that record applied; a reload follows. A checkpoint
                    # the machine counts as started must still be answered.
                    if type(ins) is fm.Checkpoint:
                        events.append(fm.CheckpointFailed(
                            self.clock(), f"not started: record {failed.txid} did not apply"))
                    continue
                outcome = self.execute(ins)
                if outcome is not None:
                    events.append(outcome)
                    if type(outcome) is fm.ApplyFailed:
                        failed = outcome

    def execute(self, ins: fm.Instruction) -> fm.Event | None:
        kind = type(ins)
        if kind is fm.Apply:
            return self.apply(ins.records)
        if kind is fm.Fetch:
            try:
                durable, records = self.link.fetch(ins.from_txid, self.fetch_max_bytes)
            except errors.Truncated:
                return fm.FetchTruncated(self.clock())
            except errors.MwclusterError as exc:
                return fm.FetchFailed(self.clock(), str(exc))
            return fm.Fetched(durable, records, self.clock(), self.link.epoch)
        if kind is fm.CheckDigest:
            return fm.DigestResult(ins.epoch, ins.txid, ins.digest, self.state.digest,
                                   self.clock())
        if kind is fm.Note:
            log.log(_LEVELS.get(ins.level, logging.INFO), "%s", ins.text)
            return None
        if kind is fm.Checkpoint:
            return self.checkpoints.start_checkpoint(ins)
        if kind is fm.FetchSnapshot:
            return self._load_master_snapshot(ins.reason)
        if kind is fm.ResetEmpty:
            self.state = State()
            self.recent.clear()
            self._track()
            return None
        if kind is fm.SetAsideSnapshots:
            return self.checkpoints.set_aside(ins)
        if kind is fm.DigestMismatch:
            self.digest_mismatches += 1
            log.error("epoch %d: DIGEST MISMATCH at txid %d: the replica's digest is %016x, "
                      "the master's %016x; the replica is reloaded from the master's snapshot "
                      "and log", ins.epoch, ins.txid, ins.actual, ins.expected)
            return None
        raise AssertionError(f"unknown instruction {ins!r}")

    def apply(self, records: list) -> fm.ApplyFailed | None:
        """Apply records (txid, epoch, payload) in order; the first that fails stops it."""
        state = self.state
        remember = self.recent.remember
        note_epoch = self.changes.note_epoch
        try:
            for txid, epoch, payload in records:
                note_epoch(txid, epoch)
                try:
                    rec, origin = decode_payload(payload)
                    result = state.apply(txid, rec)
                    if origin is not None:
                        remember(origin, txid, result)
                except Exception as exc:  # noqa: BLE001  any failure: the replica reloads
                    return fm.ApplyFailed(txid, f"{type(exc).__name__}: {exc}", self.clock())
        finally:
            self.changes.settle()
        return None

    def _load_master_snapshot(self, reason: str) -> fm.Event:
        log.info("loading the master's snapshot (%s)", reason)
        recent = RecentRequests(self.recent_requests)
        try:
            state = self.link.load_master_snapshot(self.incoming_dir, self.snapshot_chunk_bytes,
                                                   self.snapshot_credit, recent)
        except errors.NoSnapshot:
            return fm.NoSnapshot(self.clock())
        except errors.MwclusterError as exc:
            return fm.SnapshotFailed(self.clock(), str(exc))
        except OSError as exc:
            return fm.SnapshotFailed(self.clock(), f"cannot write {self.incoming_dir}: {exc}")
        self.replace(state, recent)     # the snapshot's requests, not the old replica's
        # A base of millions of objects: keep the cyclic collector from walking it at every
        # full collection (pauses of hundreds of ms at 1,000,000 keys, the replica's lag),
        # as the master does after recovery. Dropped states are still freed by refcount.
        if self.freeze_loaded:
            gc.freeze()
        return fm.SnapshotLoaded(state.txid, self.clock())


def load_local(snapshot_dir: Path, recent_requests: int
               ) -> tuple[State, RecentRequests, Path] | None:
    """The newest local snapshot that verifies, with the recent requests it carries, and its
    path; None when there is none (damaged ones are skipped, with a warning)."""
    for _txid, path in snapshots.list_snapshots(snapshot_dir):
        recent = RecentRequests(recent_requests)
        try:
            return load_snapshot(path, recent), recent, path
        except errors.MwclusterError as exc:
            log.warning("local snapshot %s is skipped: %s", path, exc)
    return None


def stream_event(frames: list[bytes], now: float) -> fm.StreamBatch | fm.Heartbeat:
    """One log-stream message (two frames: topic, body) as the machine's event; raises
    MwclusterError, ValueError or TypeError when it cannot be read (the gap it leaves is
    fetched)."""
    if len(frames) != 2:
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"{len(frames)} frames")
    topic, fields = decode_pub(frames[0], frames[1])
    if topic == TOPIC_LOG:
        epoch, first, last, records, digest = fields
        check_records(records)
        _check_ints(epoch, first, last, 0 if digest is None else digest)
        return fm.StreamBatch(epoch, first, last, records, now, digest)
    epoch, durable, digest, _now_ms = fields
    _check_ints(epoch, durable, 0 if digest is None else digest)
    return fm.Heartbeat(epoch, durable, digest, now)


def _check_ints(*values) -> None:
    for value in values:
        if type(value) is not int or value < 0:
            raise ValueError(f"expected an unsigned integer, got {value!r:.40}")
