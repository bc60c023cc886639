"""The replica's decisions: a pure state machine, events in, instructions out.

The checkpoint node (nodes/checkpoint/node.py) keeps a live copy of the master's state from the log
stream. Everything it decides (what to apply, when to FETCH, when to fetch the master's
snapshot, when its replica diverged, when a checkpoint is due) is decided here, with no
sockets, files, threads or clock: time comes in with every event. The shell feeds events and
executes the instructions in the order given, *all of them* before it feeds the next event
(the results of executing them, e.g. a FETCH reply, are queued as events of their own).

The rules are zguide's Clone pattern:

- subscribe first (the shell does), then get a base state: the node's own newest local
  snapshot (`Start(base_txid=T)`), else the master's snapshot (`FetchSnapshot`), else, when
  the master has none (`NoSnapshot`), the empty state at txid 0;
- FETCH the records after the base over the reliable path; meanwhile stream records are
  buffered (up to `max_buffer_bytes`; past that they are dropped and fetched later);
- apply only `txid == last + 1`; drop records at or below `last`; never apply out of order;
- a gap, silence longer than `silence_heartbeats` heartbeat intervals, or a new master epoch
  sends it back to fetching what it lacks; failures are retried with exponential backoff,
  never given up for good.

Digest check: each log batch carries the master's digest at its last txid, and a heartbeat
its digest at its durable txid D (when the master is idle). When the replica is exactly at
that txid (now or later, as it applies), the machine asks the shell to compare
(`CheckDigest`, placed right after the `Apply` that reaches it); one check waits at a time
(the sooner one is kept); a
mismatch (`DigestResult` with different digests) is reported (`DigestMismatch`, which the
shell logs at ERROR with the epoch and txid), counted, and repaired by reloading from the
master's snapshot and log. A record that fails to apply, or a master whose durable txid is
below the replica's (it lost history), is repaired the same way; but a stream message that
says so may just be late (held up, then overtaken by later messages), so messages below the
replica's view (of an epoch below the one followed, or a heartbeat below the replica in its
own epoch) are counted (`stale_messages`) and not acted on: the machine asks the master
(FETCH), and only its reply, which cannot be late, reloads the replica or moves the epoch
(a master restarted on an emptied data directory starts its epochs again).

Checkpoints: every `period_s` seconds or `txns` records, whichever first, when the replica
holds something newer than its last checkpoint, one at a time; a failure is retried after a
backoff (never in a tight loop). `CheckpointRequested` (for `--once`) makes one due as soon
as the replica has caught up with the master's durable txid.

    phase      has a base   what it is doing
    joining    no           getting the master's snapshot (first start, or FETCH truncated)
    fetching   yes          fetching records it lacks (start, gap, silence, new epoch)
    following  yes          caught up; applying the stream as it comes
    reloading  no           the replica diverged; replacing it with the master's snapshot
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mwcluster.core.follower_messages import (  # noqa: F401  (the machine's vocabulary)
    Phase, Start, StreamBatch, Heartbeat, Fetched, FetchTruncated, FetchFailed,
    SnapshotLoaded, NoSnapshot, SnapshotFailed, ApplyFailed, DigestResult, CheckpointDone,
    CheckpointFailed, CheckpointRequested, Tick, Apply, Fetch, FetchSnapshot, ResetEmpty,
    CheckDigest, DigestMismatch, Checkpoint, SetAsideSnapshots, Note, Rec, Event,
    Instruction)


@dataclass(slots=True)
class Counters:
    gaps: int = 0                 # a gap in the stream (or records missing behind a heartbeat)
    silences: int = 0             # silence longer than the allowed heartbeats
    epoch_changes: int = 0
    fetches: int = 0
    fetch_failures: int = 0
    truncated: int = 0
    snapshot_fetches: int = 0
    snapshot_failures: int = 0
    reloads: int = 0
    duplicates: int = 0           # stream or fetched records at or below the replica's txid
    stale_messages: int = 0       # stream messages below the replica's view (an older
    #                               epoch, a heartbeat below it): checked by a FETCH
    dropped_buffer: int = 0       # stream records not buffered (buffer full)
    digest_checks_ok: int = 0
    digest_checks_failed: int = 0
    apply_failures: int = 0
    checkpoints: int = 0
    checkpoint_failures: int = 0
    applied: int = 0


@dataclass(slots=True)
class FollowerConfig:
    heartbeat_interval_s: float = 1.0
    silence_heartbeats: float = 3.0
    period_s: float = 60.0
    txns: int = 100_000
    max_buffer_bytes: int = 64 << 20
    retry_initial_s: float = 0.1
    retry_max_s: float = 5.0


@dataclass(slots=True)
class _Pending:
    epoch: int
    txid: int
    digest: int


class Follower:
    """The decision machine of one replica. `handle(event)` returns the instructions."""

    def __init__(self, config: FollowerConfig | None = None) -> None:
        self.config = config or FollowerConfig()
        self.phase = Phase.JOINING
        self.epoch: int | None = None     # the master's epoch, from the stream
        self.last: int | None = None      # the replica's txid (None before a base)
        self.durable = 0                  # the master's durable txid seen in this epoch
        self.counters = Counters()
        self.last_digest_check: tuple[int, int, bool] | None = None   # (epoch, txid, ok)
        # the newest txid at which this replica is known to equal the master: a passed digest
        # check, or a base from the master (its snapshot, or empty); None for a local base
        self.verified_txid: int | None = None
        self.last_checkpoint_failure: str | None = None
        self.last_failure: str | None = None     # of a fetch or snapshot transfer
        self._buffer: dict[int, Rec] = {}
        self._buffer_bytes = 0
        self._pending: _Pending | None = None
        self._fetching = False
        self._snapshotting = False
        self._want: str | None = None     # "fetch" or "snapshot", retried at _retry_at
        self._retry_at = 0.0
        self._backoff = self.config.retry_initial_s
        self._truncated_streak = 0
        self._last_heard = 0.0
        self._last_fetch_at = float("-inf")
        self._caught_up_at = 0.0
        # checkpoints
        self.checkpoint_txid = 0          # the newest local checkpoint's txid
        self._cp_at = 0.0
        self._count_from = 0
        self._cp_running = False
        self._cp_retry_at = 0.0
        self._cp_backoff = 1.0
        self._cp_forced = False
        self._handlers = {
            Start: self._start, StreamBatch: self._stream, Heartbeat: self._heartbeat,
            Fetched: self._fetched, FetchTruncated: self._truncated,
            FetchFailed: self._fetch_failed, SnapshotLoaded: self._snapshot_loaded,
            NoSnapshot: self._no_snapshot, SnapshotFailed: self._snapshot_failed,
            ApplyFailed: self._apply_failed, DigestResult: self._digest_result,
            CheckpointDone: self._checkpoint_done, CheckpointFailed: self._checkpoint_failed,
            CheckpointRequested: self._checkpoint_requested, Tick: self._tick,
        }

    # --- the one entry point -----------------------------------------------------------

    def handle(self, event: Event) -> list[Instruction]:
        out: list[Instruction] = []
        self._handlers[type(event)](event, out)
        self._maybe_checkpoint(event.now, out)
        return out

    @property
    def has_base(self) -> bool:
        return self.phase in (Phase.FETCHING, Phase.FOLLOWING)

    @property
    def caught_up(self) -> bool:
        return self.phase == Phase.FOLLOWING and self.last is not None \
            and self.last >= self.durable

    def lag_records(self) -> int:
        return max(0, self.durable - (self.last or 0))

    def lag_s(self, now: float) -> float:
        """How long since the replica last held every record the master reported durable."""
        if self.last is not None and self.last >= self.durable and self.has_base:
            return 0.0
        return max(0.0, now - self._caught_up_at)

    def status(self, now: float) -> dict[str, Any]:
        c = self.counters
        check = self.last_digest_check
        return {
            "state": self.phase.value, "epoch_seen": self.epoch, "replica_txid": self.last,
            "master_durable_txid": self.durable, "lag_records": self.lag_records(),
            "lag_s": round(self.lag_s(now), 3), "buffered_records": len(self._buffer),
            # digest checks against the master's heartbeats (named without "digest" so
            # that status tools do not print the counts as hex digests)
            "checks_passed": c.digest_checks_ok, "checks_failed": c.digest_checks_failed,
            "last_digest_check": None if check is None else {
                "epoch": check[0], "txid": check[1], "ok": check[2]},
            "gaps": c.gaps, "silences": c.silences, "epoch_changes": c.epoch_changes,
            "fetches": c.fetches, "fetch_failures": c.fetch_failures,
            "snapshot_fetches": c.snapshot_fetches, "snapshot_failures": c.snapshot_failures,
            "reloads": c.reloads, "duplicates": c.duplicates,
            "stale_messages": c.stale_messages,
            "dropped_buffer": c.dropped_buffer, "apply_failures": c.apply_failures,
            "applied_records": c.applied, "last_failure": self.last_failure,
        }

    # --- events --------------------------------------------------------------------------

    def _start(self, ev: Start, out: list) -> None:
        self._last_heard = self._cp_at = self._caught_up_at = ev.now
        if ev.base_txid is None:
            self._want_snapshot("no local snapshot: joining from the master's", ev.now, out)
            return
        self.last = self.checkpoint_txid = self._count_from = ev.base_txid
        self.phase = Phase.FETCHING
        out.append(Note("info", f"starting from the local snapshot at txid {ev.base_txid}"))
        self._fetch(ev.now, out)

    def _older_epoch(self, epoch: int, now: float, out: list) -> bool:
        """A message from an epoch below the one followed: most likely a late one from a
        master since restarted or replaced, but possibly a master that came back with less
        history (a wiped data directory). Not acted on: counted, and checked by asking the
        master (FETCH, whose reply carries its epoch and durable txid: the truth)."""
        if self.epoch is not None and epoch < self.epoch:
            self._stale(now, out)
            return True
        return False

    def _stale(self, now: float, out: list) -> None:
        self.counters.stale_messages += 1
        if self.has_base and self.last is not None:
            self._fetch(now, out)

    def _stream(self, ev: StreamBatch, out: list) -> None:
        if self._older_epoch(ev.epoch, ev.now, out):
            return
        self._last_heard = ev.now
        self._see_epoch(ev.epoch, ev.now, out)
        if ev.last > self.durable:
            self.durable = ev.last
        if ev.digest is not None:
            self._expect(ev.epoch, ev.last, ev.digest, out)
        if not self.has_base:
            for rec in ev.records:
                self._keep(rec)
            return
        self._take(ev.records, ev.now, out)
        if self._buffer and self.phase == Phase.FOLLOWING:
            self.counters.gaps += 1
            lowest = min(self._buffer)
            out.append(Note("warning", f"epoch {self.epoch}: gap in the log stream after txid "
                                       f"{self.last} (next received {lowest}); fetching"))
            self._fetch(ev.now, out)

    def _heartbeat(self, ev: Heartbeat, out: list) -> None:
        if self._older_epoch(ev.epoch, ev.now, out):
            return
        last = self.last
        if ev.epoch == self.epoch and self.has_base and last is not None \
                and ev.durable_txid < last:
            # Below the replica in the epoch followed: a heartbeat overtaken by later
            # messages on the way (a running master's durable txid never goes back), or a
            # master restarted on an emptied data directory, whose epoch starts again. The
            # FETCH reply tells them apart (_fetched reloads if the master really is below).
            self._last_heard = ev.now
            self._stale(ev.now, out)
            return
        self._last_heard = ev.now
        self._see_epoch(ev.epoch, ev.now, out)
        if ev.durable_txid > self.durable:
            self.durable = ev.durable_txid
        if not self.has_base or last is None:
            if ev.digest is not None:
                self._expect(ev.epoch, ev.durable_txid, ev.digest, out)
            return
        if ev.durable_txid < last:       # a new epoch below the replica: history was lost
            self._reload(f"epoch {ev.epoch}: the master's durable txid {ev.durable_txid} is "
                         f"below the replica's txid {last}: the master lost history",
                         ev.now, out)
            return
        if ev.digest is not None:
            self._expect(ev.epoch, ev.durable_txid, ev.digest, out)
        if last < ev.durable_txid and not self._buffer and self.phase == Phase.FOLLOWING:
            self.counters.gaps += 1
            out.append(Note("warning", f"epoch {ev.epoch}: the master is at durable txid "
                                       f"{ev.durable_txid}, the replica at {last}: stream "
                                       "messages were lost; fetching"))
            self._fetch(ev.now, out)
        elif last >= self.durable:
            self._caught_up_at = ev.now

    def _fetched(self, ev: Fetched, out: list) -> None:
        self._fetching = False
        if not self.has_base or self.last is None:
            return                          # a reload started meanwhile: stale
        if ev.durable_txid < self.last:
            self._reload(f"epoch {self.epoch}: FETCH says the master's durable txid is "
                         f"{ev.durable_txid}, below the replica's txid {self.last}: the "
                         "master lost history", ev.now, out)
            return
        if ev.epoch is not None:
            self._see_epoch(ev.epoch, ev.now, out, resync=False)   # this reply is the resync
        before = self.last
        if ev.durable_txid > self.durable:
            self.durable = ev.durable_txid
        self._take(ev.records, ev.now, out)
        progressed = self.last > before
        if progressed:
            self._backoff = self.config.retry_initial_s
            self._truncated_streak = 0
            self.last_failure = None
        if self._buffer and min(self._buffer) > self.durable + 1:
            # stream records above what the master says is durable: left from another
            # epoch's stream; the reliable path is the truth
            self.counters.dropped_buffer += len(self._buffer)
            self._buffer.clear()
            self._buffer_bytes = 0
        if self.last < self.durable or self._buffer:
            if progressed:
                self._fetch(ev.now, out)
            else:
                self._schedule("fetch", ev.now, "FETCH returned nothing new")
            return
        if self.phase != Phase.FOLLOWING:
            out.append(Note("info", f"epoch {self.epoch}: caught up at txid {self.last}"))
        self.phase = Phase.FOLLOWING
        self._caught_up_at = ev.now

    def _truncated(self, ev: FetchTruncated, out: list) -> None:
        self._fetching = False
        self.counters.truncated += 1
        self._truncated_streak += 1
        self.phase = Phase.JOINING
        reason = (f"records after txid {self.last} are no longer kept by the master; "
                  "loading its snapshot")
        if self._truncated_streak > 1:     # snapshot + FETCH keep disagreeing: do not spin
            out.append(Note("warning", reason + " (again; retrying after a pause)"))
            self._schedule("snapshot", ev.now, "FETCH truncated again after a snapshot")
            return
        self._want_snapshot(reason, ev.now, out)

    def _fetch_failed(self, ev: FetchFailed, out: list) -> None:
        self._fetching = False
        self.counters.fetch_failures += 1
        out.append(Note("warning", f"FETCH from txid {(self.last or 0) + 1} failed: "
                                   f"{ev.reason}; retrying in {self._backoff:.2f} s"))
        self._schedule("fetch", ev.now, ev.reason)

    def _snapshot_loaded(self, ev: SnapshotLoaded, out: list) -> None:
        self._snapshotting = False
        self._backoff = self.config.retry_initial_s
        self._base(ev.txid, ev.now, out)
        out.append(Note("info", f"epoch {self.epoch}: loaded the master's snapshot at txid "
                                f"{ev.txid}"))
        self._take((), ev.now, out)
        self._fetch(ev.now, out)

    def _no_snapshot(self, ev: NoSnapshot, out: list) -> None:
        self._snapshotting = False
        out.append(ResetEmpty())
        self._base(0, ev.now, out)
        out.append(Note("info", "the master has no snapshot: starting from txid 1"))
        self._take((), ev.now, out)
        self._fetch(ev.now, out)

    def _snapshot_failed(self, ev: SnapshotFailed, out: list) -> None:
        self._snapshotting = False
        self.counters.snapshot_failures += 1
        out.append(Note("warning", f"loading the master's snapshot failed: {ev.reason}; "
                                   f"retrying in {self._backoff:.2f} s"))
        self._schedule("snapshot", ev.now, ev.reason)

    def _apply_failed(self, ev: ApplyFailed, out: list) -> None:
        self.counters.apply_failures += 1
        self._set_aside(f"record {ev.txid} did not apply", out)
        self._reload(f"epoch {self.epoch}: record {ev.txid} does not apply to the replica "
                     f"({ev.reason})", ev.now, out)

    def _digest_result(self, ev: DigestResult, out: list) -> None:
        ok = ev.expected == ev.actual
        self.last_digest_check = (ev.epoch, ev.txid, ok)
        if ok:
            self.counters.digest_checks_ok += 1
            self.verified_txid = max(self.verified_txid or 0, ev.txid)
            return
        self.counters.digest_checks_failed += 1
        out.append(DigestMismatch(ev.epoch, ev.txid, ev.expected, ev.actual))
        self._set_aside(f"digest mismatch at txid {ev.txid}", out)
        self._reload(f"epoch {ev.epoch}: digest mismatch at txid {ev.txid}", ev.now, out)

    def _checkpoint_done(self, ev: CheckpointDone, out: list) -> None:
        self._cp_running = False
        self._cp_forced = False
        self.counters.checkpoints += 1
        self.checkpoint_txid = self._count_from = ev.txid
        self._cp_at = ev.now
        self._cp_backoff = 1.0
        self.last_checkpoint_failure = None

    def _checkpoint_failed(self, ev: CheckpointFailed, out: list) -> None:
        self._cp_running = False
        self.counters.checkpoint_failures += 1
        self.last_checkpoint_failure = ev.reason
        self._cp_retry_at = ev.now + self._cp_backoff
        out.append(Note("error", f"checkpoint failed: {ev.reason}; retrying in "
                                 f"{self._cp_backoff:.1f} s"))
        self._cp_backoff = min(self._cp_backoff * 2, max(1.0, self.config.period_s))

    def _checkpoint_requested(self, ev: CheckpointRequested, out: list) -> None:
        self._cp_forced = True

    def _tick(self, ev: Tick, out: list) -> None:
        now = ev.now
        if self._fetching or self._snapshotting:
            return
        if self._want is not None:
            if now >= self._retry_at:
                want, self._want = self._want, None
                if want == "snapshot" or not self.has_base:
                    self._want_snapshot("retrying", now, out)
                else:
                    self._fetch(now, out)
            return
        if not self.has_base:
            self._want_snapshot("no base state", now, out)
            return
        silence = self.config.silence_heartbeats * self.config.heartbeat_interval_s
        if now - self._last_heard > silence and now - self._last_fetch_at > silence:
            self.counters.silences += 1
            self.phase = Phase.FETCHING
            out.append(Note("warning", f"epoch {self.epoch}: nothing from the master for "
                                       f"{now - self._last_heard:.1f} s; fetching from txid "
                                       f"{self.last + 1}"))
            self._fetch(now, out)

    # --- helpers -------------------------------------------------------------------------

    def _see_epoch(self, epoch: int, now: float, out: list, resync: bool = True) -> None:
        if epoch == self.epoch:
            return
        if self.epoch is None:
            self.epoch = epoch
            return
        self.counters.epoch_changes += 1
        out.append(Note("warning", f"the master's epoch changed from {self.epoch} to {epoch} "
                                   f"(replica at txid {self.last}); re-syncing"))
        self.epoch = epoch
        self.durable = 0
        self._pending = None
        self._buffer.clear()
        self._buffer_bytes = 0
        if self.has_base and resync:
            self.phase = Phase.FETCHING
            self._fetch(now, out, force=True)

    def _expect(self, epoch: int, txid: int, digest: int, out: list) -> None:
        """The master's digest at txid: compare now if the replica is exactly there, else
        when it gets there (unless a sooner check is already waiting)."""
        last = self.last
        if self.has_base and last is not None:
            if txid == last:
                out.append(CheckDigest(epoch, txid, digest))
                return
            if txid < last:
                return                  # passed already (a late duplicate)
        pending = self._pending
        if pending is None or txid < pending.txid or (last is not None and
                                                      pending.txid <= last):
            self._pending = _Pending(epoch, txid, digest)

    def _base(self, txid: int, now: float, out: list) -> None:
        """The replica now holds a base state at `txid` (the master's snapshot, or empty)."""
        self.last = self._count_from = self.verified_txid = txid
        self.phase = Phase.FETCHING
        self.durable = 0                # what the master has: its FETCH reply says
        if self._pending is not None and self._pending.txid < txid:
            self._pending = None
        for t in [t for t in self._buffer if t <= txid]:
            self._buffer_bytes -= len(self._buffer.pop(t)[2])

    def _keep(self, rec: Rec) -> None:
        if rec[0] in self._buffer:
            self.counters.duplicates += 1
            return
        if self._buffer_bytes + len(rec[2]) > self.config.max_buffer_bytes:
            self.counters.dropped_buffer += 1
            return
        self._buffer[rec[0]] = rec
        self._buffer_bytes += len(rec[2])

    def _take(self, records, now: float, out: list) -> None:
        """Apply what continues the replica, buffer what is beyond, drop what is old."""
        last = self.last
        run: list[Rec] = []
        pending = self._pending
        check_at = pending.txid if pending is not None else -1
        buffer = self._buffer
        for rec in records:
            txid = rec[0]
            if txid == last + 1:
                run.append(rec)
                last = txid
                if buffer:
                    old = buffer.pop(txid, None)
                    if old is not None:
                        self._buffer_bytes -= len(old[2])
                if txid == check_at:
                    out.append(Apply(run))
                    run = []
                    out.append(CheckDigest(pending.epoch, txid, pending.digest))
                    self._pending = pending = None
                    check_at = -1
            elif txid > last + 1:
                self._keep(rec)
            else:
                self.counters.duplicates += 1
        while buffer:
            rec = buffer.pop(last + 1, None)
            if rec is None:
                break
            self._buffer_bytes -= len(rec[2])
            run.append(rec)
            last += 1
            if last == check_at:
                out.append(Apply(run))
                run = []
                out.append(CheckDigest(pending.epoch, last, pending.digest))
                self._pending = pending = None
                check_at = -1
        if buffer and min(buffer) <= last:      # rare: only after out-of-order input
            for t in [t for t in buffer if t <= last]:
                self._buffer_bytes -= len(buffer.pop(t)[2])
        if run:
            out.append(Apply(run))
        self.counters.applied += last - self.last
        self.last = last
        if pending is not None and pending.txid < last:
            self._pending = None
        if last >= self.durable:
            self._caught_up_at = now

    def _fetch(self, now: float, out: list, force: bool = False) -> None:
        if self._fetching and not force:
            return
        if self.phase == Phase.FOLLOWING:
            self.phase = Phase.FETCHING
        self._fetching = True
        self._want = None
        self._last_fetch_at = now
        self.counters.fetches += 1
        out.append(Fetch(self.last + 1))

    def _want_snapshot(self, reason: str, now: float, out: list) -> None:
        if self._snapshotting:
            return
        self._snapshotting = True
        self._want = None
        self.counters.snapshot_fetches += 1
        out.append(FetchSnapshot(reason))

    def _schedule(self, want: str, now: float, reason: str) -> None:
        self._want = want
        self.last_failure = reason
        self._retry_at = now + self._backoff
        self._backoff = min(self._backoff * 2, self.config.retry_max_s)

    def _set_aside(self, reason: str, out: list) -> None:
        verified = -1 if self.verified_txid is None else self.verified_txid
        out.append(SetAsideSnapshots(verified, reason))
        if self.checkpoint_txid > verified:
            self.checkpoint_txid = self._count_from = max(verified, 0)

    def _reload(self, reason: str, now: float, out: list) -> None:
        self.counters.reloads += 1
        self.phase = Phase.RELOADING
        self._pending = None
        self._fetching = False
        out.append(Note("error", reason + "; reloading from the master's snapshot and log"))
        self._want_snapshot(reason, now, out)

    def _maybe_checkpoint(self, now: float, out: list) -> None:
        if self._cp_running or not self.has_base or now < self._cp_retry_at:
            return
        last = self.last
        if self._cp_forced:
            if not self.caught_up:
                return
        elif last <= self.checkpoint_txid or (
                now - self._cp_at < self.config.period_s
                and last - self._count_from < self.config.txns):
            return
        self._cp_running = True
        out.append(Checkpoint(last, self.epoch or 0))
