"""The wire protocol: every message between clients, workers, the checkpoint node and the
master, its encoding, and the validation of untrusted input into typed messages.

This module is the only place that knows the frame layouts; docs/protocol.md describes every
message beside this code. All payloads are msgpack (strings as str, byte strings as bin).

Request/reply (client DEALER -> master ROUTER; the ROUTER adds the peer's identity frame):

    request frame:  [1, client_id: bin(1..64), request_id: uint, op: uint, durability: uint, args: array
                     (, epoch_seen: uint)]
    reply frame:    [1, request_id: uint, epoch: uint, status: uint, txid: uint, result: any]

`durability` is a core.durability.Durability code: 0 (the master's default), 1 (async),
2 (sync) or 3 (replicated: the reply waits until the standby reports having the record), plus
16 (FAST) for consistency "fast": without it a reply that depends on the state waits until
what it saw is durable at that level. `status` 0 is success; any other value is an error code
(ErrorCode) and `result` is then [code_name: str, message: str].
`epoch_seen`, optional (a 6-element request means 0), is the highest master epoch the sender
has seen: a master under a lower epoch is fenced by it (docs/failover.md).
`txid` is the txid a mutation was logged at; for a read of the state (GET, STAT, CHILDREN,
LIST, the job reads) the txid it was served at (every record up to it is in the answer); 0
otherwise. A request must be one
ZMQ frame; anything else is refused.

BATCH (op 200) carries many requests in one frame, each with its own request id, durability
and idempotency; the reply carries their replies in the same order:

    batch args:     [[request_id: uint, op: uint, durability: uint, args: array], ...]
    batch result:   [[request_id: uint, status: uint, txid: uint, result: any], ...]

At most MAX_BATCH (by default) sub-requests; no BATCH inside a BATCH. A malformed sub-request
gets its own error sub-reply (request_id 0 when it cannot be read) and the others proceed. The
batch reply's own txid is the highest txid among its sub-replies.

Log stream (master PUB -> subscribers), two frames, topic first:

    [b"L", [1, epoch, first_txid, last_txid, [[txid, epoch, payload: bin], ...]]]   records
    [b"H", [1, epoch, durable_txid, digest: uint|nil, now_ms: uint]]               heartbeat
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any, NamedTuple

import msgpack

from mwcluster import errors
from mwcluster.core.durability import FAST, Durability
from mwcluster.core.records import RecordKind

PROTOCOL_VERSION = 1
DEFAULT_MAX_MESSAGE_BYTES = 16 << 20
DEFAULT_MAX_BATCH = 1024       # sub-requests per BATCH

# Where a master listens unless told otherwise: every config and the client default to these.
DEFAULT_CLIENT_ENDPOINT = "tcp://127.0.0.1:5550"
DEFAULT_PUB_ENDPOINT = "tcp://127.0.0.1:5551"

TOPIC_LOG = b"L"
TOPIC_HEARTBEAT = b"H"


class Op(IntEnum):
    # mutations: a request's args are its record's fields, so their codes are the record
    # kinds (RECORD_MUTATIONS below: the one place where the two code spaces meet)
    PUT = RecordKind.PUT
    MERGE = RecordKind.MERGE
    DELETE = RecordKind.DELETE
    MULTI = RecordKind.MULTI
    # jobs and workers (nodes/master/jobs.py): args in ARG_SPECS below, see docs/protocol.md
    JOB_SUBMIT = 10    # [job_id|nil, name, handler, priority, max_attempts, [[input, params]]]
    JOB_CANCEL = 11    # [job_id, reason] -> cancelled task count
    JOB_DELETE = 12    # [job_id] -> task count
    WORKER_REGISTER = 20   # [worker_id, address, slots(, status_endpoint)] -> map
    WORKER_HEARTBEAT = 21  # [worker_id, running: [[job_id, index, attempt]]] -> map (not logged)
    TASK_REQUEST = 22  # [worker_id, max_tasks] -> [[job_id, index, attempt, handler, input,
    #                    params], ...]
    TASK_PROGRESS = 23  # [worker_id, job_id, index, attempt, progress, counters] -> nil
    TASK_FINISH = 24   # [worker_id, job_id, index, attempt, ok, outcome] -> task state
    WORKER_LEAVE = 25  # [worker_id] -> nil
    # leases (nodes/master/coordination.py): logged, except the keepalive
    LEASE_GRANT = 40   # [ttl_ms] -> lease_id (the txid of its LeaseGrant record)
    LEASE_REVOKE = 41  # [lease_id] -> the number of keys it deleted
    # reads
    GET = 100          # [key] -> [value: bin, version, create_txid, modify_txid] | nil
    STAT = 101         # [key] -> [version, create_txid, modify_txid, value_bytes] | nil
    CHILDREN = 102     # [path, limit: uint|nil] -> [name, ...]
    LIST = 103         # [prefix, limit: uint, start_after: str|nil] -> [key, ...]
    JOB_LIST = 104     # [include_finished: bool] -> [job summary map, ...]
    JOB_STATUS = 105   # [job_id] -> map
    JOB_TASKS = 106    # [job_id, start_index, limit, state|nil] -> [task map, ...]
    STATUS = 110       # [] -> map (see docs/protocol.md)
    PING = 111         # [] -> nil
    RELOAD_PRINCIPALS = 112  # [] -> principal count: read the principals directory again
    RANGE = 107        # [prefix, limit, start_after|nil] -> [[key, value, version,
    #                    create_txid, modify_txid], ...] in key order, at one txid
    WATCH = 108        # [prefix, from_txid, after_epoch|nil, limit, wait_ms] -> [next_txid,
    #                    epoch of next_txid - 1|nil, [[txid, type, key, value, version,
    #                    create_txid], ...]]; error COMPACTED [oldest_txid, current_txid]
    LEASE_KEEPALIVE = 109  # [lease_id] -> ttl_ms (not logged: the serving master's deadline)
    # replication (the checkpoint node and any replica)
    FETCH = 120        # [from_txid, max_bytes] -> [durable_txid, [[txid, epoch, payload], ...]]
    SNAPSHOT_INFO = 121   # [] -> [txid, epoch, digest, size_bytes, created_ms] | nil
    SNAPSHOT_CHUNK = 122  # [txid, offset, length] -> bin
    # snapshot upload (checkpoint node -> master), one upload at a time
    SNAPSHOT_UPLOAD_BEGIN = 130  # [txid, epoch, digest, size_bytes, crc32(, status_endpoint)]
    #                              -> [upload_id, "accepted" | "have"]
    SNAPSHOT_UPLOAD_CHUNK = 131  # [upload_id, offset, data: bin] -> [received_bytes]
    SNAPSHOT_UPLOAD_END = 132    # [upload_id] -> [kept_snapshot_txids, purged_segment_count]
    SNAPSHOT_UPLOAD_ABORT = 133  # [upload_id] -> nil
    CHECKPOINT_HELLO = 134       # [status_endpoint: str|nil, replica_txid, checkpoint_txid|nil]
    #                              -> nil (the node tells the master it runs)
    REPLICA_ACK = 135            # [replica_txid] -> nil: the standby has applied up to there
    #                              (releases `replicated` replies)
    # failover, answered by a checkpoint node's status endpoint (docs/failover.md)
    PROMOTE = 140      # [] -> map: the promotion report (the node then serves as master)
    VOTE = 141         # [] -> map: a client or worker that cannot reach the master asks the
    #                    standby to serve (auto failover); `promoted` says whether it did
    STANDBY_READ = 142  # [min_txid, max_wait_ms, op, args] -> the read's result, served from
    #                     the replica once it applied min_txid; txid: the replica's txid
    # many requests in one frame
    BATCH = 200        # [[request_id, op, durability, args], ...] -> [[request_id, status,
    #                    txid, result], ...]


# The mutations whose request becomes the record `[op, *args]` (nodes/master/handlers.py):
# the only codes the wire operations share with the record kinds. Every other operation has
# a code of its own; job and worker records are built by the master from the request.
RECORD_MUTATIONS: dict[Op, RecordKind] = {Op.PUT: RecordKind.PUT, Op.MERGE: RecordKind.MERGE,
                                         Op.DELETE: RecordKind.DELETE,
                                         Op.MULTI: RecordKind.MULTI}
MUTATIONS = frozenset(RECORD_MUTATIONS)
# Logged job and worker operations: the master builds their records (it adds the time, a job
# id, the scheduler's picks), so their args are not record fields. WORKER_HEARTBEAT is soft
# state and logs nothing.
JOB_MUTATIONS = frozenset({Op.JOB_SUBMIT, Op.JOB_CANCEL, Op.JOB_DELETE, Op.WORKER_REGISTER,
                           Op.TASK_REQUEST, Op.TASK_PROGRESS, Op.TASK_FINISH, Op.WORKER_LEAVE})
FIRST_JOB_OP = int(Op.JOB_SUBMIT)   # ops from here up to 99 are handled by nodes/master/jobs.py
# The reads whose answer depends on the state: with the mutations (codes below 100), what the
# consistency barrier holds back until the state it saw is durable (docs/durability.md); their
# reply's txid is the txid they were served at.
STATE_READS = frozenset(int(op) for op in (Op.GET, Op.STAT, Op.CHILDREN, Op.LIST, Op.JOB_LIST,
                                           Op.JOB_STATUS, Op.JOB_TASKS, Op.RANGE))
LEASE_OPS = frozenset({Op.LEASE_GRANT, Op.LEASE_REVOKE, Op.LEASE_KEEPALIVE})
# A watch event's type (the second element of each event of a WATCH reply)
EVENT_PUT, EVENT_DELETE, EVENT_RECORD = 0, 1, 2

_OPT_STR = (str, type(None))
_NUM = (int, float)
_ANY = object
# Per job op: (the type of each argument, its name). Checked by check_args; the values (names,
# ranges, task shapes) are checked when the master builds the record.
ARG_SPECS: dict[int, tuple[tuple, tuple[str, ...]]] = {
    Op.JOB_SUBMIT: ((_OPT_STR, str, str, int, int, list),
                    ("job_id", "name", "handler", "priority", "max_attempts", "tasks")),
    Op.JOB_CANCEL: ((str, str), ("job_id", "reason")),
    Op.JOB_DELETE: ((str,), ("job_id",)),
    Op.WORKER_REGISTER: ((str, str, int), ("worker_id", "address", "slots")),
    Op.WORKER_HEARTBEAT: ((str, list), ("worker_id", "running")),
    Op.TASK_REQUEST: ((str, int), ("worker_id", "max_tasks")),
    Op.TASK_PROGRESS: ((str, str, int, int, _NUM, dict),
                       ("worker_id", "job_id", "index", "attempt", "progress", "counters")),
    Op.TASK_FINISH: ((str, str, int, int, bool, _ANY),
                     ("worker_id", "job_id", "index", "attempt", "ok", "outcome")),
    Op.WORKER_LEAVE: ((str,), ("worker_id",)),
    Op.JOB_LIST: ((bool,), ("include_finished",)),
    Op.JOB_STATUS: ((str,), ("job_id",)),
    Op.JOB_TASKS: ((str, int, int, _OPT_STR), ("job_id", "start_index", "limit", "state")),
}
# Args a newer client or worker may add after those of ARG_SPECS (an older one leaves them
# out, and check_args gives None for them): their types and names.
OPTIONAL_ARGS: dict[int, tuple[tuple, tuple[str, ...]]] = {
    Op.JOB_SUBMIT: ((dict,), ("options",)),
    Op.WORKER_REGISTER: ((_OPT_STR,), ("status_endpoint",)),
}


class ErrorCode(IntEnum):
    OK = 0
    BAD_REQUEST = 1       # malformed frame, wrong types, wrong field count
    UNKNOWN_OP = 2
    TOO_LARGE = 3
    UNSUPPORTED_VERSION = 4
    INVALID = 5           # a well-formed request the rules refuse (bad key, value too large)
    NO_NODE = 10
    NODE_EXISTS = 11
    BAD_VERSION = 12
    NOT_EMPTY = 13
    NOT_A_MAP = 14
    NOT_FOUND = 15
    BAD_STATE = 16
    MULTI_FAILED = 17
    UNAVAILABLE = 20      # the journal refuses writes (disk full, I/O error)
    TRUNCATED = 22        # FETCH: the records asked for were dropped after a checkpoint
    NO_SNAPSHOT = 23
    SHUTTING_DOWN = 24
    FENCED = 25           # this master saw a higher epoch: another master replaced it
    BEHIND = 26           # STANDBY_READ: the replica did not reach min_txid in time
    UNAUTHORIZED = 27     # the connection's principal may not make this request
    COMPACTED = 28        # WATCH: the events asked for are not held; re-read and resume
    INTERNAL = 30


_ERROR_CLASSES: dict[type, ErrorCode] = {
    errors.Compacted: ErrorCode.COMPACTED,
    errors.NoNode: ErrorCode.NO_NODE,
    errors.NodeExists: ErrorCode.NODE_EXISTS,
    errors.BadVersion: ErrorCode.BAD_VERSION,
    errors.NotEmpty: ErrorCode.NOT_EMPTY,
    errors.NotAMap: ErrorCode.NOT_A_MAP,
    errors.NotFound: ErrorCode.NOT_FOUND,
    errors.BadState: ErrorCode.BAD_STATE,
    errors.MultiFailed: ErrorCode.MULTI_FAILED,
    errors.InvalidRecord: ErrorCode.INVALID,
    errors.JournalUnavailable: ErrorCode.UNAVAILABLE,
    errors.Fenced: ErrorCode.FENCED,
    errors.StandbyBehind: ErrorCode.BEHIND,
    errors.Unauthorized: ErrorCode.UNAUTHORIZED,
}


def error_code_for(exc: BaseException) -> ErrorCode:
    for cls in type(exc).__mro__:
        code = _ERROR_CLASSES.get(cls)
        if code is not None:
            return code
    return ErrorCode.INTERNAL


class ProtocolError(errors.MwclusterError):
    """An incoming message could not be decoded; `code` says why, `request_id` is set when the
    message got far enough to name its request (so a reply can still be sent)."""

    code = "protocol"

    def __init__(self, error: ErrorCode, message: str, request_id: int | None = None):
        super().__init__(message)
        self.error = error
        self.request_id = request_id


class Request(NamedTuple):
    client_id: bytes
    request_id: int
    op: int
    durability: int
    args: list
    epoch_seen: int = 0      # the sender's highest epoch seen (0: not sent)


class Reply(NamedTuple):
    request_id: int
    epoch: int
    status: int
    txid: int
    result: Any


# --- encoding -------------------------------------------------------------------------

_packer = msgpack.Packer(use_bin_type=True)
_pack = _packer.pack


def encode_request(client_id: bytes, request_id: int, op: int, args: list | tuple,
                   durability: int = 0, epoch_seen: int = 0) -> bytes:
    if epoch_seen:
        return _pack((PROTOCOL_VERSION, client_id, request_id, op, durability, args,
                      epoch_seen))
    return _pack((PROTOCOL_VERSION, client_id, request_id, op, durability, args))


def encode_reply(request_id: int, epoch: int, status: int, txid: int, result: Any) -> bytes:
    return _pack((PROTOCOL_VERSION, request_id, epoch, status, txid, result))


def encode_error(request_id: int, epoch: int, error: ErrorCode, message: str) -> bytes:
    return _pack((PROTOCOL_VERSION, request_id, epoch, int(error), 0, (error.name.lower(),
                                                                         message)))


def error_result(error: ErrorCode, message: str) -> tuple[str, str]:
    """The `result` of an error reply or sub-reply."""
    return error.name.lower(), message


def sub_request(request_id: int, op: int, args: list | tuple, durability: int = 0) -> tuple:
    """One element of a BATCH request's args (encode the batch with encode_request)."""
    return request_id, op, durability, args


