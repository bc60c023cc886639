"""A node's status endpoint: a ROUTER answering STATUS (the node's status map) and PING in the
wire protocol's request/reply format, so the tools that read a master's status
(`mwcluster status --master ENDPOINT --json`, `Client.status()`) read a node's too. Anything
else is answered `unknown_op` (unless the owner adds operations, as the checkpoint node does
for PROMOTE and VOTE); undecodable requests get the protocol's error reply. With `security` the endpoint is a CURVE
server behind the node's ZAP handler, and every request is checked against its connection's
principal (security/access.py) before it is answered. With `audit` (an AuditLog), every
refusal and every request of the owner's operations (PROMOTE, VOTE) gets an audit line.

`StatusEndpoint` is driven by the thread that owns it (the checkpoint node's loop calls
`answer()` from its poll). `StatusThread` serves one from a thread of its own, for a node whose
owner thread waits on a queue rather than on sockets (the worker): it reads only what
`status()` returns, a reference the owner replaces, never a structure the owner changes.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Callable

import zmq

from mwcluster import errors
from mwcluster.security.curve import ServerSecurity
from mwcluster.wire.protocol import (ErrorCode, Op, ProtocolError, decode_request, encode_error,
                                     encode_reply, error_code_for)

log = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 1 << 16
MAX_PER_CALL = 64            # requests answered per call, so the owner's loop is not held up


class StatusEndpoint:
    def __init__(self, ctx: zmq.Context, endpoint: str, role: str = "checkpoint node",
                 security: ServerSecurity | None = None, audit=None) -> None:
        self.role = role
        self.security = security
        self.audit = audit               # AuditLog of the owner's operations and refusals
        self.unauthorized = 0            # requests refused by the access check
        sock = self.sock = ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.MAXMSGSIZE, MAX_REQUEST_BYTES)
        if security is not None:
            security.serve(sock)
        try:
            sock.bind(endpoint)
        except zmq.ZMQError as exc:
            sock.close(linger=0)
            raise errors.MwclusterError(f"cannot bind the status endpoint {endpoint}: "
                                        f"{exc}") from None
        self.endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)

    def answer(self, status: Callable[[], dict[str, Any]], epoch: int,
               ops: dict[int, Callable[[Any], Any]] | None = None,
               later: dict[int, Callable[[bytes, Any], bytes | None]] | None = None) -> int:
        """Answer the requests waiting (up to MAX_PER_CALL); return how many were read.
        `ops` answers more operations (PROMOTE, VOTE): a function of the Request that returns
        the result or raises a MwclusterError (answered with its wire error code). `later`
        answers operations whose reply may come later (STANDBY_READ): a function of the
        peer's identity and the Request that returns the reply frame, or None when the owner
        sends it later with `send`."""
        sock = self.sock
        access = self.security.access if self.security is not None else None
        audit = self.audit
        audited = False
        try:
            for n in range(MAX_PER_CALL):
                try:
                    frames = sock.recv_multipart(zmq.NOBLOCK, copy=False)
                except zmq.Again:
                    return n
                ident, body = frames[0].bytes, frames[-1]
                try:
                    req = decode_request(body.bytes, MAX_REQUEST_BYTES)
                except ProtocolError as exc:
                    reply = encode_error(exc.request_id or 0, epoch, exc.error, str(exc))
                else:
                    why = None if access is None else _check(access, body.get("User-Id"), req)
                    if why is not None:
                        self.unauthorized += 1
                        log.info("%s %s: unauthorized: %s", self.role, self.endpoint, why)
                        reply = encode_error(req.request_id, epoch, ErrorCode.UNAUTHORIZED, why)
                        if audit is not None:
                            self._audit(access, body, req, ErrorCode.UNAUTHORIZED)
                            audited = True
                    elif req.op == Op.STATUS:
                        try:
                            reply = encode_reply(req.request_id, epoch, 0, 0, status())
                        except Exception as exc:     # a bug: answer it rather than go silent
                            log.exception("the status endpoint %s could not build its status",
                                          self.endpoint)
                            reply = encode_error(req.request_id, epoch, ErrorCode.INTERNAL,
                                                 f"the status could not be built: {exc!r:.200}")
                    elif req.op == Op.PING:
                        reply = encode_reply(req.request_id, epoch, 0, 0, None)
                    elif later and req.op in later:
                        reply = later[req.op](ident, req)
                        if reply is None:
                            continue
                    elif ops and req.op in ops:
                        status_code = 0
                        try:
                            reply = encode_reply(req.request_id, epoch, 0, 0, ops[req.op](req))
                        except errors.MwclusterError as exc:
                            status_code = error_code_for(exc)
                            reply = encode_error(req.request_id, epoch, status_code, str(exc))
                        if audit is not None:
                            self._audit(access, body, req, status_code)
                            audited = True
                    else:
                        reply = encode_error(req.request_id, epoch, ErrorCode.UNKNOWN_OP,
                                             f"a {self.role} answers only STATUS and PING")
                self.send(ident, reply)
            return MAX_PER_CALL
        finally:
            if audited:
                audit.flush()

    def _audit(self, access, body, req, status: int) -> None:
        who = access.name(body.get("User-Id")) if access is not None else "-"
        self.audit.write(who, body.get("Peer-Address"), req.op, req.args, status, 0)

    def send(self, ident: bytes, reply: bytes) -> None:
        try:
            self.sock.send_multipart([ident, reply], zmq.NOBLOCK)
        except zmq.ZMQError:
            pass         # the peer is gone: nothing to answer

    def close(self, linger_ms: int = 0) -> None:
        self.sock.close(linger=linger_ms)
        if self.audit is not None:
            self.audit.close()


def _check(access, user: str | None, req) -> str | None:
    try:
        return access.check(user, req.op, req.args)
    except Exception as exc:        # a bug in the check: refuse, log, keep serving
        log.exception("the access check of op %d failed", req.op)
        return f"the request could not be checked ({type(exc).__name__}); nothing was applied"


class StatusThread:
    """Serves a StatusEndpoint from a thread of its own until `stop()`.

    The socket is bound here, on the caller's thread, so that a bad endpoint fails the
    caller's start; from `start()` on only the thread touches it (Thread.start orders the
    hand-over), and the thread closes it on its way out. A stop is seen within `poll_ms`.
    `status` is called on this thread: it must only read an immutable value (a dict the
    owner replaces whole); `epoch` likewise returns the epoch to stamp replies with."""

    def __init__(self, ctx: zmq.Context, endpoint: str, status: Callable[[], dict[str, Any]],
                 epoch: Callable[[], int], *, role: str, poll_ms: int = 100,
                 security: ServerSecurity | None = None) -> None:
        self._server = StatusEndpoint(ctx, endpoint, role, security)
        self.endpoint = self._server.endpoint
        self._status = status
        self._epoch = epoch
        self._poll_ms = poll_ms
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"{role} status", daemon=True)
        self.answered = 0            # read by tests only

    @property
    def unauthorized(self) -> int:
        """Requests its access check refused (read from any thread: an int)."""
        return self._server.unauthorized

    def start(self) -> StatusThread:
        self._thread.start()
        return self

    def _run(self) -> None:
        server = self._server
        poller = zmq.Poller()
        poller.register(server.sock, zmq.POLLIN)
        try:
            while not self._stop.is_set():
                if not poller.poll(self._poll_ms):
                    continue
                try:
                    self.answered += server.answer(self._status, self._epoch() or 0)
                except Exception:          # a bug in status(): log it, keep serving
                    log.exception("the status endpoint %s failed to answer", self.endpoint)
        finally:
            server.close()

    def stop(self, timeout_s: float = 5.0) -> bool:
        """Stop the thread and close the socket (the thread closes it; if it was never
        started, this does). False if the thread did not end within timeout_s."""
        self._stop.set()
        if self._thread.ident is None:
            self._server.close()
            return True
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            log.warning("the status thread of %s did not stop within %.1f s", self.endpoint,
                        timeout_s)
            return False
        return True
