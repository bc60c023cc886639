"""Snapshot uploads to the master: the checkpoint node sends a snapshot file it wrote, the
master installs it and deletes the journal segments the kept snapshots cover.

    BEGIN  [txid, epoch, digest, size, crc32(, status_endpoint)]: one upload at a time
           (BAD_STATE otherwise; a BEGIN from the client that owns the current upload, or from
           the node that owns it (the same status endpoint: it restarted), replaces it, since
           that sender gave up on it; so does any BEGIN once the current upload was idle for
           `idle_s`, and `expire()` drops such an upload on the loop's tick); INVALID when
           txid is older than the newest snapshot here or above the durable txid; "have" when
           a snapshot at txid with that size is already kept.
           Opens `.snap-{txid:020d}-{upload_id}.mws.tmp` in the snapshot directory
           (clean_temp removes such files at the next start).
    CHUNK  [upload_id, offset, data]: checked on the loop (at most 1 MiB, contiguous
           offsets), then written by the worker thread with a running crc32; the reply is
           parked until it is written, so the sender's credit bounds what waits in memory.
    END    [upload_id]: size checked on the loop; then the install runs on the worker, after
           the writes: crc32 equals BEGIN's -> verify (both checksums) -> header equals what
           BEGIN announced -> fsync -> rename -> directory fsync -> prune snapshots
           (keep_snapshots) -> purge the journal up to the oldest kept.
    ABORT  [upload_id]: drop the upload; the worker closes and removes its temporary file
           after the writes queued before.

The worker queues each outcome (a CHUNK's or END's reply) and pokes the loop (`wake`), which
sends the parked replies (`finished()`). The loop never writes the file itself: a 1 MiB
pwrite can block for tens of ms when the kernel throttles a writer of many dirty pages,
which showed as a master latency spike during every upload of a large snapshot.

The digest at the snapshot's txid is checked against a ring of (txid -> digest) the loop
records for every digest it publishes (at the end of each log batch, and in idle heartbeats;
core/digest_ring.py, the last 131,072 of them). The checkpoint node checkpoints at the end of
a batch, so its T is normally there. A txid the ring no longer (or never) held is accepted on
the checksums alone, logged, and counted in `digest_unverified_uploads`.

Everything here except the `_*_job` methods runs on the loop thread; the file descriptor and
the running crc32 of an upload belong to the worker once the upload is open. Journal.purge
takes the journal's locks, so the worker may call it.
"""

from __future__ import annotations

import logging
import os
import time
import zlib
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

from mwcluster import errors
from mwcluster.core.digest_ring import DigestRing
from mwcluster.nodes.master.checkpoints import BadHello, CheckpointNodes, check_endpoint
from mwcluster.storage import snapshot as snapshots
from mwcluster.storage.crashpoints import crash_point
from mwcluster.storage.fsutil import fsync_dir
from mwcluster.wire.protocol import ErrorCode, encode_error, encode_reply

log = logging.getLogger(__name__)

MAX_UPLOAD_CHUNK_BYTES = 1 << 20
MAX_UPLOAD_BYTES = 1 << 40
# An upload that saw no CHUNK for this long (its sender died) may be replaced by any BEGIN.
UPLOAD_IDLE_S = 30.0


class UploadRefused(Exception):
    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code


class _Upload:
    __slots__ = ("id", "client_id", "txid", "epoch", "digest", "size", "crc", "path", "fd",
                 "received", "running_crc", "started", "ending", "last_activity", "endpoint",
                 "dropped", "write_error")

    def __init__(self, upload_id: int, client_id: bytes, txid: int, epoch: int, digest: int,
                 size: int, crc: int, path: Path, fd: int, endpoint: str | None = None) -> None:
        self.id = upload_id
        self.client_id = client_id
        self.endpoint = endpoint
        self.txid, self.epoch, self.digest, self.size, self.crc = txid, epoch, digest, size, crc
        self.path = path
        self.fd = fd
        self.received = 0
        self.running_crc = 0
        self.started = self.last_activity = time.monotonic()
        self.ending = False
        self.dropped = False          # set on the loop; the worker then skips its writes
        self.write_error: str | None = None     # set by the worker


