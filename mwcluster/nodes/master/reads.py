"""The reads of the namespace (GET, STAT, CHILDREN, LIST, RANGE) from any State: the master answers
them from its memory, a standby from its replica (STANDBY_READ, nodes/checkpoint/reads.py).
No sockets, no clock. Arguments are untrusted: a wrong one raises ProtocolError (BAD_REQUEST)
or InvalidRecord (INVALID), nothing else.
"""

from __future__ import annotations

from typing import Any, Callable

from mwcluster.core.keys import check_prefix
from mwcluster.core.namespace import Namespace
from mwcluster.wire.protocol import ErrorCode, Op, ProtocolError, Request, args_check

MAX_LIST = 100_000           # names or keys per CHILDREN / LIST reply
MAX_RANGE = 10_000           # keys with their values per RANGE reply
_OPT_INT = (int, type(None))
_OPT_STR = (str, type(None))


def _get(ns: Namespace, req: Request) -> Any:
    key, = args_check(req, (str,), ("key",))
    got = ns.get_encoded(key)
    if got is None:
        return None
    value, stat = got
    return value, stat.version, stat.create_txid, stat.modify_txid


def _stat(ns: Namespace, req: Request) -> Any:
    key, = args_check(req, (str,), ("key",))
    stat = ns.stat(key)
    return None if stat is None else tuple(stat)


def _children(ns: Namespace, req: Request) -> Any:
    path, limit = args_check(req, (str, _OPT_INT), ("path", "limit"))
    return ns.children(check_prefix(path), _limit(req, limit))


def _list(ns: Namespace, req: Request) -> Any:
    prefix, limit, start_after = args_check(req, (str, int, _OPT_STR),
                                            ("prefix", "limit", "start_after"))
    return ns.list_prefix(prefix, _limit(req, limit), start_after)


def _range(ns: Namespace, req: Request) -> Any:
    """[[key, value, version, create_txid, modify_txid], ...]: LIST with the values."""
    prefix, limit, start_after = args_check(req, (str, int, _OPT_STR),
                                            ("prefix", "limit", "start_after"))
    out = []
    for key in ns.list_prefix(prefix, min(_limit(req, limit), MAX_RANGE), start_after):
        value, stat = ns.get_encoded(key)
        out.append((key, value, stat.version, stat.create_txid, stat.modify_txid))
    return out


def _limit(req: Request, limit: int | None) -> int:
    if limit is None:
        return MAX_LIST
    if type(limit) is not int or limit < 0:
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"{Op(req.op).name}: limit must be "
                            "nil or a non-negative integer", req.request_id)
    return min(limit, MAX_LIST)


NAMESPACE_READS: dict[int, Callable[[Namespace, Request], Any]] = {
    Op.GET: _get, Op.STAT: _stat, Op.CHILDREN: _children, Op.LIST: _list, Op.RANGE: _range}
