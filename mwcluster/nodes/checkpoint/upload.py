"""The checkpoint node's snapshot upload to the master, on a small thread of its own.

    BEGIN [txid, epoch, digest, size, crc32]   "have": done, nothing to send
    CHUNK [upload_id, offset, data] x n        at most `credit` in flight, 1 MiB each
    END   [upload_id]                          -> [kept txids, purged segment count]

The thread owns its own DEALER (a MasterLink: ZeroMQ sockets are not shared across threads),
so the node's loop keeps reading the log stream while a file goes up. A failed attempt is
retried from BEGIN with exponential backoff (tenacity); a refusal that cannot change by
retrying (INVALID: an older snapshot, another history, a damaged file) ends the upload. A
newer checkpoint that arrives meanwhile is uploaded next; an older pending one is dropped.

Fault seam for tests: with MWCLUSTER_FAULT_UPLOAD_STALL_AFTER_BYTES=N in the environment, an
upload stops sending once N bytes went out and were acknowledged (it waits until the node
stops), so a test can kill the node, or the master, reliably in the middle of an upload.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import zlib
from pathlib import Path
from typing import Any

import zmq
from tenacity import (RetryError, Retrying, retry_if_exception, stop_after_attempt,
                      wait_exponential)

from mwcluster import errors
from mwcluster.client.calls import error_from_reply
from mwcluster.nodes.checkpoint.link import MasterLink
from mwcluster.storage import snapshot as snapshots
from mwcluster.wire.protocol import ErrorCode, Op

log = logging.getLogger(__name__)

CHUNK_BYTES = 1 << 20
CREDIT = 4
END_TIMEOUT_S = 60.0      # END waits for the master's verify + fsync + purge
FAULT_STALL_ENV = "MWCLUSTER_FAULT_UPLOAD_STALL_AFTER_BYTES"
FAULT_STALL_S = 600.0


class UploadFailed(errors.MwclusterError):
    """An upload the master refused for good (retrying would not help)."""


def _retryable(exc: BaseException) -> bool:
    return not isinstance(exc, UploadFailed)


def file_crc32(path: Path) -> int:
    crc = 0
    with open(path, "rb") as f:
        while data := f.read(CHUNK_BYTES):
            crc = zlib.crc32(data, crc)
    return crc


class Uploader:
    def __init__(self, ctx: zmq.Context, endpoint: str, timeout_s: float, *,
                 chunk_bytes: int = CHUNK_BYTES, credit: int = CREDIT,
                 attempts: int = 1_000_000, backoff_initial_s: float = 0.2,
                 backoff_max_s: float = 30.0, bytes_per_s: int = 0,
                 credentials=None) -> None:
        self.ctx = ctx
        self.credentials = credentials      # security.curve.Credentials, or None: plain
        self.endpoint = endpoint
        self.timeout_s = timeout_s
        self.chunk_bytes = min(chunk_bytes, CHUNK_BYTES)
        self.credit = max(1, credit)
        self.attempts = attempts
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        # pace the upload (0: as fast as the credit allows): a master receiving a snapshot
        # in bursts answers its clients later, on a small machine several times later
        self.bytes_per_s = max(0, bytes_per_s)
        self.status_endpoint: str | None = None    # named in BEGIN, for the master's status
        stall = os.environ.get(FAULT_STALL_ENV)
        self._stall_after = int(stall) if stall else None
        self._lock = threading.Lock()
        self._pending: snapshots.SnapshotHeader | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        # status (written by the thread, read by the loop: plain values)
        self.uploading_txid: int | None = None
        self.last_txid: int | None = None
        self.last_duration_s: float | None = None
        self.last_result: Any = None
        self.failures = 0
        self.last_failure: str | None = None
        self.uploads = 0

    # --- the loop's side ---------------------------------------------------------------------

    def submit(self, header: snapshots.SnapshotHeader) -> None:
        """Upload this snapshot (after the one in progress, replacing an older pending one)."""
        with self._lock:
            if self._pending is None or self._pending.txid < header.txid:
                self._pending = header
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="snapshot-upload",
                                                daemon=True)
                self._thread.start()

    def busy(self) -> bool:
        t = self._thread
        return t is not None and t.is_alive()

    def wait(self, timeout_s: float | None = None) -> None:
        t = self._thread
        if t is not None:
            t.join(timeout_s)

    def close(self) -> None:
        """Stop: an attempt in progress ends within its request timeout."""
        self._stop.set()
        self.wait()

    def status(self) -> dict[str, Any]:
        return {"implemented": True, "uploading_txid": self.uploading_txid,
                "pending_txid": self._pending.txid if self._pending else None,
                "last_upload_txid": self.last_txid,
                "last_upload_duration_s": self.last_duration_s,
                "last_upload_result": self.last_result, "uploads_total": self.uploads,
                "upload_failures": self.failures, "last_upload_failure": self.last_failure}

    # --- the thread ----------------------------------------------------------------------------

    def _run(self) -> None:
        link = MasterLink(self.ctx, self.endpoint, self.timeout_s, self.credentials)
        try:
            while not self._stop.is_set():
                with self._lock:
                    header = self._pending
                    self._pending = None
                    if header is None:
                        self._thread = None
                        return
                self._upload_with_retries(link, header)
        finally:
            link.close()

    def _upload_with_retries(self, link: MasterLink, header: snapshots.SnapshotHeader) -> None:
        self.uploading_txid = header.txid
        started = time.monotonic()
        retrying = Retrying(
            stop=stop_after_attempt(self.attempts) | (lambda _s: self._stop.is_set()),
            wait=wait_exponential(multiplier=self.backoff_initial_s, min=self.backoff_initial_s,
                                  max=self.backoff_max_s),
            retry=retry_if_exception(_retryable), sleep=self._sleep,
            before_sleep=self._on_retry, reraise=False)
        try:
            result = retrying(self._attempt, link, header)
        except RetryError as exc:
            self._failed(header, exc.last_attempt.exception())
            return
        except Exception as exc:
            self._failed(header, exc)
            return
        finally:
            self.uploading_txid = None
        self.uploads += 1
        self.last_txid = header.txid
        self.last_duration_s = round(time.monotonic() - started, 6)
        self.last_result = result
        log.info("uploaded the snapshot at txid %d to the master in %.3f s: %s", header.txid,
                 self.last_duration_s, result)

    def _sleep(self, seconds: float) -> None:
        self._stop.wait(seconds)

    def _on_retry(self, state) -> None:
        exc = state.outcome.exception()
        self.failures += 1
        self.last_failure = f"{type(exc).__name__}: {exc}"
        log.warning("uploading a snapshot failed (attempt %d), retrying: %s",
                    state.attempt_number, exc)

    def _failed(self, header: snapshots.SnapshotHeader, exc: BaseException | None) -> None:
        self.failures += 1
        self.last_failure = f"{type(exc).__name__}: {exc}"
        log.error("the snapshot at txid %d was not uploaded: %s", header.txid, exc)

    def _attempt(self, link: MasterLink, header: snapshots.SnapshotHeader) -> Any:
        path = Path(header.path)
        size = snapshots.HEADER_BYTES + header.body_bytes + snapshots.TRAILER_BYTES
        crc = file_crc32(path)
        try:
            upload_id, status = link.call(Op.SNAPSHOT_UPLOAD_BEGIN,
                                          [header.txid, header.epoch, header.digest, size, crc,
                                           self.status_endpoint])
        except errors.MwclusterError as exc:
            if getattr(exc, "error_code", None) == ErrorCode.INVALID:
                raise UploadFailed(str(exc)) from None
            raise
        if status == "have":
            return "have"
        try:
            self._send_chunks(link, upload_id, path, size)
            request_id = link.send(Op.SNAPSHOT_UPLOAD_END, [upload_id])
            reply = self._recv(link, {request_id},
                               time.monotonic() + max(END_TIMEOUT_S, self.timeout_s))
        except BaseException:
            self._abort(link, upload_id)
            raise
        if reply.status:
            exc = error_from_reply(reply)
            if reply.status == ErrorCode.INVALID:
                raise UploadFailed(str(exc))
            raise exc
        return reply.result

    def _send_chunks(self, link: MasterLink, upload_id: int, path: Path, size: int) -> None:
        in_flight: set[int] = set()
        offset = 0
        started = time.monotonic()
        with open(path, "rb") as f:
            while offset < size or in_flight:
                if self._stop.is_set():
                    raise errors.MwclusterError("stopping")
                stall = self._stall_after
                if stall is not None and offset >= stall and offset < size:
                    if not in_flight:
                        log.warning("fault seam %s: the upload of %s stalls after %d of %d "
                                    "bytes", FAULT_STALL_ENV, path.name, offset, size)
                        self._stop.wait(FAULT_STALL_S)
                        raise errors.MwclusterError("stalled by the fault seam")
                    stall = offset      # send nothing more; wait for what is in flight
                while offset < size and len(in_flight) < self.credit and \
                        (stall is None or offset < stall):
                    if self.bytes_per_s:
                        ahead = offset / self.bytes_per_s - (time.monotonic() - started)
                        if ahead > 0:
                            self._stop.wait(ahead)
                    data = f.read(min(self.chunk_bytes, size - offset))
                    if not data:
                        raise UploadFailed(f"{path} is shorter than its header says")
                    in_flight.add(link.send(Op.SNAPSHOT_UPLOAD_CHUNK,
                                            [upload_id, offset, data]))
                    offset += len(data)
                reply = self._recv(link, in_flight, time.monotonic() + self.timeout_s)
                in_flight.discard(reply.request_id)
                if reply.status:
                    raise error_from_reply(reply)

    def _recv(self, link: MasterLink, waiting, deadline: float):
        """link.recv, but give up at once when the node stops."""
        while not link.sock.poll(100):
            if self._stop.is_set():
                raise errors.MwclusterError("the node is stopping")
            if time.monotonic() >= deadline:
                break                    # link.recv reconnects and raises RequestTimeout
        return link.recv(waiting, deadline)

    def _abort(self, link: MasterLink, upload_id: int) -> None:
        try:
            link.send(Op.SNAPSHOT_UPLOAD_ABORT, [upload_id])
        except zmq.ZMQError:
            pass
