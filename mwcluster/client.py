"""The Python client of the master: a DEALER socket, typed errors, safe retries, pipelining.

    from mwcluster import Client

    with Client("tcp://127.0.0.1:5550") as client:
        txid = client.put("/datasets/logs/2026-11-26", {"parts": 17})
        value, stat = client.get_with_stat("/datasets/logs/2026-11-26")
        client.put("/datasets/logs/2026-11-26", {"parts": 18}, expected_version=stat.version)
        with client.pipeline(window=64) as p:
            futures = [p.put(f"/bench/{i}", i) for i in range(1000)]
        print([f.result() for f in futures][:3])

Every request carries the client's id (random, stable for the life of the Client) and an
increasing request id. When no reply comes within `timeout_s`, the client closes its socket
(linger 0), connects a new one (to the next endpoint when several are given) and resends the
same requests with the same ids: the master applies a retried mutation once and answers with
its first reply. A "shutting down" answer (a master restarting) is retried the same way.
Replies for request ids the client is not waiting for (late answers to requests it already
resent, or given up on) are dropped and counted in `stale_replies`. Retries follow the one
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

from mwcluster.client_calls import (Calls, Stat, convert_reply, op_check, op_delete, op_merge,
                                    op_put)
from mwcluster.errors import MessageTooLarge, MwclusterError, RequestTimeout, ShuttingDown
from mwcluster.wire.protocol import (DEFAULT_MAX_MESSAGE_BYTES, ErrorCode, Op, ProtocolError,
                                     Reply, decode_reply, encode_request)

__all__ = ["Client", "Future", "Pipeline", "Stat", "DEFAULT_ENDPOINT", "RETRY_POLICY",
           "op_check", "op_delete", "op_merge", "op_put"]

log = logging.getLogger(__name__)

DEFAULT_ENDPOINT = "tcp://127.0.0.1:5550"
DEFAULT_RETRIES = 3

# The retry policy, defined once: timeouts and "the master is shutting down" are retried (a
# restarting master answers the resent request); every other error is the master's answer.
# Each Client copies it with its own attempt count and sleep.
RETRYABLE = (RequestTimeout, ShuttingDown)
RETRY_POLICY = tenacity.Retrying(
    stop=tenacity.stop_after_attempt(DEFAULT_RETRIES + 1),
    wait=tenacity.wait_exponential(multiplier=0.05, max=2.0) + tenacity.wait_random(0, 0.05),
    retry=tenacity.retry_if_exception_type(RETRYABLE),
    reraise=True,
)


class Future:
    """The result of a request sent and not yet answered. `result()` waits for it (driving
    the client's socket) and returns the result or raises the request's error."""

    __slots__ = ("_client", "_convert", "_owner", "request_id", "op", "frame", "sent_ns",
                 "_done", "_value", "_error")

    def __init__(self, client: Client, request_id: int, op: int, frame: bytes,
                 convert: Callable[[Reply], Any], owner: Pipeline | None = None):
        self._client = client
        self._convert = convert
        self._owner = owner
        self.request_id = request_id
        self.op = op
        self.frame = frame
        self.sent_ns = 0
        self._done = False
        self._value: Any = None
        self._error: BaseException | None = None

    def done(self) -> bool:
        return self._done

    def result(self) -> Any:
        if not self._done:
            self._client._wait_for(self)
        if self._error is not None:
            raise self._error
        return self._value

    def exception(self) -> BaseException | None:
        if not self._done:
            self._client._wait_for(self)
        return self._error

    def _set_reply(self, reply: Reply) -> None:
        self._value, self._error = convert_reply(reply, self._convert)
        self._finish()

    def _set_error(self, error: BaseException) -> None:
        self._error = error
        self._finish()

    def _finish(self) -> None:
        self._done = True
        self.frame = b""
        if self._owner is not None:
            self._owner._inflight -= 1


class Client(Calls):
    """A connection to the master. Methods (put, merge, delete, multi, get, get_with_stat,
    stat, children, list, status, ping, fetch...) are defined in client_calls.Calls; each
    waits for its reply and returns its result or raises a typed MwclusterError."""

    def __init__(self, endpoint: str | list[str] = DEFAULT_ENDPOINT, timeout_s: float = 5.0,
                 retries: int = DEFAULT_RETRIES, client_id: bytes | str | None = None, *,
                 sleep: Callable[[float], None] | None = None,
                 max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
                 context: zmq.Context | None = None):
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
        self.max_message_bytes = max_message_bytes
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
        try:
            sock.connect(self.endpoint)
        except zmq.ZMQError as exc:
            sock.close(linger=0)
            raise ValueError(f"cannot connect to {self.endpoint!r}: {exc} (an endpoint looks "
                             "like tcp://127.0.0.1:5550)") from None
        self._sock = sock

    def _reconnect(self) -> None:
        if self._sock is not None:
            self._sock.close(linger=0)
        self._endpoint_index = (self._endpoint_index + 1) % len(self.endpoints)
        self.reconnects += 1
        log.info("reconnecting to %s (%d requests in flight)", self.endpoint,
                 len(self._pending))
        self._connect()

    def close(self) -> None:
        """Close the socket; requests still in flight fail with RequestTimeout."""
        if self._sock is None:
            return
        self._sock.close(linger=0)
        self._sock = None
        self._fail_all(RequestTimeout("the client was closed before the reply came"))

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def pipeline(self, window: int = 64) -> Pipeline:
        """A pipeline that keeps up to `window` requests in flight on this client."""
        return Pipeline(self, window)

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

    def _submit(self, op: int, args: list, durability: int, convert: Callable[[Reply], Any],
                owner: Pipeline | None) -> Future:
        if self._sock is None:
            raise MwclusterError("the client is closed")
        request_id = self._next_id
        self._next_id += 1
        frame = encode_request(self.client_id, request_id, op, args, durability)
        if len(frame) > self.max_message_bytes:
            raise MessageTooLarge(f"{Op(op).name} request is {len(frame)} bytes; the limit is "
                                  f"{self.max_message_bytes} (store large data elsewhere and "
                                  "keep a reference in the value)")
        future = Future(self, request_id, op, frame, convert, owner)
        self._pending[request_id] = future
        future.sent_ns = time.perf_counter_ns()
        try:
            self._sock.send(frame)
        except zmq.Again:
            # The socket cannot take it now: the next wait resends it on a new connection.
            self._reconnect()
            self._resend = True
        return future

    def _wait_for(self, future: Future) -> None:
        while not future._done:
            self._progress()

    def _progress(self) -> None:
        """Wait until at least one pending request is answered, retrying on timeouts; after
        the last attempt every pending request fails with RequestTimeout (or ShuttingDown)."""
        try:
            self._retry(self._progress_attempt)
        except RETRYABLE as exc:
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
                self._timed_out("could not send")
        oldest = next(iter(pending.values()))
        deadline_ns = oldest.sent_ns + self._timeout_ns
        while True:
            remaining_ms = (deadline_ns - time.perf_counter_ns() + 999_999) // 1_000_000
            if remaining_ms <= 0 or not sock.poll(remaining_ms, zmq.POLLIN):
                self._timed_out(f"no reply within {self.timeout_s} s")
            delivered, stopping = self._drain(sock)
            if stopping is not None:
                # The master is going away: resend on a new connection, after the backoff
                # unless other requests were answered meanwhile.
                self._reconnect()
                self._resend = True
                if not delivered:
                    raise stopping
            if delivered:
                return

    def _timed_out(self, why: str) -> None:
        oldest = next(iter(self._pending.values()))
        endpoint = self.endpoint
        self._reconnect()
        self._resend = True
        raise RequestTimeout(f"{why} from the master at {endpoint} ({Op(oldest.op).name} "
                             f"request {oldest.request_id}, {len(self._pending)} in flight); "
                             "is the master running there?")

    def _drain(self, sock: zmq.Socket) -> tuple[int, ShuttingDown | None]:
        """Receive every reply that is ready; return how many answered a pending request, and
        the error of a "shutting down" reply (its request stays pending, to be resent)."""
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
                self.epoch = reply.epoch
                future = pending.pop(reply.request_id, None)
                if future is None and reply.request_id == 0 and reply.status and \
                        len(pending) == 1:
                    # An error too early to name the request (e.g. too large): with one
                    # request in flight, it can only be that one.
                    future = pending.popitem()[1]
                if future is None:
                    self.stale_replies += 1
                elif reply.status == ErrorCode.SHUTTING_DOWN:
                    pending[future.request_id] = future
                    stopping = convert_reply(reply, future._convert)[1]
                else:
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
    results in submission order. As a context manager, leaving the block waits for all."""

    def __init__(self, client: Client, window: int = 64):
        if window < 1:
            raise ValueError("window must be at least 1")
        self.client = client
        self.window = window
        self._inflight = 0
        self.futures: list[Future] = []

    def _run(self, op: int, args: list, durability: int, convert: Callable[[Reply], Any]
             ) -> Future:
        client = self.client
        while self._inflight >= self.window:
            client._progress()
        future = client._submit(op, args, durability, convert, self)
        self._inflight += 1
        self.futures.append(future)
        return future

    def wait(self) -> None:
        """Wait until every request of this pipeline is answered (or failed)."""
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