def encode_log_batch(epoch: int, records: list[tuple[int, int, bytes]],
                     digest: int | None = None) -> bytes:
    """A log batch; `digest` is the master's state digest at the batch's last txid (nil
    when the master does not know it)."""
    return _pack((PROTOCOL_VERSION, epoch, records[0][0], records[-1][0], records, digest))


def encode_heartbeat(epoch: int, durable_txid: int, digest: int | None, now_ms: int) -> bytes:
    return _pack((PROTOCOL_VERSION, epoch, durable_txid, digest, now_ms))


# --- decoding untrusted input -----------------------------------------------------------


def _unpack(frame: bytes, what: str) -> Any:
    n = len(frame)          # no part of a frame is longer than the frame
    try:
        return msgpack.unpackb(frame, raw=False, strict_map_key=False, use_list=True,
                               max_bin_len=n, max_str_len=n, max_array_len=n, max_map_len=n)
    except Exception as exc:  # msgpack raises several unrelated types for bad input
        raise ProtocolError(ErrorCode.BAD_REQUEST,
                            f"{what} is not a single well-formed msgpack object: {exc}") from None


def decode_request(frame: bytes, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> Request:
    """Validate one request frame into a Request, or raise ProtocolError saying what is
    wrong (with the request id when it could be read). The args of a BATCH are checked to be
    an array here; each sub-request is checked by decode_sub_request."""
    if len(frame) > max_bytes:
        raise ProtocolError(ErrorCode.TOO_LARGE,
                            f"request is {len(frame)} bytes; the limit is {max_bytes}")
    raw = _unpack(frame, "request")
    epoch_seen = 0
    if type(raw) is list and len(raw) == 7:
        epoch_seen = raw.pop()
        if type(epoch_seen) is not int or not 0 <= epoch_seen < _U64:
            rid = raw[2] if type(raw[2]) is int and raw[2] >= 0 else None
            raise ProtocolError(ErrorCode.BAD_REQUEST, "epoch_seen (the 7th element) must be "
                                "an unsigned integer", rid)
    if type(raw) is not list or len(raw) != 6:
        raise ProtocolError(ErrorCode.BAD_REQUEST,
                            "a request is an array [version, client_id, request_id, op, "
                            "durability, args(, epoch_seen)]")
    version, client_id, request_id, op, durability, args = raw
    # the common well-formed case in one expression; anything else gets the checks that say
    # what is wrong
    if version == PROTOCOL_VERSION and type(version) is int and type(client_id) is bytes \
            and 1 <= len(client_id) <= 64 and type(request_id) is int \
            and 0 <= request_id < _U64 and type(op) is int and op in _KNOWN_OPS \
            and type(durability) is int and durability in _DURABILITY_OK \
            and type(args) is list:
        return _new_request(Request, (client_id, request_id, op, durability, args, epoch_seen))
    rid = request_id if type(request_id) is int and request_id >= 0 else None
    if version != PROTOCOL_VERSION or type(version) is not int:
        raise ProtocolError(ErrorCode.UNSUPPORTED_VERSION,
                            f"protocol version {version!r} is not supported (this master "
                            f"speaks {PROTOCOL_VERSION})", rid)
    if type(client_id) is not bytes or not 1 <= len(client_id) <= 64:
        raise ProtocolError(ErrorCode.BAD_REQUEST, "client_id must be 1..64 bytes (bin)", rid)
    _check_fields(rid, request_id, op, durability, args, "")
    return Request(client_id, request_id, op, durability, args, epoch_seen)


def decode_sub_request(client_id: bytes, raw: Any) -> Request:
    """Validate one element of a BATCH's (already decoded) args into a Request of the
    batch's client, or raise ProtocolError (with the sub-request's id when it is readable)."""
    if type(raw) is not list or len(raw) != 4:
        raise ProtocolError(ErrorCode.BAD_REQUEST,
                            "a sub-request is an array [request_id, op, durability, args]")
    request_id, op, durability, args = raw
    rid = request_id if type(request_id) is int and request_id >= 0 else None
    if op == Op.BATCH and type(op) is int:
        raise ProtocolError(ErrorCode.BAD_REQUEST, "a BATCH cannot contain a BATCH", rid)
    _check_fields(rid, request_id, op, durability, args, "sub-request ")
    return Request(client_id, request_id, op, durability, args)


def decode_batch(client_id: bytes, subs: list) -> list[Request | ProtocolError]:
    """Validate every sub-request of a BATCH (its args, already decoded): a Request of the
    batch's client for each good one, the ProtocolError for each bad one, in order. The same
    rules as decode_sub_request, checked inline for the common well-formed case."""
    out: list[Request | ProtocolError] = []
    append = append_ok = out.append
    new = _new_request
    ok_ops = _SUB_OPS
    for raw in subs:
        if type(raw) is list and len(raw) == 4:
            rid, op, dur, args = raw
            if type(rid) is int and 0 <= rid < _U64 and type(op) is int and op in ok_ops \
                    and type(dur) is int and dur in _DURABILITY_OK \
                    and type(args) is list:
                append_ok(new(Request, (client_id, rid, op, dur, args, 0)))
                continue
        try:
            decode_sub_request(client_id, raw)
        except ProtocolError as exc:
            append(exc)
        else:  # pragma: no cover - the inline checks above accept every valid sub-request
            raise AssertionError(f"sub-request {raw!r} passed only the slow checks")
    return out


_new_request = tuple.__new__
_U64 = 1 << 64
_DURABILITY_OK = frozenset(int(d) | flag for d in Durability for flag in (0, FAST))
_DURABILITY_CODES = ", ".join(f"{int(d)} ({d.label})" for d in Durability) + \
    f", each plus {FAST} for consistency \"fast\""


def _check_fields(rid: int | None, request_id: Any, op: Any, durability: Any, args: Any,
                  what: str) -> None:
    if rid is None or request_id >= 1 << 64:
        raise ProtocolError(ErrorCode.BAD_REQUEST,
                            f"{what}request_id must be an unsigned 64-bit integer")
    if type(op) is not int:
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"{what}op must be an integer", rid)
    if type(durability) is not int or durability not in _DURABILITY_OK:
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"{what}durability must be one of "
                            f"{_DURABILITY_CODES}", rid)
    if type(args) is not list:
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"{what}args must be an array", rid)
    if op not in _KNOWN_OPS:
        raise ProtocolError(ErrorCode.UNKNOWN_OP, f"unknown operation {op}", rid)


