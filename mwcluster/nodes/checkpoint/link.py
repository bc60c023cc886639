"""The checkpoint node's reliable path to the master: one DEALER for FETCH and the snapshot
transfer (SNAPSHOT_INFO, then SNAPSHOT_CHUNK with credit-based flow control).

Calls are synchronous with a deadline (`timeout_s`): the node's loop runs them when its
decision machine asks, and feeds the outcome back as an event. A call that gets no reply in
time closes the socket (linger 0) and connects a new one, so a late reply can never be taken
for the answer to a later request; the machine retries with backoff. Replies whose request
id is not the one awaited (late answers to an abandoned request) are dropped.

The snapshot transfer keeps `credit` chunk requests in flight, writes each chunk at its
offset in a temporary file, and verifies the whole file (header and body checksums, the
state image's digest, and the txid and digest that SNAPSHOT_INFO announced) before the
state is used. Only what storage/snapshot.py and engine.load_snapshot check is trusted.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import zmq

from mwcluster import errors
from mwcluster.client.calls import error_from_reply
from mwcluster.core.recent import RecentRequests
from mwcluster.core.state import State
from mwcluster.engine import load_snapshot
from mwcluster.security.curve import Credentials, HandshakeWatch, secure_client
from mwcluster.wire.protocol import Op, Reply, check_records, decode_reply, encode_request

MAX_CHUNK_BYTES = 1 << 20


def fetch_result(result) -> tuple[int, list]:
    """A FETCH result from the network checked into (durable_txid, records); ServerError
    saying what is wrong otherwise."""
    try:
        durable_txid, records = result
        check_records(records)
        if type(durable_txid) is not int:
            raise TypeError("durable_txid is not an integer")
    except (TypeError, ValueError) as exc:
        raise errors.ServerError(f"malformed FETCH result from the master: {exc}") from None
    return durable_txid, records


class MasterLink:
    def __init__(self, ctx: zmq.Context, endpoint: str, timeout_s: float,
                 credentials: Credentials | None = None) -> None:
        self.ctx = ctx
        self.credentials = credentials
        self._watch: HandshakeWatch | None = None
        self.endpoint = endpoint
        self.timeout_s = timeout_s
        self.client_id = os.urandom(16)
        self._next_id = time.time_ns() // 1000
        self.sock: zmq.Socket | None = None
        self.epoch: int | None = None        # the master's epoch in the newest reply
        self.epoch_seen = 0                  # carried in every request (fences a replaced
        #                                      master once this node took a higher epoch)
        self.reconnects = 0
        self._connect()

    def _connect(self) -> None:
        sock = self.ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVHWM, 0)
        self._watch = secure_client(sock, self.credentials, self.endpoint)
        sock.connect(self.endpoint)
        self.sock = sock

    def _reconnect(self) -> None:
        self.close()
        self.reconnects += 1
        self._connect()

    def close(self) -> None:
        if self.sock is not None:
            self._watch.close()
            self.sock.close(linger=0)
            self.sock = None

    # --- requests ------------------------------------------------------------------------

    def send(self, op: int, args: list) -> int:
        """Send without blocking: a socket with no way to the master (its handshake was
        refused, which libzmq does not retry) raises at once instead of blocking forever."""
        request_id = self._next_id
        self._next_id += 1
        try:
            self.sock.send(encode_request(self.client_id, request_id, op, args, 0,
                                          self.epoch_seen), zmq.NOBLOCK)
        except zmq.Again:
            refused = self._watch.failure()
            self._reconnect()
            if refused is not None:
                raise refused from None
            raise errors.RequestTimeout(f"could not send to the master at {self.endpoint} "
                                        "(no connection, or its queue is full)") from None
        return request_id

    def recv(self, waiting: set[int] | dict, deadline: float) -> Reply:
        """The next reply to one of the request ids in `waiting`; RequestTimeout (after a
        reconnect) when none comes before `deadline` (time.monotonic())."""
        sock = self.sock
        while True:
            left_ms = int((deadline - time.monotonic()) * 1000)
            if left_ms <= 0 or not sock.poll(left_ms):
                refused = self._watch.failure()   # a refused handshake: say why
                self._reconnect()
                if refused is not None:
                    raise refused
                raise errors.RequestTimeout(
                    f"no reply from the master at {self.endpoint} within {self.timeout_s} s")
            try:
                reply = decode_reply(sock.recv())
            except errors.MwclusterError:
                continue                  # not a reply we can read: wait for the real one
            if reply.request_id in waiting:
                self.epoch = reply.epoch
                return reply

    def notify(self, op: int, args: list) -> None:
        """Send a request whose reply nobody waits for (CHECKPOINT_HELLO): first drop the
        replies already queued (between calls nothing else is outstanding), then send without
        blocking; a master that is away gets it when it comes back, or never."""
        sock = self.sock
        try:
            while sock.poll(0):
                sock.recv(zmq.NOBLOCK)
            request_id = self._next_id
            self._next_id += 1
            sock.send(encode_request(self.client_id, request_id, op, args, 0, self.epoch_seen),
                      zmq.NOBLOCK)
        except zmq.ZMQError:
            pass

    def call(self, op: int, args: list):
        """Send one request and return its result, or raise the master's error as a typed
        MwclusterError (Truncated, NoSnapshot...) or RequestTimeout."""
        request_id = self.send(op, args)
        reply = self.recv({request_id}, time.monotonic() + self.timeout_s)
        if reply.status:
            raise error_from_reply(reply)
        return reply.result

    def fetch(self, from_txid: int, max_bytes: int) -> tuple[int, list]:
        return fetch_result(self.call(Op.FETCH, [from_txid, max_bytes]))

    # --- the master's snapshot ---------------------------------------------------------------

    def load_master_snapshot(self, work_dir: Path, chunk_bytes: int, credit: int,
                             recent: RecentRequests | None = None) -> State:
        """Download the master's newest snapshot, verify it, return its state; its recent
        requests go to `recent` (an empty table, to drop if this raises). Raises
        NoSnapshot when the master has none, another MwclusterError when the transfer or the
        verification fails (the temporary file is removed either way)."""
        info = self.call(Op.SNAPSHOT_INFO, [])
        try:
            txid, _epoch, digest, size, _created_ms = info
        except (TypeError, ValueError):
            raise errors.ServerError(f"malformed SNAPSHOT_INFO result: {info!r:.200}") from None
        work_dir.mkdir(parents=True, exist_ok=True)
        path = work_dir / f"master-{txid:020d}.mws.part"
        try:
            self._download(txid, size, path, min(chunk_bytes, MAX_CHUNK_BYTES), credit)
            state = load_snapshot(path, recent)
        finally:
            path.unlink(missing_ok=True)
        if state.txid != txid or state.digest != digest:
            raise errors.CorruptionError(
                f"the master's snapshot holds txid {state.txid} digest {state.digest:016x}, "
                f"but SNAPSHOT_INFO announced txid {txid} digest {digest:016x}")
        return state

    def _download(self, txid: int, size: int, path: Path, chunk: int, credit: int) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            for at, data in self.chunks(txid, size, chunk, credit):
                os.pwrite(fd, data, at)
        finally:
            os.close(fd)

    def chunks(self, txid: int, size: int, chunk: int, credit: int):
        """(offset, bytes) of every chunk of the snapshot at `txid` (`size` bytes), in the
        order they arrive, `credit` SNAPSHOT_CHUNK requests in flight; each checked."""
        in_flight: dict[int, int] = {}
        offset = 0
        while offset < size or in_flight:
            while offset < size and len(in_flight) < credit:
                in_flight[self.send(Op.SNAPSHOT_CHUNK, [txid, offset, chunk])] = offset
                offset += chunk
            reply = self.recv(in_flight, time.monotonic() + self.timeout_s)
            at = in_flight.pop(reply.request_id)
            if reply.status:
                raise error_from_reply(reply)
            data = reply.result
            want = min(chunk, size - at)
            if type(data) is not bytes or len(data) != want:
                raise errors.ServerError(
                    f"SNAPSHOT_CHUNK at offset {at} of the snapshot at txid {txid} "
                    f"returned {len(data) if type(data) is bytes else type(data).__name__}"
                    f" bytes, expected {want} (was the snapshot replaced?)")
            yield at, data
