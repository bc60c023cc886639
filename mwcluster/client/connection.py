"""The Python client of the master: a DEALER socket, typed errors, safe retries, pipelining.

    from mwcluster import Client

    with Client("tcp://127.0.0.1:5550") as client:
        txid = client.put("/datasets/logs/2026-11-26", {"parts": 17})
        value, stat = client.get_with_stat("/datasets/logs/2026-11-26")
        client.put("/datasets/logs/2026-11-26", {"parts": 18}, expected_version=stat.version)
        with client.pipeline(window=64) as p:
            futures = [p.put(f"/bench/{i}", i) for i in range(1000)]
        print([f.result() for f in futures][:3])
        with client.pipeline(window=1024, batch=64) as p:    # 64 requests per message
            for i in range(100_000):
                p.put(f"/bench/{i}", i)

Every request carries the client's id (random, stable for the life of the Client) and an
increasing request id. When no reply comes within `timeout_s`, the client closes its socket
(linger 0), connects a new one (to the next endpoint when several are given) and resends the
same requests with the same ids: the master applies a retried mutation once and answers with
its first reply. A "shutting down" answer (a master restarting) is retried the same way.

Failover (docs/failover.md): give the client every master endpoint (the master and the
standby's promote endpoint). Every request carries the highest master epoch the client has
seen; a reply from a lower epoch (a master that was replaced) is not used, and neither is a
`fenced` answer: in both cases the request stays pending and is resent on the next endpoint,
under the same retry policy. A fenced master applied nothing, so resending is safe; after a
timeout the request may have been applied by the old master and not replicated, and is
applied again by the new one (a record the standby never received is not in its history;
one it received is answered from the table of recent requests the promotion carries over).
With `standby_status` (the standby's status endpoints), every timeout also sends a VOTE
there, without waiting for an answer: a standby in `auto` failover mode that has not heard the
master for its timeout then promotes itself (core/failover.py).
Replies for request ids the client is not waiting for (late answers to requests it already
resent, or given up on) are dropped and counted in `stale_replies`.

A pipeline batches without being asked (`batch=None`, the default): a request goes out at
once when nothing of the client is in flight; while earlier requests are, it is queued, and
the queue goes out as one BATCH message (docs/protocol.md) when AUTO_BATCH are queued, when
its oldest request has waited `linger_ms` (checked at the next request), when the window is
full, and whenever the caller waits (`result()`, `wait()`, `results()`, leaving the `with`
block). `batch=1` sends one request per message; `batch=K` queues up to K, sent when K are
queued, when the window is full and whenever the caller waits. Each request keeps its own
request id, so a resent batch is applied once like any request; its future gets its own
sub-reply. A batch whose frame would exceed `max_message_bytes` is split; a single request
too large for a frame fails its future with MessageTooLarge. Retries follow the one
tenacity policy below: bounded attempts, exponential backoff with jitter, an injectable sleep.

A Client is not thread-safe: use one per thread (or per process).
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any, Callable

import tenacity
import zmq

from mwcluster.client.calls import (Assignment, Calls, Lease, Stat, convert_reply, op_attach,
                                    op_check, op_delete, op_merge, op_put)
from mwcluster.client.futures import BatchFuture, Future
from mwcluster.client.standby import StandbyReader
from mwcluster.client.watching import KeepAlive, Watch
from mwcluster.core.durability import wire_code
from mwcluster.core.failover import EpochFollower
from mwcluster.errors import (AuthenticationFailed, Fenced, MessageTooLarge, MwclusterError,
                              RequestTimeout, ShuttingDown)
from mwcluster.security.curve import Credentials, as_credentials, secure_client
from mwcluster.wire.protocol import (DEFAULT_CLIENT_ENDPOINT, DEFAULT_MAX_BATCH,
                                     DEFAULT_MAX_MESSAGE_BYTES, ErrorCode, Op, ProtocolError,
                                     Reply, decode_reply, encode_request)

__all__ = ["Assignment", "BatchFuture", "Client", "Future", "Lease", "Pipeline", "Stat",
           "RETRY_POLICY", "op_attach", "op_check", "op_delete", "op_merge", "op_put"]

log = logging.getLogger(__name__)

DEFAULT_RETRIES = 3
# Until a connection's CURVE handshake succeeded, a wait looks at its handshake events this
# often: a refused key is reported within about this long, not after every retry.
HANDSHAKE_POLL_MS = 50
# A pipeline without a batch size (Pipeline, batch=None) sends at most this many requests per
# BATCH, and a queued request waits at most DEFAULT_LINGER_MS for the next one.
AUTO_BATCH = 64
DEFAULT_LINGER_MS = 1.0

# The retry policy, defined once: timeouts, "the master is shutting down" and "fenced" (or a
# reply from a lower epoch) are retried, the last two on the next endpoint (a restarting
# master answers the resent request, a promoted standby takes it); every other error is the
# master's answer.
# Each Client copies it with its own attempt count and sleep.
RETRYABLE = (RequestTimeout, ShuttingDown, Fenced)
RETRY_POLICY = tenacity.Retrying(
    stop=tenacity.stop_after_attempt(DEFAULT_RETRIES + 1),
    wait=tenacity.wait_exponential(multiplier=0.05, max=2.0) + tenacity.wait_random(0, 0.05),
    retry=tenacity.retry_if_exception_type(RETRYABLE),
    reraise=True,
)


class Client(Calls):
    """A connection to the master. Methods (put, merge, delete, multi, get, get_with_stat,
    stat, children, list, status, ping, fetch...) are defined in calls.Calls; each
    waits for its reply and returns its result or raises a typed MwclusterError.
    `durability` and `consistency` are what a call asks when it names none (the master's
    default level; "strong": no reply reveals state a crash can erase); `read_from="standby"`
    sends namespace reads to the checkpoint node at `standby` (client/standby.py).
    `credentials` (or `key_file` and `server_key`, else MWCLUSTER_KEY and
    MWCLUSTER_SERVER_KEY) make every connection CURVE (docs/security.md); a server that
    refuses the handshake raises AuthenticationFailed saying why."""

    def __init__(self, endpoint: str | list[str] = DEFAULT_CLIENT_ENDPOINT,
                 timeout_s: float = 5.0,
                 retries: int = DEFAULT_RETRIES, client_id: bytes | str | None = None, *,
                 sleep: Callable[[float], None] | None = None,
                 max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
                 context: zmq.Context | None = None,
                 standby_status: str | list[str] | None = None,
                 durability: str | int | None = None, consistency: str | None = None,
                 read_from: str = "master", standby: str | None = None,
                 credentials: Credentials | None = None, key_file: str | None = None,
                 server_key: str | None = None):
        wire_code(durability, consistency)     # ValueError naming what is allowed
        self.credentials = as_credentials(credentials, key_file, server_key)
        self.durability, self.consistency = durability, consistency
        self.seen_txid = 0                     # the highest txid any reply carried
        self.standby = StandbyReader.for_client(read_from, standby, timeout_s, context,
                                                self.credentials)
        self.standby_status = ([standby_status] if isinstance(standby_status, str)
                               else list(standby_status or ()))
        self._vote_socks: dict[str, zmq.Socket] = {}
        self.votes = 0
        self.endpoints = [endpoint] if isinstance(endpoint, str) else list(endpoint)
        if not self.endpoints:
            raise ValueError("at least one endpoint is needed")
        if timeout_s <= 0 or retries < 0:
            raise ValueError("timeout_s must be positive and retries at least 0")
        if isinstance(client_id, str):
            client_id = client_id.encode()
        self.client_id: bytes = client_id if client_id is not None else os.urandom(16)
        if not 1 <= len(self.client_id) <= 64:
            raise ValueError("client_id must be 1..64 bytes")
        self.timeout_s = timeout_s
        self.retries = retries
        self.max_message_bytes = max_message_bytes
        self._keepalives: list[KeepAlive] = []
        overrides: dict[str, Any] = {"stop": tenacity.stop_after_attempt(retries + 1)}
        if sleep is not None:
            overrides["sleep"] = sleep
        self._retry = RETRY_POLICY.copy(**overrides)
        self._timeout_ns = int(timeout_s * 1e9)
        # Request ids start at the clock in microseconds, so that a client restarted with the
        # same client_id does not reuse ids the master still remembers.
        self._next_id = time.time_ns() // 1000
        self._pending: dict[int, Future] = {}
        self._resend = False
        self._ctx = context if context is not None else zmq.Context.instance()
        self._endpoint_index = 0
        self._sock: zmq.Socket | None = None
        self.epoch: int | None = None   # the master's epoch in the newest reply
        self.epochs = EpochFollower()   # the highest epoch seen; lower ones are refused
        self.stale_epoch_replies = 0    # replies from a replaced master (a lower epoch)
        self.fenced_replies = 0
        self.stale_replies = 0
        self.bad_replies = 0
        self.reconnects = 0
        self._connect()

    @property
    def endpoint(self) -> str:
        return self.endpoints[self._endpoint_index]

    # --- lifecycle ---

    def _connect(self) -> None:
        sock = self._ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        # The window bounds what is in flight; the socket must not block or drop below it.
        sock.setsockopt(zmq.SNDHWM, 0)
        sock.setsockopt(zmq.RCVHWM, 0)
        sock.setsockopt(zmq.SNDTIMEO, max(1, int(self.timeout_s * 1000)))
        self._watch = secure_client(sock, self.credentials, self.endpoint)
        try:
            sock.connect(self.endpoint)
        except zmq.ZMQError as exc:
            self._watch.close()
            sock.close(linger=0)
            raise ValueError(f"cannot connect to {self.endpoint!r}: {exc} (an endpoint looks "
                             "like tcp://127.0.0.1:5550)") from None
        self._sock = sock

    def _reconnect(self) -> None:
        if self._sock is not None:
            self._watch.close()
            self._sock.close(linger=0)
        self._endpoint_index = (self._endpoint_index + 1) % len(self.endpoints)
        self.reconnects += 1
        log.info("reconnecting to %s (%d requests in flight)", self.endpoint,
                 len(self._pending))
        self._connect()

    def close(self) -> None:
        """Close the socket; requests still in flight fail with RequestTimeout."""
        for keeper in self._keepalives:
            keeper.stop()
        self._keepalives.clear()
        if self.standby is not None:
            self.standby.close()
        for sock in self._vote_socks.values():
            sock.close(linger=0)
        self._vote_socks.clear()
        if self._sock is None:
            return
        self._watch.close()
        self._sock.close(linger=0)
        self._sock = None
        self._fail_all(RequestTimeout("the client was closed before the reply came"))

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def pipeline(self, window: int = 64, batch: int | None = None,
                 linger_ms: float = DEFAULT_LINGER_MS) -> Pipeline:
        """A pipeline that keeps up to `window` requests in flight on this client, sent
        `batch` per message (None: batched while requests are in flight, see Pipeline; 1:
        one request per message; more: BATCH messages of up to `batch`)."""
        return Pipeline(self, window, batch, linger_ms)

    def clone(self) -> Client:
        """A new Client to the same endpoints with the same settings (another thread's)."""
        return Client(self.endpoints, self.timeout_s, self.retries,
                      max_message_bytes=self.max_message_bytes, context=self._ctx,
                      standby_status=self.standby_status, durability=self.durability,
                      consistency=self.consistency, credentials=self.credentials)

    def watch(self, prefix: str, from_txid: int | None = None, **options) -> Watch:
        """The events of the keys under `prefix` from `from_txid` on (None: from now), in
        txid order, surviving reconnects, restarts and failovers (client/watching.py;
        options: durability, consistency, limit, wait_s, resync, give_up_s)."""
        return Watch(self, prefix, from_txid, **options)

    def keepalive(self, lease: Lease, interval_s: float | None = None,
                  on_lost: Callable[[BaseException], None] | None = None) -> KeepAlive:
        """Keep `lease` alive from a background thread (about every ttl/3) until its
        stop() or this client's close()."""
        keeper = KeepAlive(self.clone, lease, interval_s, on_lost)
        self._keepalives = [k for k in self._keepalives if k.running()] + [keeper]
        return keeper

    def iter_keys(self, prefix: str, page: int = 1000):
        """Every key starting with `prefix`, in order, fetched `page` keys at a time (until
        an empty page: the master may cap a page below `page`)."""
        start_after = None
        while True:
            keys = self.list(prefix, page, start_after)
            if not keys:
                return
            yield from keys
            start_after = keys[-1]

    # --- sending and receiving ---

    def _run(self, op: int, args: list, durability: int, convert: Callable[[Reply], Any]):
        return self._submit(op, args, durability, convert, None).result()

    def _read(self, op: int, args: list, durability: int, convert: Callable[[Reply], Any]):
        if self.standby is not None:     # read_from="standby": the master when it is behind
            reply = self.standby.read(op, args, self.seen_txid, self.epochs.highest)
            if reply is not None:
                if reply.txid > self.seen_txid:     # never older state than this, anywhere
                    self.seen_txid = reply.txid
                result, error = convert_reply(reply, convert)
                if error is not None:
                    raise error
                return result
        return self._run(op, args, durability, convert)

    def _submit(self, op: int, args: list, durability: int, convert: Callable[[Reply], Any],
                owner: Pipeline | None) -> Future:
        if self._sock is None:
            raise MwclusterError("the client is closed")
        request_id = self._next_id
        self._next_id += 1
        frame = encode_request(self.client_id, request_id, op, args, durability,
                               self.epochs.highest)
        if len(frame) > self.max_message_bytes:
            raise self._too_large(op, len(frame))
        future = Future(self, request_id, op, frame, convert, owner)
        self._send(future)
        return future

    def _too_large(self, op: int, size: int) -> MessageTooLarge:
        return MessageTooLarge(f"{Op(op).name} request is {size} bytes; the limit is "
                               f"{self.max_message_bytes} (store large data elsewhere and "
                               "keep a reference in the value)")

    def _send(self, future: Future | BatchFuture) -> None:
        self._pending[future.request_id] = future
        future.sent_ns = time.perf_counter_ns()
        try:
            self._sock.send(future.frame)
        except zmq.Again:
            try:
                self._watch.raise_refused()   # no way to the master: its handshake failed
            except AuthenticationFailed:
                del self._pending[future.request_id]
                raise
            # The socket cannot take it now: the next wait resends it on a new connection.
            self._reconnect()
            self._resend = True

    def _queue(self, op: int, args: list, durability: int, convert: Callable[[Reply], Any],
               owner: Pipeline) -> Future:
        """A future for a request that a pipeline sends later in a batch (_submit_batch)."""
        if self._sock is None:
            raise MwclusterError("the client is closed")
        request_id = self._next_id
        self._next_id += 1
        future = Future(self, request_id, op, b"", convert, owner)
        future.sub = (request_id, op, durability, args)
        future.sent_ns = time.perf_counter_ns()
        return future

    def _submit_batch(self, futures: list[Future]) -> None:
        """Send queued requests in one BATCH message (one alone goes as itself); a batch too
        large for a frame is split, a request too large alone fails with MessageTooLarge."""
        if self._sock is None:
            error = MwclusterError("the client is closed")
            for future in futures:
                future._set_error(error)
            return
        if len(futures) == 1:
            future = futures[0]
            request_id, op, durability, args = future.sub
            frame = encode_request(self.client_id, request_id, op, args, durability,
                                   self.epochs.highest)
            if len(frame) > self.max_message_bytes:
                future._set_error(self._too_large(op, len(frame)))
                return
            future.frame, future.sub = frame, None
            self._send(future)
            return
        request_id = self._next_id
        self._next_id += 1
        frame = encode_request(self.client_id, request_id, Op.BATCH,
                               [future.sub for future in futures], 0, self.epochs.highest)
        if len(frame) > self.max_message_bytes:
            half = len(futures) // 2
            self._submit_batch(futures[:half])
            self._submit_batch(futures[half:])
            return
        for future in futures:
            future.sub = None
        self._send(BatchFuture(request_id, frame, futures))

    def _wait_for(self, future: Future) -> None:
        while not future._done:
            self._progress()

    def _progress(self) -> None:
        """Wait until at least one pending request is answered, retrying on timeouts; after
        the last attempt every pending request fails with RequestTimeout (or ShuttingDown)."""
        try:
            self._retry(self._progress_attempt)
        except (*RETRYABLE, AuthenticationFailed) as exc:
            self._fail_all(exc)

    def _progress_attempt(self) -> None:
        sock = self._sock
        if sock is None:
            raise MwclusterError("the client is closed")
        pending = self._pending
        if not pending:
            return
        if self._resend:
            self._resend = False
            now = time.perf_counter_ns()
            try:
                for future in pending.values():
                    sock.send(future.frame)
                    future.sent_ns = now
            except zmq.Again:
                self._watch.raise_refused()
                self._timed_out("could not send")
        oldest = next(iter(pending.values()))
        deadline_ns = oldest.sent_ns + self._timeout_ns
        watch = self._watch
        while True:
            remaining_ms = (deadline_ns - time.perf_counter_ns() + 999_999) // 1_000_000
            if remaining_ms <= 0:
                self._timed_out(f"no reply within {self.timeout_s} s")
            wait_ms = remaining_ms if watch.succeeded else min(remaining_ms, HANDSHAKE_POLL_MS)
            if not sock.poll(wait_ms, zmq.POLLIN):
                watch.raise_refused()
                if wait_ms == remaining_ms:
                    self._timed_out(f"no reply within {self.timeout_s} s")
                continue
            delivered, stopping = self._drain(sock)
            if stopping is not None:
                # The master is going away (or was replaced: fenced, or a lower epoch):
                # resend on a new connection to the next endpoint, after the backoff unless
                # other requests were answered meanwhile.
                self._reconnect()
                self._resend = True
                if not delivered:
                    raise stopping
            if delivered:
                return

    def _vote(self) -> None:
        """Ask the standby to serve (auto failover): sent without waiting for an answer."""
        for endpoint in self.standby_status:
            sock = self._vote_socks.get(endpoint)
            try:
                if sock is None:
                    sock = self._ctx.socket(zmq.DEALER)
                    sock.setsockopt(zmq.LINGER, 0)
                    sock.setsockopt(zmq.SNDHWM, 4)
                    if self.credentials is not None:
                        self.credentials.apply(sock)
                    sock.connect(endpoint)
                    self._vote_socks[endpoint] = sock
                while sock.poll(0):
                    sock.recv(zmq.NOBLOCK)       # earlier answers: not waited for
                sock.send(encode_request(self.client_id, 0, Op.VOTE, [], 0,
                                         self.epochs.highest), zmq.NOBLOCK)
                self.votes += 1
            except zmq.ZMQError as exc:
                log.debug("could not send a vote to %s: %s", endpoint, exc)

    def _timed_out(self, why: str) -> None:
        oldest = next(iter(self._pending.values()))
        endpoint = self.endpoint
        if self.standby_status:
            self._vote()
        self._reconnect()
        self._resend = True
        raise RequestTimeout(f"{why} from the master at {endpoint} ({Op(oldest.op).name} "
                             f"request {oldest.request_id}, {len(self._pending)} in flight); "
                             "is the master running there?")

    def _drain(self, sock: zmq.Socket) -> tuple[int, MwclusterError | None]:
        """Receive every reply that is ready; return how many answered a pending request, and
        the error of a "shutting down" or "fenced" reply, or of a reply from a lower epoch
        than the highest seen (its request stays pending, to be resent elsewhere)."""
        delivered = 0
        stopping = None
        pending = self._pending
        while True:
            frame = sock.recv()
            try:
                reply = decode_reply(frame)
            except ProtocolError as exc:
                self.bad_replies += 1
                log.warning("dropped a malformed reply from %s: %s", self.endpoint, exc)
            else:
                if not self.epochs.accept(reply.epoch):
                    # a replaced master: its answer may not be used (it may even be a
                    # success of a write the new master never saw)
                    self.stale_epoch_replies += 1
                    if reply.request_id in pending:
                        stopping = Fenced(
                            f"the master at {self.endpoint} answered under epoch "
                            f"{reply.epoch}, below epoch {self.epochs.highest} seen already: "
                            "it was replaced")
                    if not sock.getsockopt(zmq.EVENTS) & zmq.POLLIN:
                        return delivered, stopping
                    continue
                self.epoch = reply.epoch
                future = pending.pop(reply.request_id, None)
                if future is None and reply.request_id == 0 and reply.status and \
                        len(pending) == 1:
                    # An error too early to name the request (e.g. too large): with one
                    # request in flight, it can only be that one.
                    future = pending.popitem()[1]
                if future is None:
                    self.stale_replies += 1
                elif reply.status == ErrorCode.SHUTTING_DOWN or \
                        reply.status == ErrorCode.FENCED:
                    pending[future.request_id] = future
                    stopping = convert_reply(reply, future._convert)[1]
                    if reply.status == ErrorCode.FENCED:
                        self.fenced_replies += 1
                else:
                    if reply.txid > self.seen_txid:
                        self.seen_txid = reply.txid
                    future._set_reply(reply)
                    delivered += 1
            if not sock.getsockopt(zmq.EVENTS) & zmq.POLLIN:
                return delivered, stopping

    def _fail_all(self, error: BaseException) -> None:
        pending, self._pending = self._pending, {}
        self._resend = False
        for future in pending.values():
            future._set_error(error)


class Pipeline(Calls):
    """Keeps up to `window` requests in flight on a client. Every method returns a Future at
    once (waiting only while the window is full); `results()` waits for all and returns the
    results in submission order. As a context manager, leaving the block waits for all.

    With `batch` None (the default) a request is sent at once when nothing of the client is
    in flight, and queued otherwise; the queue is sent as one BATCH message when AUTO_BATCH
    are queued, when its oldest request has waited `linger_ms` (checked as each request
    comes), when the window is full, and when the caller waits. With `batch` K > 1, requests
    are queued and sent K per BATCH message: when K are queued, when the window is full, and
    when the caller waits (`flush()` sends what is queued). With `batch` 1 each request is
    its own message. The window counts requests, queued or sent."""

    def __init__(self, client: Client, window: int = 64, batch: int | None = None,
                 linger_ms: float = DEFAULT_LINGER_MS):
        if window < 1:
            raise ValueError("window must be at least 1")
        if batch is not None and not 1 <= batch <= DEFAULT_MAX_BATCH:
            raise ValueError(f"batch must be within 1..{DEFAULT_MAX_BATCH}, or None to batch "
                             "while requests are in flight")
        if not linger_ms >= 0:
            raise ValueError("linger_ms must be at least 0")
        self.client = client
        self.durability, self.consistency = client.durability, client.consistency
        self.window = window
        self.auto = batch is None
        self.batch = AUTO_BATCH if batch is None else batch
        self._linger_ns = int(linger_ms * 1e6)
        self._inflight = 0
        self._queue: list[Future] = []
        self.futures: list[Future] = []

    def _run(self, op: int, args: list, durability: int, convert: Callable[[Reply], Any]
             ) -> Future:
        client = self.client
        while self._inflight >= self.window:
            if self._queue:
                self.flush()
            client._progress()
        queue = self._queue
        if self.batch == 1 or (self.auto and not queue and not client._pending):
            future = client._submit(op, args, durability, convert, self)
        else:
            future = client._queue(op, args, durability, convert, self)
            queue.append(future)
            if len(queue) >= self.batch or (
                    self.auto and future.sent_ns - queue[0].sent_ns >= self._linger_ns):
                self.flush()
        self._inflight += 1
        self.futures.append(future)
        return future

    def flush(self) -> None:
        """Send the queued requests now (in one BATCH message)."""
        queue = self._queue
        if queue:
            self._queue = []
            self.client._submit_batch(queue)

    def wait(self) -> None:
        """Wait until every request of this pipeline is answered (or failed)."""
        self.flush()
        client = self.client
        while self._inflight > 0:
            client._progress()

    def results(self) -> list:
        """Wait for all, then return every result in submission order (raising the first
        error) and forget the futures."""
        self.wait()
        futures, self.futures = self.futures, []
        return [f.result() for f in futures]

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.wait()


def promote_standby(endpoint: str, timeout_s: float,
                    credentials: Credentials | None = None) -> dict:
    """PROMOTE the checkpoint node whose status endpoint is `endpoint`, once (a promotion is
    never repeated blindly); its report (docs/failover.md), or MwclusterError."""
    try:
        with Client(endpoint, timeout_s=timeout_s, retries=0,
                    credentials=credentials) as client:
            return client.promote()
    except RequestTimeout:
        raise RequestTimeout(f"no answer from {endpoint} within {timeout_s} s: is a "
                             "checkpoint node's status endpoint there? (its status tells "
                             "whether it was promoted meanwhile)") from None
