"""Log records: the only way the metadata state changes, and their encoding in the journal.

A record is one log entry; its position in the log is its txid (assigned by the journal owner,
not stored in the record). Every input that varies between runs (wall-clock time, which worker
gets a task, job ids) is decided before the record is written and carried inside it, so that
applying the same records in the same order gives the same state everywhere.

Encoding (the journal payload of one record): one msgpack array whose first element is the
operation code and whose other elements are the record's fields, in the order declared below:

    [1, key, value, expected_version]           Put      value: msgpack-encoded bytes (bin)
    [2, key, patch, expected_version]           Merge    patch: msgpack-encoded map (bin)
    [3, key, recursive, expected_version]       Delete
    [4, key, expected_version]                  Check    (inside a Multi only)
    [5, [[code, ...], ...]]                     Multi    Put/Merge/Delete/Check/Attach, all or none
    [6, key, lease_id]                          Attach   the key to a lease (a leased put)
    [9, note]                                   Noop
    [10, job_id, name, handler, priority, max_attempts, tasks, now_ms, options]    JobSubmit
         tasks: [[input, params], ...]  (input: any value; params: map)
         options: map of JOB_OPTIONS, written only when not empty (a job without options
         is encoded as before options existed, so older nodes read it); absent: {}
    [11, job_id, reason, now_ms]                JobCancel
    [12, job_id]                                JobDelete
    [20, worker_id, address, slots, now_ms]     WorkerRegister
    [21, worker_id, reason, now_ms]             WorkerLost
    [22, worker_id, now_ms]                     WorkerLeave
    [30, job_id, index, worker_id, attempt, now_ms]                   TaskAssign
    [31, job_id, index, attempt, progress, counters, now_ms]          TaskProgress
    [32, job_id, index, attempt, ok, outcome, now_ms]                 TaskFinish
    [40, ttl_ms]                                LeaseGrant   the lease's id is the record's txid
    [41, lease_id, reason]                      LeaseRevoke  deletes the lease's keys

`expected_version` is nil (unconditional) or an integer: 0 means "the key must not exist",
n > 0 means "the key must be at version n". New codes may be added; a code is never reused.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any, NamedTuple

import msgpack

from mwcluster.core.keys import check_key
from mwcluster.core.limits import Limits
from mwcluster.core.values import check_encoded
from mwcluster.errors import InvalidRecord


class RecordKind(IntEnum):
    """The code of each record type in the journal (the first element of its array). The
    wire's mutation operations (wire.protocol.Op.PUT...) reuse these codes: a mutation
    request's args are its record's fields."""

    PUT = 1
    MERGE = 2
    DELETE = 3
    CHECK = 4
    MULTI = 5
    ATTACH = 6
    NOOP = 9
    JOB_SUBMIT = 10
    JOB_CANCEL = 11
    JOB_DELETE = 12
    WORKER_REGISTER = 20
    WORKER_LOST = 21
    WORKER_LEAVE = 22
    TASK_ASSIGN = 30
    TASK_PROGRESS = 31
    TASK_FINISH = 32
    LEASE_GRANT = 40
    LEASE_REVOKE = 41


class Put(NamedTuple):
    key: str
    value: bytes
    expected_version: int | None = None
    CODE = RecordKind.PUT
    SPEC = ("str", "bytes", "opt_int")


class Merge(NamedTuple):
    key: str
    patch: bytes
    expected_version: int | None = None
    CODE = RecordKind.MERGE
    SPEC = ("str", "bytes", "opt_int")


class Delete(NamedTuple):
    key: str
    recursive: bool = False
    expected_version: int | None = None
    CODE = RecordKind.DELETE
    SPEC = ("str", "bool", "opt_int")


class Check(NamedTuple):
    key: str
    expected_version: int
    CODE = RecordKind.CHECK
    SPEC = ("str", "int")


class Multi(NamedTuple):
    ops: tuple
    CODE = RecordKind.MULTI
    SPEC = ("list",)


class Attach(NamedTuple):
    key: str
    lease_id: int
    CODE = RecordKind.ATTACH
    SPEC = ("str", "int")


class Noop(NamedTuple):
    note: str = ""
    CODE = RecordKind.NOOP
    SPEC = ("str",)


class JobSubmit(NamedTuple):
    job_id: str
    name: str
    handler: str
    priority: int
    max_attempts: int
    tasks: list
    now_ms: int
    options: dict = {}
    CODE = RecordKind.JOB_SUBMIT
    SPEC = ("str", "str", "str", "int", "int", "list", "int", "map")


# What a job's options may say, each checked at admission (check_job_options): the workers
# read them with each assignment of the job's tasks.
JOB_OPTIONS = {
    "timeout_s": "seconds an attempt may run before the worker stops it and fails it as timed "
                 "out (a number > 0, at most 30 days)",
    "executor": "where a process or thread worker runs the job's handler: process or thread",
}
MAX_TIMEOUT_S = 30 * 24 * 3600


class JobCancel(NamedTuple):
    job_id: str
    reason: str
    now_ms: int
    CODE = RecordKind.JOB_CANCEL
    SPEC = ("str", "str", "int")


class JobDelete(NamedTuple):
    job_id: str
    CODE = RecordKind.JOB_DELETE
    SPEC = ("str",)


class WorkerRegister(NamedTuple):
    worker_id: str
    address: str
    slots: int
    now_ms: int
    CODE = RecordKind.WORKER_REGISTER
    SPEC = ("str", "str", "int", "int")


class WorkerLost(NamedTuple):
    worker_id: str
    reason: str
    now_ms: int
    CODE = RecordKind.WORKER_LOST
    SPEC = ("str", "str", "int")


class WorkerLeave(NamedTuple):
    worker_id: str
    now_ms: int
    CODE = RecordKind.WORKER_LEAVE
    SPEC = ("str", "int")


class TaskAssign(NamedTuple):
    job_id: str
    index: int
    worker_id: str
    attempt: int
    now_ms: int
    CODE = RecordKind.TASK_ASSIGN
    SPEC = ("str", "int", "str", "int", "int")


class TaskProgress(NamedTuple):
    job_id: str
    index: int
    attempt: int
    progress: float
    counters: dict
    now_ms: int
    CODE = RecordKind.TASK_PROGRESS
    SPEC = ("str", "int", "int", "num", "map", "int")


class TaskFinish(NamedTuple):
    job_id: str
    index: int
    attempt: int
    ok: bool
    outcome: Any
    now_ms: int
    CODE = RecordKind.TASK_FINISH
    SPEC = ("str", "int", "int", "bool", "any", "int")


class LeaseGrant(NamedTuple):
    ttl_ms: int
    CODE = RecordKind.LEASE_GRANT
    SPEC = ("int",)


class LeaseRevoke(NamedTuple):
    lease_id: int
    reason: str
    CODE = RecordKind.LEASE_REVOKE
    SPEC = ("int", "str")


# A lease's TTL: long enough for a keepalive to cross a busy network, short enough to notice
# a dead holder within a day at most.
MIN_TTL_MS = 1_000
MAX_TTL_MS = 24 * 3600 * 1000
LEASE_REASONS = ("revoked", "expired")

Record = (Put | Merge | Delete | Check | Attach | Multi | Noop | JobSubmit | JobCancel
          | JobDelete | WorkerRegister | WorkerLost | WorkerLeave | TaskAssign | TaskProgress
          | TaskFinish | LeaseGrant | LeaseRevoke)

RECORD_TYPES: dict[int, type] = {
    cls.CODE: cls for cls in (Put, Merge, Delete, Check, Attach, Multi, Noop, JobSubmit,
                              JobCancel, JobDelete, WorkerRegister, WorkerLost, WorkerLeave,
                              TaskAssign, TaskProgress, TaskFinish, LeaseGrant, LeaseRevoke)
}
MULTI_MEMBERS = (Put, Merge, Delete, Check, Attach)


_KIND_TYPES: dict[str, frozenset | None] = {
    "str": frozenset({str}),
    "bytes": frozenset({bytes}),
    "int": frozenset({int}),
    "opt_int": frozenset({int, type(None)}),
    "bool": frozenset({bool}),
    "num": frozenset({int, float}),
    "map": frozenset({dict}),
    "list": frozenset({list, tuple}),
    "any": None,
}

# Per record type, the exact types each field may have (None: any). Exact type checks
# (`type(v) in ...`) keep bool out of int fields and run at a few tens of ns per field.
_FIELD_TYPES: dict[type, tuple] = {
    cls: tuple(_KIND_TYPES[kind] for kind in cls.SPEC) for cls in RECORD_TYPES.values()}


def _first_bad_field(cls: type, fields) -> str | None:
    for allowed, value, name, kind in zip(_FIELD_TYPES[cls], fields, cls._fields, cls.SPEC):
        if allowed is not None and type(value) not in allowed:
            return f"{cls.__name__}.{name} must be {kind}, not {type(value).__name__}"
    return None


# --- encoding -----------------------------------------------------------------------------

_pack = msgpack.Packer(use_bin_type=True).pack
_PUT = RecordKind.PUT.value


def to_wire(rec: Record) -> list:
    """The record as the msgpack-able array documented above."""
    if type(rec) is Multi:
        return [RecordKind.MULTI.value, [to_wire(op) for op in rec.ops]]
    if type(rec) is JobSubmit and not rec.options:
        return [rec.CODE.value, *rec[:-1]]      # as before options: older nodes read it
    return [rec.CODE.value, *rec]


Origin = tuple[bytes, int]   # (client_id, request_id) of the request that made a record


def encode_record(rec: Record, origin: Origin | None = None) -> bytes:
    """The journal payload of a record; with `origin`, the request's (client_id, request_id)
    follow the record's fields as two more array elements (so retries can be recognised
    after a restart)."""
    if type(rec) is Multi or (type(rec) is JobSubmit and not rec.options):
        wire = to_wire(rec)
        return _pack(wire + list(origin) if origin is not None else wire)
    # rec.CODE is an IntEnum, which msgpack packs as the plain int: the same bytes as
    # rec.CODE.value, without the cost of the enum's value descriptor on every record.
    if origin is not None:
        return _pack((rec.CODE, *rec, *origin))
    return _pack((rec.CODE, *rec))


def decode_payload(payload: bytes | memoryview) -> tuple[Record, Origin | None]:
    """Decode and type-check one journal payload into (record, origin or None)."""
    try:
        raw = msgpack.unpackb(payload, raw=False, strict_map_key=False, use_list=True)
    except Exception as exc:  # msgpack raises several unrelated types for bad input
        raise InvalidRecord(f"record is not well-formed msgpack: {exc}") from None
    if type(raw) is list and raw and raw[0] == 1 and type(raw[0]) is int:   # Put, fast
        n = len(raw)
        if n == 4 or n == 6:
            key, value, expected = raw[1], raw[2], raw[3]
            if type(key) is str and type(value) is bytes and (
                    expected is None or type(expected) is int):
                if n == 4:
                    return Put(key, value, expected), None
                if type(raw[4]) is bytes and type(raw[5]) is int:
                    return Put(key, value, expected), (raw[4], raw[5])
    origin = None
    if type(raw) is list and len(raw) >= 3:
        cls = RECORD_TYPES.get(raw[0]) if type(raw[0]) is int else None
        if cls is JobSubmit and len(raw) in (8, 10):
            raw.insert(8, {})         # written before jobs had options (with or without origin)
        if cls is not None and len(raw) == len(cls.SPEC) + 3:
            client_id, request_id = raw[-2], raw[-1]
            if type(client_id) is not bytes or type(request_id) is not int:
                raise InvalidRecord("a record's origin must be [client_id: bin, request_id: int]")
            origin = (client_id, request_id)
            del raw[-2:]
    return from_wire(raw), origin


def decode_record(payload: bytes | memoryview) -> Record:
    """Decode and type-check one record; raise InvalidRecord saying what is wrong."""
    return decode_payload(payload)[0]


def from_wire(raw: object, *, in_multi: bool = False) -> Record:
    if type(raw) is not list or not raw:
        raise InvalidRecord("a record must be a non-empty array [code, fields...]")
    code = raw[0]
    cls = RECORD_TYPES.get(code) if type(code) is int else None
    if cls is None:
        raise InvalidRecord(f"unknown record code {code!r}")
    if in_multi and cls not in MULTI_MEMBERS:
        raise InvalidRecord(f"{cls.__name__} is not allowed inside a multi "
                            "(only Put, Merge, Delete, Check and Attach are)")
    if cls is Put and len(raw) == 4:   # the most frequent record, checked without a loop
        key, value, expected = raw[1], raw[2], raw[3]
        if type(key) is str and type(value) is bytes and (
                expected is None or type(expected) is int):
            return Put(key, value, expected)
    fields = raw[1:]
    spec = cls.SPEC
    if len(fields) != len(spec):
        raise InvalidRecord(f"{cls.__name__} takes {len(spec)} fields "
                            f"({', '.join(cls._fields)}), got {len(fields)}")
    problem = _first_bad_field(cls, fields)
    if problem is not None:
        raise InvalidRecord(problem)
    if cls is Multi:
        return Multi(tuple(from_wire(op, in_multi=True) for op in fields[0]))
    return cls(*fields)


# --- admission: checks that apply to new records, not to replay ---------------------------


def check_admission(rec: Record, limits: Limits, origin: Origin | None = None) -> bytes:
    """Check a new record against the limits and field rules; raise InvalidRecord.

    Returns the record's encoding: a record that cannot be encoded (an integer outside the
    64-bit range, a string with a lone surrogate, an object msgpack cannot carry) is refused
    here, before it is applied, rather than failing in apply or when it is logged.
    """
    if type(rec) is Put:     # the most frequent record
        key, value, expected = rec
        if type(key) is not str:
            raise InvalidRecord(f"Put.key must be str, not {type(key).__name__}")
        if type(value) is not bytes:
            raise InvalidRecord(f"Put.value must be bytes, not {type(value).__name__}")
        if expected is not None and type(expected) is not int:
            raise InvalidRecord(f"Put.expected_version must be opt_int, not "
                                f"{type(expected).__name__}")
        return admit_put(key, value, expected, limits, origin)
    _check_fields(rec, limits)
    try:
        payload = encode_record(rec, origin)
    except (TypeError, ValueError, OverflowError) as exc:
        raise InvalidRecord(f"{type(rec).__name__} cannot be encoded: {exc}") from None
    return _within_limit(payload, limits)


def _within_limit(payload: bytes, limits: Limits) -> bytes:
    if len(payload) > limits.max_record_bytes:
        raise InvalidRecord(f"record is {len(payload)} bytes; the limit is "
                            f"{limits.max_record_bytes}")
    return payload


def admit_put(key: str, value: bytes, expected: int | None, limits: Limits,
              origin: Origin | None = None) -> bytes:
    """check_admission of Put(key, value, expected) whose field types are known to be right
    (str, bytes, None or int: from_wire's own test): the limits and rules, and its encoding,
    the same bytes as encode_record. The master's put path calls it without building the
    Put (Engine.submit_put)."""
    check_key(key, limits.max_key_chars)
    check_encoded(value, limits.max_value_bytes)
    _check_expected(expected)
    try:
        payload = (_pack((_PUT, key, value, expected, *origin)) if origin is not None
                   else _pack((_PUT, key, value, expected)))
    except (TypeError, ValueError, OverflowError) as exc:
        raise InvalidRecord(f"Put cannot be encoded: {exc}") from None
    return _within_limit(payload, limits)


def _check_fields(rec: Record, limits: Limits) -> None:
    cls = type(rec)
    if cls not in _FIELD_TYPES:
        raise InvalidRecord(f"not a record: {cls.__name__}")
    problem = _first_bad_field(cls, rec)
    if problem is not None:
        raise InvalidRecord(problem)
    if cls is Put or cls is Merge:
        check_key(rec.key, limits.max_key_chars)
        check_encoded(rec[1], limits.max_value_bytes)
        _check_expected(rec.expected_version)
    elif cls is Delete:
        check_key(rec.key, limits.max_key_chars)
        _check_expected(rec.expected_version)
    elif cls is Check:
        check_key(rec.key, limits.max_key_chars)
        _check_expected(rec.expected_version)
    elif cls is Attach:
        check_key(rec.key, limits.max_key_chars)
    elif cls is LeaseGrant:
        if not MIN_TTL_MS <= rec.ttl_ms <= MAX_TTL_MS:
            raise InvalidRecord(f"a lease's TTL is {MIN_TTL_MS // 1000} s to "
                                f"{MAX_TTL_MS // 3_600_000} h, not {rec.ttl_ms} ms")
    elif cls is LeaseRevoke:
        if rec.reason not in LEASE_REASONS:
            raise InvalidRecord(f"a lease ends {' or '.join(LEASE_REASONS)}, not "
                                f"{rec.reason[:40]!r}")
    elif cls is Multi:
        if not rec.ops:
            raise InvalidRecord("a multi needs at least one operation")
        if len(rec.ops) > limits.max_multi_ops:
            raise InvalidRecord(f"a multi holds {len(rec.ops)} operations; the limit is "
                                f"{limits.max_multi_ops}")
        for op in rec.ops:
            if type(op) not in MULTI_MEMBERS:
                raise InvalidRecord(f"{type(op).__name__} is not allowed inside a multi")
            _check_fields(op, limits)
    elif cls is JobSubmit:
        _check_name("job id", rec.job_id, limits)
        _check_name("job name", rec.name, limits)
        _check_name("handler", rec.handler, limits)
        if rec.max_attempts < 1:
            raise InvalidRecord("max_attempts must be at least 1")
        if not rec.tasks:
            raise InvalidRecord("a job needs at least one task")
        if len(rec.tasks) > limits.max_tasks_per_job:
            raise InvalidRecord(f"a job holds {len(rec.tasks)} tasks; the limit is "
                                f"{limits.max_tasks_per_job}")
        for i, task in enumerate(rec.tasks):
            if (type(task) not in (list, tuple) or len(task) != 2
                    or type(task[1]) is not dict):
                raise InvalidRecord(f"task {i} must be [input, params] with params a map")
        check_job_options(rec.options)
    elif cls in (WorkerRegister, WorkerLost, WorkerLeave):
        _check_name("worker id", rec.worker_id, limits)
        if cls is WorkerRegister and rec.slots < 1:
            raise InvalidRecord("a worker needs at least one slot")
    elif cls is TaskProgress:
        if not 0.0 <= rec.progress <= 1.0:
            raise InvalidRecord(f"progress must be within 0..1, not {rec.progress}")
        for name, value in rec.counters.items():
            if type(name) is not str or type(value) not in (int, float):
                raise InvalidRecord("counters map names (strings) to numbers")


def check_job_options(options: dict) -> None:
    """InvalidRecord naming the first option that is unknown or has a wrong value."""
    for name, value in options.items():
        if name not in JOB_OPTIONS:
            raise InvalidRecord(f"unknown job option {name!r}; the options are "
                                f"{', '.join(sorted(JOB_OPTIONS))}")
        if name == "timeout_s" and (type(value) not in (int, float)
                                    or not 0 < value <= MAX_TIMEOUT_S):
            raise InvalidRecord(f"job option timeout_s={value!r}: {JOB_OPTIONS[name]}")
        if name == "executor" and value not in ("process", "thread"):
            raise InvalidRecord(f"job option executor={value!r}: {JOB_OPTIONS[name]}")


def _check_expected(expected: int | None) -> None:
    if expected is not None and expected < 0:
        raise InvalidRecord(f"expected_version must be nil, 0 or positive, not {expected}")


def _check_name(what: str, value: str, limits: Limits) -> None:
    if not value or len(value) > limits.max_name_chars or not value.isprintable():
        raise InvalidRecord(f"{what} {value[:80]!r} must be 1..{limits.max_name_chars} "
                            "printable characters")
