"""Reads served by the standby from its replica (the HDFS Observer NameNode's model):
STANDBY_READ [min_txid, max_wait_ms, op, args] answers a namespace read (GET, STAT, CHILDREN,
LIST: nodes/master/reads.py) once the replica has applied `min_txid`, the highest txid the
client has seen, so a client reads its own writes and never goes back in time, whichever of
master and standby it asks. The reply's txid is the replica's applied txid when served.

A read whose txid the replica has not reached waits, parked here, at most `max_wait_ms`
(capped at MAX_WAIT_S); then it is answered `behind` and the client asks the master. The
replica holds only records the master made durable, so a standby read never shows a write
that a crash of the master erases; it may be older than the master's newest state (it is not
linearizable across clients: docs/durability.md).

Owned by the checkpoint node's loop thread; no sockets (the node sends what `handle` and
`due` return), time comes in as an argument.
"""

from __future__ import annotations

from collections import deque

from mwcluster import errors
from mwcluster.core.state import State
from mwcluster.nodes.master.reads import NAMESPACE_READS
from mwcluster.wire.protocol import (ErrorCode, Op, ProtocolError, Request, decode_sub_request,
                                     encode_error, encode_reply)

MAX_WAIT_S = 10.0
MAX_PARKED = 10_000           # reads waiting at once; more are answered `behind` at once
_U64 = 1 << 64


class StandbyReads:
    __slots__ = ("_parked", "served", "behind", "waited")

    def __init__(self) -> None:
        self._parked: deque[tuple[int, float, bytes, Request]] = deque()
        self.served = 0           # reads answered from the replica
        self.behind = 0           # answered `behind` (the client went to the master)
        self.waited = 0           # served after waiting for the replica

    def __len__(self) -> int:
        return len(self._parked)

    def handle(self, ident: bytes, req: Request, state: State, epoch: int,
               now: float) -> bytes | None:
        """The reply frame to a STANDBY_READ, or None when it waits for the replica."""
        rid = req.request_id
        args = req.args
        if len(args) != 4 or type(args[0]) is not int or not 0 <= args[0] < _U64 \
                or type(args[1]) is not int or args[1] < 0 or type(args[2]) is not int \
                or type(args[3]) is not list:
            return encode_error(rid, epoch, ErrorCode.BAD_REQUEST, "STANDBY_READ takes "
                                "[min_txid: uint, max_wait_ms: uint, op: uint, args: array]")
        min_txid, wait_ms, op, inner = args
        if op not in NAMESPACE_READS:
            return encode_error(rid, epoch, ErrorCode.BAD_REQUEST,
                                f"a standby serves only GET, STAT, CHILDREN and LIST, not op "
                                f"{op}; ask the master")
        try:
            sub = decode_sub_request(req.client_id, [rid, op, 0, inner])
        except ProtocolError as exc:
            return encode_error(rid, epoch, exc.error, str(exc))
        if state.txid >= min_txid:
            return self._serve(sub, state, epoch)
        if wait_ms == 0 or len(self._parked) >= MAX_PARKED:
            return self._behind(sub, min_txid, state, epoch)
        deadline = now + min(wait_ms / 1000, MAX_WAIT_S)
        self._parked.append((min_txid, deadline, ident, sub))
        return None

    def due(self, state: State, epoch: int, now: float) -> list[tuple[bytes, bytes]]:
        """The parked reads the replica now covers (served) or whose wait is over (`behind`),
        as (ident, reply). The loop calls it after applying records and at every tick."""
        if not self._parked:
            return []
        out = []
        keep: deque[tuple[int, float, bytes, Request]] = deque()
        for min_txid, deadline, ident, sub in self._parked:
            if state.txid >= min_txid:
                self.waited += 1
                out.append((ident, self._serve(sub, state, epoch)))
            elif now >= deadline:
                out.append((ident, self._behind(sub, min_txid, state, epoch)))
            else:
                keep.append((min_txid, deadline, ident, sub))
        self._parked = keep
        return out

    def _serve(self, sub: Request, state: State, epoch: int) -> bytes:
        try:
            result = NAMESPACE_READS[sub.op](state.ns, sub)
        except ProtocolError as exc:
            return encode_error(sub.request_id, epoch, exc.error, str(exc))
        except errors.InvalidRecord as exc:
            return encode_error(sub.request_id, epoch, ErrorCode.INVALID, str(exc))
        self.served += 1
        return encode_reply(sub.request_id, epoch, 0, state.txid, result)

    def _behind(self, sub: Request, min_txid: int, state: State, epoch: int) -> bytes:
        self.behind += 1
        return encode_error(sub.request_id, epoch, ErrorCode.BEHIND,
                            f"this standby has applied up to txid {state.txid}, not yet the "
                            f"txid {min_txid} the client has seen ({Op(sub.op).name}); read "
                            "from the master")