_KNOWN_OPS = frozenset(int(op) for op in Op)
_SUB_OPS = _KNOWN_OPS - {int(Op.BATCH)}


def decode_reply(frame: bytes) -> Reply:
    raw = _unpack(frame, "reply")
    if type(raw) is not list or len(raw) != 6 or raw[0] != PROTOCOL_VERSION:
        raise ProtocolError(ErrorCode.BAD_REQUEST, "malformed reply from the master")
    return Reply(*raw[1:])


def decode_pub(topic: bytes, body: bytes) -> tuple[bytes, list]:
    """Decode one log-stream message into (topic, fields after the version): for a log
    batch [epoch, first, last, records, digest] (digest nil when the message has none, as
    from an older master), for a heartbeat [epoch, durable, digest, now_ms]. Fields after
    those are ignored (later additions)."""
    raw = _unpack(body, "stream message")
    if type(raw) is not list or not raw or raw[0] != PROTOCOL_VERSION:
        raise ProtocolError(ErrorCode.BAD_REQUEST, "malformed stream message")
    if topic == TOPIC_LOG and len(raw) >= 5:
        return topic, [*raw[1:5], raw[5] if len(raw) > 5 else None]
    if topic == TOPIC_HEARTBEAT and len(raw) >= 5:
        return topic, raw[1:5]
    raise ProtocolError(ErrorCode.BAD_REQUEST, f"unknown stream topic {topic!r}")


