"""The journal's flusher: how buffered records become durable. The other half of
`storage.journal.Journal` (the append side, reads, purge and lifecycle are in journal.py);
`Journal` inherits this class, so both halves share one object, its lock and its state, and
journal.py's module docstring is the contract of both.

    _run             the flusher thread: sleep until records are buffered (or the journal
                     stops), take them as one batch (group commit), write and fsync it
    _linger          the flush policy: with flush_interval_s > 0 a batch waits until its
                     oldest record is that old, so at most one fsync per interval, unless
                     the journal is urged (wake(upto), wait_durable: someone waits for its
                     records; appends waiting for buffer space), or it stops
    flush            the same step on the caller's thread, for a journal without a thread
                     (background=False: the in-memory cluster simulation)
    _write_piece     one piece of a batch (a batch is split where a segment roll falls,
                     segment_index.plan_pieces) into the current segment, fsynced; then the
                     durable txid moves and waiters wake
    _start_segment   a new segment file, named by its first txid, created with the piece
                     that goes in it (a segment is fsynced whole before the next is started)
    _failed          a write or fsync failed: the journal refuses appends, naming the OS
                     error, until a retry (backoff, tenacity) rewrites the batch

Everything the flusher alone owns (the segment files' descriptors) is touched only by the
flusher; what it shares with appenders is changed under `_lock`.
"""

from __future__ import annotations

import logging
import time

import tenacity

from mwcluster.errors import JournalUnavailable
from mwcluster.storage import fsutil
from mwcluster.storage import segments as seg
from mwcluster.storage.segment_index import Batch, SegmentIndex, plan_pieces

_log = logging.getLogger("mwcluster.storage.journal")


class _Abandoned(Exception):
    pass


