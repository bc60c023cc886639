"""The write-ahead journal writer: buffered appends, one flusher thread, segment rolls, purge,
reads of durable records, and what happens when the disk fails. The file format is owned by
`mwcluster.storage.segments`; payloads are opaque bytes tagged with a txid and an epoch.

Appends never touch the disk: `append` frames the record into an in-memory buffer under a
plain lock and wakes the flusher only when it sleeps. The flusher swaps the buffer for an
empty one, writes the whole batch, fsyncs it, then advances `durable_txid`, wakes
`wait_durable` callers and calls `on_durable(durable_txid)` (on the flusher thread: it must be
cheap and thread-safe). Whatever arrived during an fsync is the next batch (group commit).
With `flush_interval_s` > 0 (the flush policy) the flusher lets a batch gather until its
oldest record is that old, so it fsyncs at most once per interval and the loss window stays
within about the interval plus one write and fsync, unless `wake(upto)` (a reply is parked
until record `upto` is durable), `wait_durable`, or appends waiting for buffer space ask for
the write at once.

Segments are created lazily: `roll()` and a full segment only mark where the next segment
starts; the file, named by the first txid that goes in it, is created (header + records,
fsync, directory fsync) when that record is written. A segment is fsynced whole before the
next one is started, which is why only the newest may have a torn tail.

Write failures: a write or fsync OSError (ENOSPC, EIO...) never advances `durable_txid` and
never leaves a hole. The journal enters the failed state: `append` and `check_writable`
raise JournalUnavailable naming the OS error and what to do (free disk space or fix the
device; writes resume on their own). The failed batch stays in memory and the flusher retries
with a bounded exponential backoff (`retry_initial_s` doubling up to `retry_max_s`). Since the
page cache cannot be trusted after a failed fsync, each retry reopens the segment, truncates it
back to the offset of the last successful fsync (or recreates a segment whose creation was not
made durable) and rewrites the whole pending batch before fsyncing again. When a retry succeeds
the journal is healthy and appends are taken again. `close()` while failed makes one last
attempt and, if it fails, raises JournalUnavailable naming the txids that were not saved.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import tenacity

from mwcluster.errors import JournalUnavailable, StorageError
from mwcluster.storage import fsutil
from mwcluster.storage import segments as seg
from mwcluster.storage.fsutil import FaultyJournalIO, JournalIO
from mwcluster.storage.flusher import Flusher
from mwcluster.storage.segment_index import Batch, SegmentIndex, read_durable

__all__ = ["FaultyJournalIO", "Journal", "JournalIO", "JournalStats", "OpenReport"]

_log = logging.getLogger(__name__)

_pack_head20 = seg.FRAME_HEAD20.pack
_pack_u32 = seg.U32.pack
_crc32 = zlib.crc32
_SYNC = seg.SYNC_MARKER
_FRAME = seg.FRAME_HEADER_SIZE
_LOSS_SAMPLES = 4096


@dataclass(frozen=True, slots=True)
class OpenReport:
    directory: Path
    segments: int
    first_txid: int | None  # oldest record on disk, None when there is none
    last_txid: int  # 0 when the journal has never held a record
    cut_bytes: int
    cut_records_guess: int
    broken_paths: tuple[Path, ...]
    warnings: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class JournalStats:
    last_txid: int
    durable_txid: int
    buffered_bytes: int  # appended but not yet fsynced
    oldest_unflushed_age_s: float  # the loss window now; 0.0 when everything is durable
    flushes: int
    fsyncs: int
    records_written: int
    bytes_written: int
    last_fsync_s: float
    max_fsync_s: float
    fsync_seconds_total: float
    segments: int
    journal_bytes: int
    failed: bool
    last_error: str | None
    appends_waiting: int  # appends blocked by back-pressure right now
    loss_window_samples: tuple[float, ...]  # age of each batch's oldest record at its fsync


class Journal(Flusher):
    """A segmented write-ahead journal with a background flusher. See the module docstring.

    The flusher is a daemon thread: a process that exits without `close()` loses what was
    not fsynced yet, exactly as in a crash. With `background=False` there is no thread: the
    owner calls `flush()` when it wants the buffer written (the in-memory cluster simulation
    decides that moment with its seeded scheduler), and `wait_durable` flushes itself."""

    def __init__(self, directory: str | os.PathLike[str], *, segment_bytes: int = 64 << 20,
                 buffer_limit_bytes: int = 64 << 20, max_record_bytes: int = 64 << 20,
                 epoch: int = 0, io: JournalIO | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 on_durable: Callable[[int], None] | None = None,
                 retry_initial_s: float = 0.05, retry_max_s: float = 5.0,
                 background: bool = True, flush_interval_s: float = 0.0):
        if not 0.0 <= flush_interval_s <= 60.0:
            raise ValueError(f"flush_interval_s must be within 0..60 s, not "
                             f"{flush_interval_s!r}")
        self.directory = Path(directory)
        # The flush policy (flusher.py): a batch waits until its oldest record is this old
        # before it is written, unless someone waits for it (urge, wait_durable, back-pressure)
        self.flush_interval_s = flush_interval_s
        # while the flusher waits out the interval: when that wait ends (0.0: not waiting).
        # Read without the lock by the master's loop (`lingering`).
        self.linger_until = 0.0
        self._urgent = False
        self._background = background
        self._segment_bytes = segment_bytes
        self._buffer_limit_bytes = buffer_limit_bytes
        self._max_record_bytes = max_record_bytes
        self._epoch = epoch
        self._io = io or JournalIO()
        self._clock = clock
        self._on_durable = on_durable
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)  # the flusher sleeps on it
        self._space = threading.Condition(self._lock)  # appends blocked by back-pressure
        self._durable_cv = threading.Condition(self._lock)
        self._purge_lock = threading.Lock()
        # Everything below is guarded by _lock, except what the flusher alone owns.
        self._active = bytearray()
        self._active_rolls: list[tuple[int, int]] = []
        self._active_t0 = 0.0
        self._inflight: Batch | None = None
        self._unflushed_bytes = 0
        self._last_txid = 0
        self._durable_txid = 0
        self._first_record_txid: int | None = None
        self._segments: list[SegmentIndex] = []
        self._refuse: str | None = f"journal {self.directory} is not open; call open() first"
        self._failure: str | None = None
        self._last_error: str | None = None
        self._close_error: str | None = None
        self._opened = self._closed = self._stopping = self._abandoned = False
        self._flusher_idle = False
        self._flusher_done = False
        self._appends_waiting = 0
        self._thread: threading.Thread | None = None
        self._flushes = self._fsyncs = self._records_written = self._bytes_written = 0
        self._last_fsync_s = self._max_fsync_s = self._fsync_total_s = 0.0
        self._loss_samples: deque[float] = deque(maxlen=_LOSS_SAMPLES)
        self._retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(OSError),
            wait=tenacity.wait_exponential(multiplier=retry_initial_s, max=retry_max_s),
            stop=lambda _state: self._stopping,
            sleep=self._backoff_sleep, before_sleep=self._on_write_failed, reraise=True)

    # --- lifecycle -------------------------------------------------------------------------

    def open(self) -> OpenReport:
        """Create the directory if needed, recover it, then start the flusher thread.

        Raises CorruptionError when the journal is damaged where a crash cannot explain it.
        """
        if self._opened or self._closed:
            raise RuntimeError(f"journal {self.directory} was opened already")
        try:
            if not self.directory.is_dir():
                self.directory.mkdir(parents=True, exist_ok=True)
                fsutil.fsync_dir(self.directory.parent)
        except OSError as e:
            raise StorageError(f"cannot create journal directory {self.directory}: {e}") from e
        rec = seg.recover_dir(self.directory, io=self._io, max_record_bytes=self._max_record_bytes)
        warnings = []
        for scan in rec.segments:
            s = SegmentIndex(fsutil.AppendFile(self._io, scan.path, scan.size_bytes),
                             scan.first_txid, scan.record_count > 0)
            s.index(scan.first_txid, seg.HEADER_SIZE)
            for n, off in enumerate(scan.offsets or ()):
                s.index(scan.first_txid + n, off)
            self._segments.append(s)
            if scan.epoch is not None and scan.epoch > self._epoch:
                warnings.append(f"segment {scan.path.name} was created by epoch {scan.epoch}, "
                                f"newer than this writer's epoch {self._epoch}")
        earlier = sorted(p.name for p in self.directory.glob(f"*{fsutil.BROKEN_SUFFIX}*")
                         if p not in rec.broken_paths)
        if earlier:
            more = ", ..." if len(earlier) > 3 else ""
            warnings.append(f"{len(earlier)} .broken file(s) from earlier recoveries are in "
                            f"{self.directory} ({', '.join(earlier[:3])}{more}): inspect, "
                            f"then delete them")
        kept = [s for s in rec.segments if s.record_count]
        last = kept[-1].last_txid if kept else (
            rec.segments[-1].first_txid - 1 if rec.segments else 0)
        with self._lock:
            self._last_txid = self._durable_txid = last
            self._first_record_txid = kept[0].first_txid if kept else None
            self._refuse = None
            self._opened = True
        if self._background:
            self._thread = threading.Thread(target=self._run, daemon=True,
                                            name=f"journal-flusher:{self.directory}")
            self._thread.start()
        for w in warnings:
            _log.warning("journal %s: %s", self.directory, w)
        return OpenReport(self.directory, len(self._segments), self._first_record_txid, last,
                          rec.cut_bytes, rec.cut_records_guess, rec.broken_paths, tuple(warnings))

    def close(self) -> None:
        """Drain the buffer, write, fsync, close the segment, stop the thread. Idempotent.

        Raises JournalUnavailable if the disk still fails at close: it names the lost txids.
        """
        if not self._stop(abandon=False):
            return
        if self._close_error is not None:
            raise JournalUnavailable(self._close_error)

    def abandon(self) -> None:
        """Stop the flusher without writing what is buffered: an in-process crash, for tests."""
        self._stop(abandon=True)

    def _stop(self, *, abandon: bool) -> bool:
        with self._lock:
            if self._closed:
                return False
            self._closed = self._stopping = True
            self._abandoned = abandon
            self._refuse = f"journal {self.directory} is closed"
            self._wake.notify_all()
            self._space.notify_all()
        if self._thread is not None:
            self._thread.join()
        elif not self._background and self._opened:
            self._stop_without_thread(abandon)
        return True

    def __enter__(self) -> Journal:
        if not self._opened:
            self.open()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        return self._closed

    # --- the append path -------------------------------------------------------------------

    def append(self, txid: int, epoch: int, payload: bytes, wake: bool = True) -> None:
        """Frame a record into the buffer; never touches the disk. Blocks while the unflushed
        bytes are over buffer_limit_bytes. ValueError unless txid == last_txid + 1;
        JournalUnavailable when the journal is failed or closed."""
        n = len(payload)
        if n > self._max_record_bytes:
            raise ValueError(f"record {txid} is {n} bytes, above the maximum "
                             f"{self._max_record_bytes}")
        try:
            head = _pack_head20(_SYNC, 0, n, txid, epoch)
        except Exception as e:
            raise ValueError(f"txid {txid} or epoch {epoch} does not fit the frame: {e}") from e
        crc = _pack_u32(_crc32(payload, _crc32(head)))
        with self._lock:
            if self._refuse is not None:
                raise JournalUnavailable(self._refuse)
            if self._unflushed_bytes >= self._buffer_limit_bytes:
                self._wait_for_space()
            if txid != self._last_txid + 1:
                raise ValueError(f"txid {txid} appended after {self._last_txid}: records must "
                                 f"be appended in order without gaps")
            buf = self._active
            if not buf:
                self._active_t0 = self._clock()
                if self._first_record_txid is None:
                    self._first_record_txid = txid
            buf += head
            buf += crc
            buf += payload
            self._last_txid = txid
            self._unflushed_bytes += n + _FRAME
            if wake and self._flusher_idle:
                self._flusher_idle = False
                self._wake.notify()

    def wake(self, upto: int = 0) -> None:
        """Start a flush of what is buffered, if the flusher is idle. For callers that append
        with `wake=False` so the flusher does not take the GIL while they are still busy
        (the master wakes it once its replies are sent). `upto` > 0: someone waits for
        every record up to that txid to be durable (a reply parked until then), so unless
        they are durable or being written already, they skip the flush interval (urge)."""
        with self._lock:
            if upto and self._urge(upto):
                return
            if self._flusher_idle and self._active:
                self._flusher_idle = False
                self._wake.notify()

    def _urge(self, upto: int) -> bool:
        """Under _lock: make the batch holding `upto` skip the flush interval, unless that
        record is durable or in the batch being written (then nothing is urged: a flag left
        set would cut the next batch's wait too). Whether it urged."""
        inflight = self._inflight
        if upto <= self._durable_txid or not self._active or (
                inflight is not None and upto <= inflight.last_txid):
            return False
        self._urgent = True
        self.linger_until = 0.0
        self._flusher_idle = False
        self._wake.notify()
        return True

    @property
    def lingering(self) -> bool:
        """Whether the flusher is waiting out the flush interval now (the master's loop does
        not count that wait as a flusher starved of the GIL; once the wait is over, or
        urged, it does)."""
        until = self.linger_until
        return until > 0.0 and self._clock() < until

    def _wait_for_space(self) -> None:
        self._urge(self._last_txid)     # the buffer is full: no batch waits for the interval
        self._appends_waiting += 1
        try:
            while self._unflushed_bytes >= self._buffer_limit_bytes and self._refuse is None:
                self._space.wait()
        finally:
            self._appends_waiting -= 1
        if self._refuse is not None:
            raise JournalUnavailable(self._refuse)

    @property
    def failure(self) -> str | None:
        """Why appends are refused right now (a failed write or fsync), or None."""
        return self._refuse

    def check_writable(self) -> None:
        """Raise JournalUnavailable now if an append would be refused."""
        refuse = self._refuse
        if refuse is not None:
            raise JournalUnavailable(refuse)

    def wait_durable(self, txid: int, timeout: float | None = None) -> bool:
        """Wait until every record up to `txid` is fsynced; False on timeout or when the
        journal stopped before that. Without a flusher thread: flush now, once."""
        if not self._background:
            if self._durable_txid < txid and self._opened and not self._closed:
                self._flush_once()
            return self._durable_txid >= txid
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            self._urge(txid)        # a caller waits: no flush interval
            while self._durable_txid < txid:
                if self._flusher_done or not self._opened:
                    return False
                if deadline is None:
                    self._durable_cv.wait()
                else:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0 or not self._durable_cv.wait(remaining):
                        return self._durable_txid >= txid
            return True

    def roll(self) -> int:
        """Make the next appended record start a new segment; return that record's txid.

        Lazy: no file is created until the record is written."""
        with self._lock:
            nxt = self._last_txid + 1
            rolls = self._active_rolls
            if not rolls or rolls[-1][0] != nxt:
                rolls.append((nxt, len(self._active)))
            return nxt

    def set_next_txid(self, txid: int) -> None:
        """Make the next append `txid`: after a snapshot at txid - 1 when the journal is empty.

        ValueError when the journal holds a record >= txid, or holds records and txid would
        leave a gap after them (the on-disk txids must stay contiguous)."""
        if txid < 1:
            raise ValueError(f"txid must be >= 1, not {txid}")
        with self._lock:
            if self._first_record_txid is not None:
                if self._last_txid >= txid:
                    raise ValueError(f"journal {self.directory} holds records up to "
                                     f"{self._last_txid}, at or past {txid}")
                if txid != self._last_txid + 1:
                    raise ValueError(f"journal {self.directory} ends at txid {self._last_txid}; "
                                     f"starting at {txid} would leave a gap")
                return
            # Empty: a header-only newest segment with another name is replaced lazily.
            self._last_txid = self._durable_txid = txid - 1
            self._active_rolls = []
            self._durable_cv.notify_all()

    # --- reading and purging -----------------------------------------------------------------

    @property
    def last_txid(self) -> int:
        return self._last_txid

    @property
    def durable_txid(self) -> int:
        return self._durable_txid

    @property
    def first_txid(self) -> int | None:
        """The oldest txid on disk (durable), None when the journal holds none."""
        with self._lock:
            first = self._first_record_txid
            return first if first is not None and self._durable_txid >= first else None

    def read(self, from_txid: int, max_bytes: int | None = None, *, verify: bool = True
             ) -> Iterator[tuple[int, int, bytes]]:
        """Yield durable records (txid, epoch, payload) from `from_txid`, read from the
        segment files; at least one record when any is due, then stop before `max_bytes` of
        payload would be passed. StorageError when from_txid was purged. `verify=False`
        skips the crc check (for replay right after open() verified every record)."""
        with self._lock:
            durable = self._durable_txid
            first = self._first_record_txid
            segs = [(s.first_txid, s.path, s.index_txids, s.index_offsets, len(s.index_txids))
                    for s in self._segments if s.has_records]
        if not segs or from_txid > durable:
            return iter(())
        if first is not None and from_txid < first:
            raise StorageError(f"journal {self.directory}: records before txid {first} were "
                               f"purged; txid {from_txid} must come from a snapshot")
        return read_durable(self.directory, segs, max(from_txid, 1), durable, max_bytes,
                            self._max_record_bytes, verify)

    def purge(self, upto_txid: int) -> list[Path]:
        """Delete the segments whose every record is <= upto_txid, never the newest one (the
        one being written); fsync the directory; return the deleted paths."""
        with self._purge_lock:
            with self._lock:
                doomed = []
                while (len(self._segments) > 1 and
                       self._segments[1].first_txid - 1 <= upto_txid):
                    doomed.append(self._segments.pop(0))
                if doomed:
                    head = self._segments[0]
                    self._first_record_txid = head.first_txid if head.has_records else (
                        self._durable_txid + 1 if self._last_txid > self._durable_txid else None)
            try:
                for s in doomed:
                    self._io.unlink(s.path)
                if doomed:
                    self._io.fsync_dir(self.directory)
            except OSError as e:
                raise StorageError(f"journal {self.directory}: purging segments up to txid "
                                   f"{upto_txid} failed: {e}") from e
            return [s.path for s in doomed]

    def stats(self) -> JournalStats:
        with self._lock:
            now = self._clock()
            if self._inflight is not None:
                age = now - self._inflight.t0
            elif self._active:
                age = now - self._active_t0
            else:
                age = 0.0
            return JournalStats(
                self._last_txid, self._durable_txid, self._unflushed_bytes, max(age, 0.0),
                self._flushes, self._fsyncs, self._records_written, self._bytes_written,
                self._last_fsync_s, self._max_fsync_s, self._fsync_total_s,
                len(self._segments), sum(s.size_bytes for s in self._segments),
                self._failure is not None, self._last_error, self._appends_waiting,
                tuple(self._loss_samples))