def check_records(records) -> None:
    """Raise ValueError unless `records` is a list of [txid: int, epoch: int, payload: bin]
    (from the log stream or a FETCH reply: input from the network)."""
    if type(records) is not list:
        raise ValueError("records must be an array")
    for rec in records:
        if (type(rec) is not list or len(rec) != 3 or type(rec[0]) is not int
                or type(rec[1]) is not int or type(rec[2]) is not bytes):
            raise ValueError(f"a record must be [txid, epoch, payload: bin], not {rec!r:.80}")


def args_check(req: Request, kinds: tuple[type | tuple, ...], names: tuple[str, ...],
               optional: tuple[tuple, tuple[str, ...]] = ((), ())) -> list:
    """Check a request's args against types; return them, None for each `optional` arg left
    out. Raises ProtocolError. A bool is accepted only where bool is named (msgpack's bool is
    not an integer)."""
    args = req.args
    more_kinds, more_names = optional
    if not len(kinds) <= len(args) <= len(kinds) + len(more_kinds):
        also = f" and optionally {', '.join(more_names)}" if more_names else ""
        raise ProtocolError(ErrorCode.BAD_REQUEST,
                            f"{Op(req.op).name} takes {len(kinds)} args ({', '.join(names)})"
                            f"{also}, got {len(args)}", req.request_id)
    for value, kind, name in zip(args, kinds + more_kinds, names + more_names):
        if not isinstance(value, kind) or (type(value) is bool and kind is not bool
                                           and kind is not _ANY):
            raise ProtocolError(ErrorCode.BAD_REQUEST,
                                f"{Op(req.op).name}: {name} has the wrong type "
                                f"({type(value).__name__})", req.request_id)
    missing = len(kinds) + len(more_kinds) - len(args)
    return args if not missing else [*args, *[None] * missing]   # no copy on the usual path


def check_args(req: Request) -> list:
    """Check the args of a job or worker op against ARG_SPECS; return them."""
    kinds, names = ARG_SPECS[req.op]
    return args_check(req, kinds, names, OPTIONAL_ARGS.get(req.op, ((), ())))