class Flusher:
    """The flusher's methods of Journal (see the module docstring); not used alone."""

    def _stop_without_thread(self, abandon: bool) -> None:
        """What the flusher thread does when it stops, for a journal that has none."""
        if not abandon and not self._flush_once():
            self._not_saved(self._last_error)
        if self._segments:
            self._segments[-1].file.close()
        with self._lock:
            self._flusher_done = True
            self._durable_cv.notify_all()

    def _run(self) -> None:
        try:
            while True:
                with self._lock:
                    while not self._active and not self._stopping:
                        self._flusher_idle = True
                        self._wake.wait()
                    self._flusher_idle = False
                    if self.flush_interval_s:
                        self._linger()
                    if self._abandoned or not self._active:
                        return
                    self._urgent = False
                    batch = self._take_batch()
                self._flush(batch)
        except _Abandoned:
            pass
        except OSError as e:  # retries stopped by close() or abandon()
            if not self._abandoned:
                self._not_saved(e)
        except BaseException as e:
            _log.exception("journal %s: flusher stopped by an unexpected error", self.directory)
            self._close_error = f"journal {self.directory}: flusher stopped: {e!r}"
            with self._lock:
                self._failure = self._refuse = self._close_error
        finally:
            if self._segments:
                self._segments[-1].file.close()
            with self._lock:
                self._flusher_done = True
                if self._refuse is None:
                    self._refuse = f"journal {self.directory}: the flusher has stopped"
                self._durable_cv.notify_all()
                self._space.notify_all()

    def _linger(self) -> None:
        """The flush policy, under _lock: wait until the oldest buffered record is
        flush_interval_s old, so that records arriving meanwhile share its write and fsync,
        unless the journal is urged (Journal._urge: a parked reply through wake(upto),
        wait_durable, appends waiting for buffer space) or it stops. Appends do not wake a
        lingering flusher:
        it is not idle. `linger_until` holds the wait's end meanwhile (Journal.lingering)."""
        due = self._active_t0 + self.flush_interval_s
        self.linger_until = due
        try:
            while not (self._urgent or self._stopping):
                left = due - self._clock()
                if left <= 0:
                    return
                self._wake.wait(left)
        finally:
            self.linger_until = 0.0

    def _not_saved(self, error) -> None:
        """Closed while the disk still fails: name what was not saved (close() raises it)."""
        with self._lock:
            lost = (self._durable_txid + 1, self._last_txid)
        self._close_error = (f"journal {self.directory}: closed while the disk still fails "
                             f"({error}); txids {lost[0]}..{lost[1]} were not saved")
        _log.error("%s", self._close_error)

    def _take_batch(self) -> Batch:
        data = self._active
        rolls = self._active_rolls
        if rolls:
            carry = []
            if rolls[-1][1] == len(data):  # requested for a record not appended yet
                carry.append((rolls.pop()[0], 0))
            self._active_rolls = carry
        else:
            rolls = []
        batch = Batch(data, self._durable_txid + 1, self._last_txid, rolls, self._active_t0)
        self._active = bytearray()
        self._inflight = batch
        return batch

    def flush(self) -> bool:
        """Write and fsync what is buffered now, on the caller's thread (a journal opened with
        background=False). A failed write is not retried here: the journal is failed (appends
        refused, as with the thread) and the next call rewrites the batch. True when every
        record appended so far is durable."""
        if self._background:
            raise RuntimeError(f"journal {self.directory} has a flusher thread of its own")
        if not self._opened or self._closed:
            raise JournalUnavailable(self._refuse or f"journal {self.directory} is closed")
        return self._flush_once()

    def _flush_once(self) -> bool:
        with self._lock:
            batch = self._inflight
            if batch is None:
                if not self._active:
                    return True
                batch = self._take_batch()
        try:
            self._write_pieces(batch, plan_pieces(batch))
        except OSError as err:
            self._failed(err, attempt=1)
            return False
        self._flushed(batch)
        return self._durable_txid == self._last_txid

    def _flush(self, batch: Batch) -> None:
        pieces = plan_pieces(batch)
        try:   # the common case, without the retry machinery's per-call cost under the GIL
            self._write_pieces(batch, pieces)
        except OSError:   # the failure policy: retry with backoff (see the module docstring)
            for attempt in self._retrying:
                with attempt:
                    self._write_pieces(batch, pieces)
        self._flushed(batch)

    def _write_pieces(self, batch: Batch, pieces: list) -> None:
        """Write the batch's pieces from the first not yet durable (a retry resumes there)."""
        while batch.next_piece < len(pieces):
            self._write_piece(batch, *pieces[batch.next_piece])
            batch.next_piece += 1

    def _flushed(self, batch: Batch) -> None:
        with self._lock:
            self._inflight = None
            self._flushes += 1
            self._loss_samples.append(self._clock() - batch.t0)

    def _write_piece(self, batch: Batch, first: int, last: int, start: int, end: int,
                     roll: bool) -> None:
        cur = self._segments[-1] if self._segments else None
        if cur is None or (cur.has_records and (roll or cur.size_bytes >= self._segment_bytes)) \
                or (not cur.has_records and cur.first_txid != first):
            cur = self._start_segment(cur, first)
        before = cur.size_bytes
        # a retry after a failure truncates back to the last fsync and rewrites (AppendFile)
        new_size = cur.file.append(memoryview(batch.data)[start:end], self._check_abandoned)
        elapsed, written = cur.file.last_sync_s, new_size - before
        with self._lock:
            cur.index(first, before or seg.HEADER_SIZE)
            cur.has_records = True
            self._durable_txid = last
            self._unflushed_bytes -= end - start
            self._fsyncs += 1
            self._records_written += last - first + 1
            self._bytes_written += written
            self._last_fsync_s = elapsed
            self._max_fsync_s = max(self._max_fsync_s, elapsed)
            self._fsync_total_s += elapsed
            if self._failure is not None:
                _log.warning("journal %s: writes work again (txids up to %d are durable, "
                             "epoch %d)", self.directory, last, self._epoch)
                self._failure = None
                if not self._closed:
                    self._refuse = None
            self._durable_cv.notify_all()
            self._space.notify_all()
        if self._on_durable is not None:
            try:
                self._on_durable(last)
            except Exception:
                _log.exception("journal %s: on_durable(%d) raised", self.directory, last)

    def _start_segment(self, cur: SegmentIndex | None, first: int) -> SegmentIndex:
        if cur is not None:
            # Every piece is fsynced as it is written, so the old segment is already durable.
            cur.file.close()
            if not cur.has_records:  # an empty newest segment from an earlier run
                try:
                    self._io.unlink(cur.path)
                except FileNotFoundError:
                    pass
        path = self.directory / seg.segment_name(first)
        new = SegmentIndex(fsutil.AppendFile(self._io, path, 0,
                                             seg.encode_header(first, self._epoch)), first, False)
        with self._lock:
            if cur is not None and not cur.has_records:
                self._segments.remove(cur)
            self._segments.append(new)
        return new

    def _check_abandoned(self) -> None:
        if self._abandoned:
            raise _Abandoned()

    def _backoff_sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        with self._lock:
            # only close() and abandon() cut the wait short: a notify for anything else
            # (urge, back-pressure) must not make a failing disk retry faster
            while not self._stopping:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._wake.wait(left)
        self._check_abandoned()

    def _on_write_failed(self, state: tenacity.RetryCallState) -> None:
        self._failed(state.outcome.exception() if state.outcome else None,
                     state.attempt_number)

    def _failed(self, err: BaseException | None, attempt: int) -> None:
        cur = self._segments[-1] if self._segments else None
        with self._lock:
            first_failure = self._failure is None
            self._last_error = str(err)
            self._failure = (
                f"journal {self.directory} cannot take writes: writing to "
                f"{cur.path if cur else self.directory} failed: {err}. Free disk space or fix "
                f"the device; the journal keeps retrying (attempt {attempt}) and "
                f"writes resume on their own; txids {self._durable_txid + 1}..{self._last_txid}"
                f" are not durable yet")
            if not self._closed:
                self._refuse = self._failure
            self._space.notify_all()
        log = _log.error if first_failure else _log.debug
        log("journal %s: write failed (epoch %d, durable txid %d): %s; retrying",
            self.directory, self._epoch, self._durable_txid, err)
