"""Reads sent to a standby: `Client(read_from="standby", standby=ENDPOINT)` routes get,
get_with_stat, stat, children and list to a checkpoint node's status endpoint as STANDBY_READ
(nodes/checkpoint/reads.py), with the highest txid the client has seen from master or
standby, so that it reads its own writes and never older state than it saw. When the standby
is behind (`behind`), does not answer within the wait, or is an older node that does not
serve reads, the read goes to the master instead (counted in `fallbacks`).

One DEALER, one read at a time (the Client is not thread-safe either); replies to an earlier
read that timed out are dropped by request id.
"""

from __future__ import annotations

import logging
import os
import time

import zmq

from mwcluster.security.curve import Credentials, HandshakeWatch, secure_client
from mwcluster.wire.protocol import (ErrorCode, Op, ProtocolError, Reply, decode_reply,
                                     encode_request)

log = logging.getLogger(__name__)

READ_FROM = ("master", "standby")
# the statuses after which the master answers instead: the standby cannot serve this read
_TO_MASTER = frozenset({ErrorCode.BEHIND, ErrorCode.UNKNOWN_OP, ErrorCode.SHUTTING_DOWN})


class StandbyReader:
    def __init__(self, endpoint: str, max_wait_s: float, context: zmq.Context | None = None,
                 slack_s: float = 1.0, credentials: Credentials | None = None) -> None:
        self.endpoint = endpoint
        # a master and its checkpoint node serve with the cluster's one server key
        self.credentials = credentials
        self.max_wait_ms = max(0, int(max_wait_s * 1000))
        self._timeout_ms = self.max_wait_ms + int(slack_s * 1000)
        self._ctx = context if context is not None else zmq.Context.instance()
        self._client_id = os.urandom(16)
        self._next_id = time.time_ns() // 1000
        self._sock: zmq.Socket | None = None
        self._watch: HandshakeWatch | None = None
        self.refused: str | None = None   # why the standby refused the handshake, if it did
        self.served = 0           # reads the standby answered
        self.fallbacks = 0        # reads that went to the master instead

    @classmethod
    def for_client(cls, read_from: str, endpoint: str | None, timeout_s: float,
                   context: zmq.Context | None,
                   credentials: Credentials | None = None) -> StandbyReader | None:
        """The reader a Client's `read_from` asks for (None: every read goes to the master);
        ValueError naming what is missing or allowed."""
        if read_from == "master":
            return None
        if read_from != "standby":
            raise ValueError(f"read_from must be one of {', '.join(map(repr, READ_FROM))}, "
                             f"not {read_from!r}")
        if not endpoint:
            raise ValueError("read_from='standby' needs standby=ENDPOINT: the checkpoint "
                             "node's status endpoint (its --status-endpoint)")
        return cls(endpoint, min(1.0, timeout_s / 2), context, credentials=credentials)

    def _socket(self) -> zmq.Socket:
        if self._sock is None:
            sock = self._ctx.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            self._watch = secure_client(sock, self.credentials, self.endpoint)
            sock.connect(self.endpoint)
            self._sock = sock
        return self._sock

    def read(self, op: int, args: list, min_txid: int, epoch_seen: int) -> Reply | None:
        """The standby's reply to a read at `min_txid` or later, or None: ask the master."""
        sock = self._socket()
        request_id = self._next_id
        self._next_id += 1
        try:
            sock.send(encode_request(self._client_id, request_id, Op.STANDBY_READ,
                                     [min_txid, self.max_wait_ms, int(op), list(args)], 0,
                                     epoch_seen), zmq.NOBLOCK)
        except zmq.ZMQError:
            return self._fallback("could not send")
        deadline = time.monotonic() + self._timeout_ms / 1000
        while True:
            left_ms = int((deadline - time.monotonic()) * 1000)
            if left_ms <= 0 or not sock.poll(left_ms):
                refused = self._watch.failure() if self._watch is not None else None
                self.close()          # a fresh socket for the next read
                if refused is not None:
                    if self.refused is None:        # a configuration to mend: say it once
                        log.warning("reads go to the master: %s", refused)
                    self.refused = str(refused)
                    return self._fallback(self.refused)
                return self._fallback(f"no answer within {self._timeout_ms} ms")
            try:
                reply = decode_reply(sock.recv())
            except ProtocolError as exc:
                log.warning("dropped a malformed reply from the standby %s: %s",
                            self.endpoint, exc)
                continue
            if reply.request_id != request_id:
                continue              # the answer to a read that timed out
            if reply.status in _TO_MASTER:
                return self._fallback(reply.result[1] if isinstance(reply.result, list)
                                      else str(reply.status))
            self.served += 1
            return reply

    def _fallback(self, why: str) -> None:
        self.fallbacks += 1
        log.debug("read from the master instead of the standby %s: %s", self.endpoint, why)
        return None

    def close(self) -> None:
        if self._watch is not None:
            self._watch.close()
            self._watch = None
        if self._sock is not None:
            self._sock.close(linger=0)
            self._sock = None