class SnapshotUploads:
    def __init__(self, engine, epoch: int, wake: Callable[[], None] = lambda: None, *,
                 idle_s: float = UPLOAD_IDLE_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.engine = engine
        self.idle_s = idle_s
        self.clock = clock
        self.epoch = epoch
        self.wake = wake
        self.nodes = CheckpointNodes()       # who sent hellos and uploads (for STATUS)
        self.current: _Upload | None = None
        self._next_id = int(time.time())
        self._ring = DigestRing()
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="snapshot-install")
        self._done: deque = deque()          # (ident, request_id, answer) from the worker
        self.ok = 0
        self.rejected = 0
        self.have = 0
        self.digest_unverified = 0
        self.last_error: str | None = None
        self.segments_after_purge: int | None = None

    # --- the digest ring (loop thread) ---------------------------------------------------

    def record(self, txid: int, digest: int) -> None:
        self._ring.record(txid, digest)

    # --- requests (loop thread) -------------------------------------------------------------

    def begin(self, client_id: bytes, args: list) -> list:
        if len(args) not in (5, 6) or any(type(a) is not int or a < 0 for a in args[:5]):
            raise UploadRefused(ErrorCode.BAD_REQUEST, "SNAPSHOT_UPLOAD_BEGIN takes [txid, "
                                "epoch, digest, size_bytes, crc32] (unsigned integers) and "
                                "optionally the node's status endpoint")
        txid, epoch, digest, size, crc = args[:5]
        try:
            endpoint = check_endpoint(args[5]) if len(args) == 6 else None
        except BadHello as exc:
            raise UploadRefused(ErrorCode.BAD_REQUEST, str(exc)) from None
        cur = self.current
        if cur is not None:
            idle = not cur.ending and self.clock() - cur.last_activity >= self.idle_s
            same = cur.client_id == client_id or (endpoint is not None
                                                  and cur.endpoint == endpoint)
            if cur.ending or (not same and not idle):
                raise UploadRefused(ErrorCode.BAD_STATE,
                                    f"another snapshot upload (txid {cur.txid}) is in progress;"
                                    " retry later")
            log.info("epoch %d: the upload of txid %d is replaced by a new BEGIN (%s)",
                     self.epoch, cur.txid, "from the same node" if same else
                     f"it was idle for {self.idle_s:g} s")
            self._drop(cur)
        min_size = snapshots.HEADER_BYTES + snapshots.TRAILER_BYTES
        if not min_size <= size <= MAX_UPLOAD_BYTES:
            raise UploadRefused(ErrorCode.INVALID, f"size_bytes {size} is not a snapshot "
                                f"file's size (at least {min_size})")
        durable = self.engine.journal.durable_txid
        if txid > durable:
            raise UploadRefused(ErrorCode.INVALID, f"the snapshot's txid {txid} is above the "
                                f"master's durable txid {durable} (another history?)")
        kept = snapshots.list_snapshots(self.engine.snapshot_dir)
        if kept:
            newest, path = kept[0]
            if txid < newest:
                raise UploadRefused(ErrorCode.INVALID, f"the snapshot's txid {txid} is older "
                                    f"than the master's newest snapshot ({newest})")
        for kept_txid, path in kept:
            if kept_txid == txid:
                try:
                    same = path.stat().st_size == size
                except OSError:
                    same = False
                if same:
                    self.have += 1
                    self.nodes.uploaded(endpoint, client_id, txid, self.clock())
                    return [0, "have"]
                raise UploadRefused(ErrorCode.INVALID, f"the master keeps a snapshot at txid "
                                    f"{txid} of another size")
        known = self._ring.get(txid)
        if known is not None and known != digest:
            self._reject(f"digest {digest:016x} at txid {txid} differs from the master's "
                         f"{known:016x} (another history?)")
            raise UploadRefused(ErrorCode.INVALID, self.last_error)
        directory = self.engine.snapshot_dir
        directory.mkdir(parents=True, exist_ok=True)
        self._next_id += 1
        # a name of its own: a replaced upload's file is removed later, by the worker
        path = directory / f".{snapshots.snapshot_name(txid)[:-4]}-{self._next_id}.mws.tmp"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        self.current = _Upload(self._next_id, client_id, txid, epoch, digest, size, crc,
                               path, fd, endpoint)
        self.current.started = self.current.last_activity = self.clock()
        return [self._next_id, "accepted"]

    def _get(self, upload_id: Any) -> _Upload:
        cur = self.current
        if type(upload_id) is not int or cur is None or cur.id != upload_id:
            raise UploadRefused(ErrorCode.BAD_STATE, f"no snapshot upload {upload_id!r:.40} "
                                "in progress (aborted or replaced); start again with BEGIN")
        return cur

    def chunk(self, ident: bytes, request_id: int, args: list) -> None:
        """Queue the write; the reply comes from finished() once it is written."""
        if len(args) != 3 or type(args[1]) is not int or type(args[2]) is not bytes:
            raise UploadRefused(ErrorCode.BAD_REQUEST, "SNAPSHOT_UPLOAD_CHUNK takes "
                                "[upload_id, offset, data: bin]")
        upload_id, offset, data = args
        cur = self._get(upload_id)
        if cur.ending:
            raise UploadRefused(ErrorCode.BAD_STATE, "the upload is already being installed")
        if len(data) > MAX_UPLOAD_CHUNK_BYTES:
            raise UploadRefused(ErrorCode.TOO_LARGE, f"a chunk is at most "
                                f"{MAX_UPLOAD_CHUNK_BYTES} bytes; got {len(data)}")
        if offset != cur.received:
            raise UploadRefused(ErrorCode.BAD_STATE, f"chunk at offset {offset}, expected "
                                f"{cur.received} (offsets must be contiguous)")
        if cur.received + len(data) > cur.size:
            self._fail(cur, f"the chunks exceed the announced size {cur.size}")
            raise UploadRefused(ErrorCode.INVALID, self.last_error)
        cur.received += len(data)
        cur.last_activity = self.clock()
        self._worker.submit(self._write_job, ident, request_id, cur, offset, data)

    def abort(self, args: list) -> None:
        if len(args) != 1:
            raise UploadRefused(ErrorCode.BAD_REQUEST, "SNAPSHOT_UPLOAD_ABORT takes [upload_id]")
        cur = self.current
        if cur is not None and cur.id == args[0] and not cur.ending:
            self._drop(cur)
        return None

    def end(self, ident: bytes, request_id: int, args: list) -> None:
        """Start the install; the reply comes from finished() once the worker is done."""
        if len(args) != 1:
            raise UploadRefused(ErrorCode.BAD_REQUEST, "SNAPSHOT_UPLOAD_END takes [upload_id]")
        cur = self._get(args[0])
        if cur.ending:
            raise UploadRefused(ErrorCode.BAD_STATE, "the upload is already being installed")
        if cur.received != cur.size:
            self._fail(cur, f"received {cur.received} bytes of the announced {cur.size}")
            raise UploadRefused(ErrorCode.INVALID, self.last_error)
        cur.ending = True
        known = self._ring.get(cur.txid)
        self._worker.submit(self._install_job, ident, request_id, cur, known)

    # --- the worker ---------------------------------------------------------------------

    def _write_job(self, ident: bytes, request_id: int, cur: _Upload, offset: int,
                   data: bytes) -> None:
        if cur.dropped or cur.write_error is not None:
            answer = (ErrorCode.BAD_STATE, cur.write_error or "the upload was dropped "
                      "(aborted, replaced or idle); start again with BEGIN")
        else:
            try:
                os.pwrite(cur.fd, data, offset)
                cur.running_crc = zlib.crc32(data, cur.running_crc)
                answer = (0, [offset + len(data)])
            except OSError as exc:
                cur.write_error = f"cannot write {cur.path}: {exc}"
                answer = (ErrorCode.UNAVAILABLE, cur.write_error)
        self._done.append((ident, request_id, cur, answer, False))
        self.wake()

    def _close_job(self, cur: _Upload, unlink: bool = True) -> None:
        if cur.fd >= 0:
            os.close(cur.fd)
            cur.fd = -1
        if unlink:
            try:
                cur.path.unlink(missing_ok=True)
            except OSError:
                pass

    def _install_job(self, ident: bytes, request_id: int, cur: _Upload,
                     known: int | None) -> None:
        try:
            self._close_job(cur, unlink=False)
            if cur.write_error is not None:
                raise UploadRefused(ErrorCode.UNAVAILABLE, cur.write_error)
            if cur.running_crc != cur.crc:
                raise UploadRefused(ErrorCode.INVALID, f"crc32 of the received file "
                                    f"{cur.running_crc:08x} differs from the announced "
                                    f"{cur.crc:08x}")
            answer = (0, self._install(cur, known))
        except UploadRefused as exc:
            answer = (exc.code, str(exc))
        except Exception as exc:          # an I/O failure, or a bug: the upload fails
            log.exception("epoch %d: installing the snapshot at txid %d failed", self.epoch,
                          cur.txid)
            answer = (ErrorCode.INTERNAL, f"installing the snapshot failed: {exc}")
        if answer[0]:
            try:
                cur.path.unlink(missing_ok=True)
            except OSError:
                pass
        self._done.append((ident, request_id, cur, answer, True))
        self.wake()

    def _install(self, cur: _Upload, known: int | None) -> list:
        try:
            header = snapshots.verify(cur.path)
        except errors.MwclusterError as exc:
            raise UploadRefused(ErrorCode.INVALID, f"the uploaded snapshot does not verify: "
                                f"{exc}") from None
        if (header.txid, header.epoch, header.digest) != (cur.txid, cur.epoch, cur.digest):
            raise UploadRefused(ErrorCode.INVALID, f"the file's header (txid {header.txid}, "
                                f"epoch {header.epoch}, digest {header.digest:016x}) differs "
                                "from what BEGIN announced")
        if known is not None and known != cur.digest:
            raise UploadRefused(ErrorCode.INVALID, f"digest {cur.digest:016x} at txid "
                                f"{cur.txid} differs from the master's {known:016x}")
        fd = os.open(cur.path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        directory = self.engine.snapshot_dir
        os.replace(cur.path, directory / snapshots.snapshot_name(cur.txid))
        crash_point("install.renamed")
        fsync_dir(directory)
        purged = self.engine.retain()
        kept = [t for t, _ in snapshots.list_snapshots(directory)]
        return [kept, len(purged)]

    # --- back on the loop -------------------------------------------------------------------

    def finished(self) -> list[tuple[bytes, bytes]]:
        """The CHUNK and END replies of what the worker finished, as (ident, reply)."""
        out = []
        done = self._done
        while done:
            ident, request_id, cur, (code, result), is_end = done.popleft()
            if not is_end:
                if code:
                    if self.current is cur and not cur.dropped:
                        self._fail(cur, result)
                    out.append((ident, encode_error(request_id, self.epoch, ErrorCode(code),
                                                    result)))
                else:
                    out.append((ident, encode_reply(request_id, self.epoch, 0, 0, result)))
                continue
            if self.current is cur:
                self.current = None
            if code:
                self._reject(result)
                out.append((ident, encode_error(request_id, self.epoch, ErrorCode(code),
                                                result)))
                continue
            self.ok += 1
            self.nodes.uploaded(cur.endpoint, cur.client_id, cur.txid, self.clock())
            self.segments_after_purge = self.engine.journal.stats().segments
            if cur.txid not in self._ring:
                self.digest_unverified += 1
                log.warning("epoch %d: the snapshot at txid %d was installed on its checksums "
                            "alone: the master no longer knows its digest at that txid",
                            self.epoch, cur.txid)
            log.info("epoch %d: installed the uploaded snapshot at txid %d; kept %s, purged "
                     "%d journal segments", self.epoch, cur.txid, result[0], result[1])
            out.append((ident, encode_reply(request_id, self.epoch, 0, 0, result)))
        return out

    def pending(self) -> bool:
        return bool(self._done)

    def expire(self) -> None:
        """Drop an upload whose sender went silent for idle_s (called on the loop's tick), so
        that status stops showing it and its temporary file goes."""
        cur = self.current
        if cur is not None and not cur.ending and self.clock() - cur.last_activity >= \
                self.idle_s:
            log.warning("epoch %d: the upload of txid %d saw nothing for %g s (its sender is "
                        "gone?); dropped after %d of %d bytes", self.epoch, cur.txid,
                        self.idle_s, cur.received, cur.size)
            self._drop(cur)

    # --- helpers ----------------------------------------------------------------------------

    def _reject(self, message: str) -> None:
        self.rejected += 1
        self.last_error = message
        log.warning("epoch %d: snapshot upload rejected: %s", self.epoch, message)

    def _fail(self, cur: _Upload, message: str) -> None:
        self._reject(message)
        self._drop(cur)

    def _drop(self, cur: _Upload, *, closing: bool = False) -> None:
        """Forget the upload; the worker closes and removes its file after the writes
        queued before (at once when the worker is already stopped)."""
        cur.dropped = True
        if closing:
            self._close_job(cur)
        else:
            self._worker.submit(self._close_job, cur)
        if self.current is cur:
            self.current = None

    def status(self) -> dict[str, Any]:
        cur = self.current
        return {"uploads_ok": self.ok, "uploads_rejected": self.rejected,
                "uploads_have": self.have, "last_upload_error": self.last_error,
                "digest_unverified_uploads": self.digest_unverified,
                "digest_ring": None if not len(self._ring) else {
                    "points": len(self._ring), "oldest_txid": self._ring.span()[0],
                    "newest_txid": self._ring.span()[1]},
                "journal_segments_after_purge": self.segments_after_purge,
                "upload_in_progress": None if cur is None else {
                    "txid": cur.txid, "received": cur.received, "size": cur.size,
                    "installing": cur.ending, "endpoint": cur.endpoint},
                "checkpoint_nodes": self.nodes.status(self.clock())}

    def close(self) -> None:
        """Wait for an install in progress; drop an unfinished upload."""
        self._worker.shutdown(wait=True)
        cur = self.current
        if cur is not None and not cur.ending:
            self._drop(cur, closing=True)

