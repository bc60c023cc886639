"""The checkpoint node's status endpoint: a ROUTER answering STATUS (the node's status map) and
PING (and, for failover, PROMOTE and VOTE) in the wire protocol's request/reply format, so
the tools that read a master's status (`mwcluster status --master ENDPOINT --json`) read the
node's too. Anything else is answered
`unknown_op`; undecodable requests get the protocol's error reply. Owned by the node's loop.
"""

from __future__ import annotations

from typing import Any, Callable

import zmq

from mwcluster import errors
from mwcluster.wire.protocol import (ErrorCode, Op, ProtocolError, decode_request, encode_error,
                                     encode_reply, error_code_for)

MAX_REQUEST_BYTES = 1 << 16
MAX_PER_CALL = 64            # requests answered per call, so the stream is not held up


class StatusEndpoint:
    def __init__(self, ctx: zmq.Context, endpoint: str) -> None:
        sock = self.sock = ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.MAXMSGSIZE, MAX_REQUEST_BYTES)
        try:
            sock.bind(endpoint)
        except zmq.ZMQError as exc:
            sock.close(linger=0)
            raise errors.MwclusterError(f"cannot bind the status endpoint {endpoint}: "
                                        f"{exc}") from None
        self.endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)

    def answer(self, status: Callable[[], dict[str, Any]], epoch: int,
               ops: dict[int, Callable[[Any], Any]] | None = None) -> None:
        """Answer the requests waiting (up to MAX_PER_CALL). `ops` answers more operations
        (PROMOTE, VOTE): a function of the Request that returns the result or raises a
        MwclusterError (answered with its wire error code)."""
        sock = self.sock
        for _ in range(MAX_PER_CALL):
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            ident, body = frames[0], frames[-1]
            try:
                req = decode_request(body, MAX_REQUEST_BYTES)
            except ProtocolError as exc:
                reply = encode_error(exc.request_id or 0, epoch, exc.error, str(exc))
            else:
                if req.op == Op.STATUS:
                    reply = encode_reply(req.request_id, epoch, 0, 0, status())
                elif req.op == Op.PING:
                    reply = encode_reply(req.request_id, epoch, 0, 0, None)
                elif ops and req.op in ops:
                    try:
                        reply = encode_reply(req.request_id, epoch, 0, 0, ops[req.op](req))
                    except errors.MwclusterError as exc:
                        reply = encode_error(req.request_id, epoch, error_code_for(exc),
                                             str(exc))
                else:
                    reply = encode_error(req.request_id, epoch, ErrorCode.UNKNOWN_OP,
                                         "a checkpoint node answers only STATUS and PING")
            try:
                sock.send_multipart([ident, reply], zmq.NOBLOCK)
            except zmq.ZMQError:
                pass         # the peer is gone: nothing to answer

    def close(self, linger_ms: int = 0) -> None:
        self.sock.close(linger=linger_ms)
