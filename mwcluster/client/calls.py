"""The client's calls, without I/O: what each method sends, how its reply becomes a result,
and how an error reply becomes a typed exception.

`Calls` defines every operation once (arguments as docs/protocol.md lists them, and the
conversion of the reply); `Client` runs a call and waits for its result, `Pipeline` runs it
and returns a future. Both only implement `_run(op, args, durability, convert)`.

Multi operations are built with `op_put`, `op_merge`, `op_delete` and `op_check`: each returns
the record array `[code, fields...]` that MULTI carries.
"""

from __future__ import annotations

import re
from typing import Any, Callable, NamedTuple

from mwcluster import errors
from mwcluster.core.namespace import Stat
from mwcluster.core.records import RecordKind
from mwcluster.core.values import decode, encode
from mwcluster.core.durability import Durability, wire_code
from mwcluster.wire.protocol import ErrorCode, Op, ProtocolError, Reply

__all__ = ["Assignment", "Calls", "Entry", "Lease", "Range", "Stat", "error_from_reply",
           "op_attach", "op_check", "op_delete", "op_merge", "op_put"]

# The wire's error codes and the exceptions of the same meaning. The state machine's
# refusals keep their classes, so `except NoNode` works the same against an Engine and a
# master; wire.protocol.error_code_for is the inverse of this table (a test checks it).
ERROR_CLASSES: dict[int, type[errors.MwclusterError]] = {
    ErrorCode.BAD_REQUEST: errors.BadRequest,
    ErrorCode.UNKNOWN_OP: errors.UnknownOp,
    ErrorCode.TOO_LARGE: errors.MessageTooLarge,
    ErrorCode.UNSUPPORTED_VERSION: errors.UnsupportedVersion,
    ErrorCode.INVALID: errors.InvalidRecord,
    ErrorCode.NO_NODE: errors.NoNode,
    ErrorCode.NODE_EXISTS: errors.NodeExists,
    ErrorCode.BAD_VERSION: errors.BadVersion,
    ErrorCode.NOT_EMPTY: errors.NotEmpty,
    ErrorCode.NOT_A_MAP: errors.NotAMap,
    ErrorCode.NOT_FOUND: errors.NotFound,
    ErrorCode.BAD_STATE: errors.BadState,
    ErrorCode.MULTI_FAILED: errors.RemoteMultiFailed,
    ErrorCode.UNAVAILABLE: errors.JournalUnavailable,
    ErrorCode.TRUNCATED: errors.Truncated,
    ErrorCode.COMPACTED: errors.Compacted,
    ErrorCode.NO_SNAPSHOT: errors.NoSnapshot,
    ErrorCode.SHUTTING_DOWN: errors.ShuttingDown,
    ErrorCode.FENCED: errors.Fenced,
    ErrorCode.BEHIND: errors.StandbyBehind,
    ErrorCode.UNAUTHORIZED: errors.Unauthorized,
    ErrorCode.INTERNAL: errors.InternalServerError,
}

_MULTI_INDEX = re.compile(r"operation (\d+)")


def error_from_reply(reply: Reply) -> errors.MwclusterError:
    """The exception for an error reply, carrying the master's message; `error_code` and
    `epoch` are set on it. A code this client does not know becomes a ServerError."""
    status = reply.status
    result = reply.result
    if type(result) in (list, tuple) and len(result) >= 2 and isinstance(result[1], str):
        name, message = str(result[0]), result[1]
    else:
        name, message = f"error {status}", repr(result)
    cls = ERROR_CLASSES.get(status)
    if cls is None:
        exc: errors.MwclusterError = errors.ServerError(f"{name}: {message}")
    elif cls is errors.Compacted:     # [name, message, oldest_txid, current_txid]
        extra = [v if type(v) is int else None for v in result[2:4]] if len(result) == 4 \
            else [None, None]
        exc = errors.Compacted(message, *extra)
    elif cls is errors.RemoteMultiFailed:
        found = _MULTI_INDEX.search(message)
        exc = errors.RemoteMultiFailed(message, int(found.group(1)) if found else None)
    else:
        exc = cls(message)
    exc.error_code = status
    exc.epoch = reply.epoch
    return exc


# --- multi operation builders -------------------------------------------------------------


def op_put(key: str, value: Any, expected_version: int | None = None) -> list:
    return [RecordKind.PUT.value, key, encode(value), expected_version]


def op_merge(key: str, patch: dict, expected_version: int | None = None) -> list:
    return [RecordKind.MERGE.value, key, encode(patch), expected_version]


def op_delete(key: str, recursive: bool = False, expected_version: int | None = None) -> list:
    return [RecordKind.DELETE.value, key, bool(recursive), expected_version]


def op_check(key: str, expected_version: int) -> list:
    """Inside a multi: fail unless `key` is at `expected_version` (0: must not exist)."""
    return [RecordKind.CHECK.value, key, expected_version]


def op_attach(key: str, lease: Lease | int) -> list:
    """Inside a multi: attach the existing `key` to a lease (deleted when the lease ends)."""
    return [RecordKind.ATTACH.value, key, int(getattr(lease, "id", lease))]


class Lease(NamedTuple):
    """A lease granted by the master: its id (the txid of its grant) and its TTL."""
    id: int
    ttl_s: float

    def __int__(self) -> int:
        return self.id


class Entry(NamedTuple):
    """One key of a RANGE read: its value and Stat."""
    key: str
    value: Any
    stat: Stat


class Range(NamedTuple):
    """A RANGE read: the entries, in key order, all as of `txid` (watch from txid + 1)."""
    txid: int
    entries: list


# --- reply conversions ----------------------------------------------------------------------


def _txid(reply: Reply) -> int:
    return reply.txid


def _multi(reply: Reply) -> tuple[int, list]:
    return reply.txid, reply.result


def _value(reply: Reply) -> Any:
    found = reply.result
    return None if found is None else decode(found[0])


def _value_and_stat(reply: Reply) -> tuple[Any, Stat] | None:
    found = reply.result
    if found is None:
        return None
    value, version, create_txid, modify_txid = found
    return decode(value), Stat(version, create_txid, modify_txid, len(value))


def _stat(reply: Reply) -> Stat | None:
    found = reply.result
    return None if found is None else Stat(*found)


def _result(reply: Reply) -> Any:
    return reply.result


def _none(reply: Reply) -> None:
    return None


class Assignment(NamedTuple):
    """One task given to a worker by TASK_REQUEST."""
    job_id: str
    index: int
    attempt: int
    handler: str
    input: Any
    params: dict
    options: dict = {}   # the job's options (timeout_s, executor); {} from a master before them


def _assignments(reply: Reply) -> list[Assignment]:
    return [Assignment(*item) for item in reply.result]


def _epoch(reply: Reply) -> int:
    return reply.epoch


def _range(reply: Reply) -> Range:
    return Range(reply.txid, [Entry(key, decode(value), Stat(version, create, modify, len(value)))
                              for key, value, version, create, modify in reply.result])


def _with_txid(reply: Reply) -> tuple[Any, Stat | None, int]:
    found = _value_and_stat(reply)
    return (None, None, reply.txid) if found is None else (*found, reply.txid)


def _fetch(reply: Reply) -> tuple[int, list[tuple[int, int, bytes]]]:
    durable_txid, records = reply.result
    return durable_txid, [(txid, epoch, payload) for txid, epoch, payload in records]


def convert_reply(reply: Reply, convert: Callable[[Reply], Any]) -> tuple[Any, BaseException | None]:
    """(result, None) for a success, (None, exception) for an error or a malformed result."""
    if reply.status:
        return None, error_from_reply(reply)
    try:
        return convert(reply), None
    except Exception as exc:  # a result of the wrong shape: say so instead of a TypeError
        return None, ProtocolError(ErrorCode.BAD_REQUEST,
                                   f"malformed result from the master for request "
                                   f"{reply.request_id}: {exc}", reply.request_id)


class Calls:
    """Every operation of the protocol, defined once. Subclasses implement `_run`."""

    op_put = staticmethod(op_put)
    op_merge = staticmethod(op_merge)
    op_delete = staticmethod(op_delete)
    op_check = staticmethod(op_check)
    op_attach = staticmethod(op_attach)

    # What a call asks when it names no durability or consistency (Client(durability=...,
    # consistency=...) sets them): the master's default level, and "strong" consistency.
    durability: str | int | None = None
    consistency: str | None = None

    def _run(self, op: int, args: list, durability: int, convert: Callable[[Reply], Any]):
        raise NotImplementedError

    def _code(self, durability: str | int | None, consistency: str | None) -> int:
        """The wire's durability field for a call (core.durability.wire_code)."""
        if durability is None:
            durability = self.durability
        if consistency is None:
            consistency = self.consistency
        if durability is None and consistency is None:
            return 0
        return wire_code(durability, consistency)

    # --- mutations: each returns the txid it was logged at ---

    def put(self, key: str, value: Any, expected_version: int | None = None,
            durability: str | int | None = None, *, consistency: str | None = None,
            lease: Lease | int | None = None):
        """Set `key` to `value` (anything msgpack carries). `expected_version`: None for
        unconditional, 0 for "must not exist", n for "must be at version n".
        `consistency` "fast" lets a refusal (BadVersion...) reveal state not yet durable;
        docs/durability.md. With `lease`, the key is deleted when the lease ends (one MULTI
        of the put and an attach; NotFound inside RemoteMultiFailed: the lease is gone)."""
        if lease is not None:
            return self._run(Op.MULTI, [[[RecordKind.PUT.value, key, encode(value),
                                          expected_version], op_attach(key, lease)]],
                             self._code(durability, consistency), _txid)
        return self._run(Op.PUT, [key, encode(value), expected_version],
                         self._code(durability, consistency), _txid)

    def merge(self, key: str, patch: dict, expected_version: int | None = None,
              durability: str | int | None = None, *, consistency: str | None = None):
        """Merge a map into the map at `key` (RFC 7386: nil removes a field)."""
        return self._run(Op.MERGE, [key, encode(patch), expected_version],
                         self._code(durability, consistency), _txid)

    def delete(self, key: str, recursive: bool = False, expected_version: int | None = None,
               durability: str | int | None = None, *, consistency: str | None = None):
        return self._run(Op.DELETE, [key, bool(recursive), expected_version],
                         self._code(durability, consistency), _txid)

    def multi(self, ops: list, durability: str | int | None = None, *,
              consistency: str | None = None):
        """Apply all of `ops` (built with op_put/op_merge/op_delete/op_check) or none;
        returns (txid, per-operation results)."""
        return self._run(Op.MULTI, [list(ops)], self._code(durability, consistency), _multi)

    # --- reads, served from the master's memory (or a standby's: Client(read_from=)) ---
    # With "strong" consistency (the default) a read's reply waits until the state it saw is
    # durable at its level (`durability`, default the master's); "fast" answers at once.

    def get(self, key: str, *, consistency: str | None = None,
            durability: str | int | None = None):
        """The value at `key`, or None when the key does not exist."""
        return self._read(Op.GET, [key], self._code(durability, consistency), _value)

    def get_with_stat(self, key: str, *, consistency: str | None = None,
                      durability: str | int | None = None):
        """(value, Stat) or None: the value with the version to pass as expected_version."""
        return self._read(Op.GET, [key], self._code(durability, consistency),
                          _value_and_stat)

    def stat(self, key: str, *, consistency: str | None = None,
             durability: str | int | None = None):
        """Stat(version, create_txid, modify_txid, value_bytes), or None."""
        return self._read(Op.STAT, [key], self._code(durability, consistency), _stat)

    def children(self, path: str = "/", limit: int | None = None, *,
                 consistency: str | None = None, durability: str | int | None = None):
        """Names directly below `path` ("/" for the top level), keys or implicit parents."""
        return self._read(Op.CHILDREN, [path, limit], self._code(durability, consistency),
                          _result)

    def list(self, prefix: str, limit: int = 1000, start_after: str | None = None, *,
             consistency: str | None = None, durability: str | int | None = None):
        """Keys starting with the string `prefix`, in key order, after `start_after`."""
        return self._read(Op.LIST, [prefix, limit, start_after],
                          self._code(durability, consistency), _result)

    def range(self, prefix: str, limit: int = 1000, start_after: str | None = None, *,
              consistency: str | None = None, durability: str | int | None = None):
        """Range(txid, [Entry(key, value, Stat), ...]): the keys starting with `prefix`
        after `start_after`, with their values, all as of one txid."""
        return self._run(Op.RANGE, [prefix, limit, start_after],
                         self._code(durability, consistency), _range)

    def get_with_txid(self, key: str, *, consistency: str | None = None,
                      durability: str | int | None = None):
        """(value, Stat, txid), (None, None, txid) when the key does not exist: `txid` is the
        txid the read was served at (watch from txid + 1 to miss nothing after it)."""
        return self._run(Op.GET, [key], self._code(durability, consistency), _with_txid)

    # --- leases (docs/coordination.md) ---

    def grant_lease(self, ttl_s: float, durability: str | int | None = None) -> Lease:
        """A new lease of `ttl_s` seconds (1 s to 24 h): keys put with it are deleted when
        it is revoked or expires (no keepalive within the TTL; keepalive() sends them)."""
        ttl_ms = int(round(ttl_s * 1000))
        return self._run(Op.LEASE_GRANT, [ttl_ms], self._code(durability, None),
                         lambda reply: Lease(reply.result, ttl_ms / 1000))

    def revoke_lease(self, lease: Lease | int, durability: str | int | None = None) -> int:
        """End a lease now: its keys are deleted; returns how many. NotFound when gone."""
        return self._run(Op.LEASE_REVOKE, [int(getattr(lease, "id", lease))],
                         self._code(durability, None), _result)

    def keepalive_once(self, lease: Lease | int) -> float:
        """Renew a lease for its whole TTL from now; its TTL in seconds. NotFound when it
        expired or was revoked (its keys are gone)."""
        return self._run(Op.LEASE_KEEPALIVE, [int(getattr(lease, "id", lease))], 0,
                         lambda reply: reply.result / 1000)

    def _read(self, op: int, args: list, durability: int, convert: Callable[[Reply], Any]):
        """A read of the namespace: the master's by default (Client routes it to a standby
        with read_from="standby")."""
        return self._run(op, args, durability, convert)

    def status(self):
        """The master's status map (docs/protocol.md, "Status")."""
        return self._run(Op.STATUS, [], 0, _result)

    def ping(self):
        """A round trip; returns the master's epoch."""
        return self._run(Op.PING, [], 0, _epoch)

    def reload_principals(self) -> int:
        """Ask the master to read its principals directory again (the admin role); how many
        principals it allows now."""
        return self._run(Op.RELOAD_PRINCIPALS, [], 0, _result)

    def promote(self):
        """Ask a checkpoint node (at its status endpoint) to become the master; its report
        (docs/failover.md). Use a Client with retries=0: a promotion is not repeated blindly."""
        return self._run(Op.PROMOTE, [], 0, _result)

    # --- replication ---

    def fetch(self, from_txid: int, max_bytes: int = 1 << 20):
        """(durable_txid, [(txid, epoch, payload), ...]) from `from_txid` on; raises
        Truncated when the master no longer keeps those records."""
        return self._run(Op.FETCH, [from_txid, max_bytes], 0, _fetch)

    def snapshot_info(self):
        """[txid, epoch, digest, size_bytes, created_ms] of the newest snapshot; raises
        NoSnapshot when there is none."""
        return self._run(Op.SNAPSHOT_INFO, [], 0, _result)

    def snapshot_chunk(self, txid: int, offset: int, length: int):
        """Bytes [offset, offset + length) of the snapshot named by `txid`."""
        return self._run(Op.SNAPSHOT_CHUNK, [txid, offset, length], 0, _result)

    # --- jobs and workers (docs/protocol.md, "Jobs and workers") ---

    def submit_job(self, name: str, handler: str, tasks: list, *, params: dict | None = None,
                   max_attempts: int = 3, priority: int = 0, job_id: str | None = None,
                   timeout_s: float | None = None, executor: str | None = None,
                   durability: str | int | None = None):
        """Submit a job: one task per element of `tasks` (its input, anything msgpack
        carries), each with `params`; returns the job id (made by the master when None).
        `timeout_s`: an attempt running longer is stopped and failed as timed out (None: the
        worker's task_timeout_s); `executor`: "process" or "thread" on such workers."""
        shared = dict(params) if params else {}
        args = [job_id, name, handler, priority, max_attempts,
                [[task, shared] for task in tasks]]
        options = {k: v for k, v in (("timeout_s", timeout_s), ("executor", executor))
                   if v is not None}
        if options:                  # a job without options is what masters before them took
            args.append(options)
        return self._run(Op.JOB_SUBMIT, args, self._code(durability, None), _result)

    def cancel_job(self, job_id: str, reason: str = "", durability: str | int | None = None):
        """Cancel every unfinished task of the job; returns how many were cancelled."""
        return self._run(Op.JOB_CANCEL, [job_id, reason], self._code(durability, None),
                         _result)

    def delete_job(self, job_id: str, durability: str | int | None = None):
        """Forget a finished job; returns its task count."""
        return self._run(Op.JOB_DELETE, [job_id], self._code(durability, None), _result)

    def jobs(self, include_finished: bool = True, *, consistency: str | None = None):
        """Summary maps of the jobs, in submit order."""
        return self._run(Op.JOB_LIST, [bool(include_finished)], self._code(None, consistency),
                         _result)

    def job_status(self, job_id: str, *, consistency: str | None = None):
        """The job's status map: counts per state, progress, rate, ETA, failures."""
        return self._run(Op.JOB_STATUS, [job_id], self._code(None, consistency), _result)

    def job_tasks(self, job_id: str, start: int = 0, limit: int = 1000,
                  state: str | None = None, *, consistency: str | None = None):
        """Task maps from index `start`, at most `limit`, only those in `state` if given."""
        return self._run(Op.JOB_TASKS, [job_id, start, limit, state],
                         self._code(None, consistency), _result)

    def register_worker(self, worker_id: str, slots: int, address: str = "",
                        durability: str | int | None = None, *,
                        status_endpoint: str | None = None):
        """Register (or re-register) a worker; returns {"heartbeat_ms", "worker_timeout_ms",
        "epoch", "tasks": [[job_id, index, attempt], ...] the master has on it}. A
        `status_endpoint` (the worker's) goes as the optional fourth arg: the master lists it
        in STATUS (`worker_nodes`)."""
        args = [worker_id, address, slots]
        if status_endpoint is not None:
            args.append(status_endpoint)
        return self._run(Op.WORKER_REGISTER, args, Durability.parse(durability), _result)

    def worker_heartbeat(self, worker_id: str, running):
        """Soft state: returns {"known": bool, "cancel": [[job_id, index, attempt], ...],
        "epoch"}; known False means register again."""
        return self._run(Op.WORKER_HEARTBEAT,
                         [worker_id, [[j, int(i), int(a)] for j, i, a in running]], 0, _result)

    def request_tasks(self, worker_id: str, max_tasks: int,
                      durability: str | int | None = "sync"):
        """Tasks for the worker to run now (maybe none), as Assignments; sync by default, so
        that an assignment is durable before the worker starts it."""
        return self._run(Op.TASK_REQUEST, [worker_id, max_tasks], Durability.parse(durability),
                         _assignments)

    def report_progress(self, worker_id: str, job_id: str, index: int, attempt: int,
                        progress: float, counters: dict | None = None,
                        durability: str | int | None = None):
        """Log the task's progress (0..1) and counters; raises BadState when the attempt is
        no longer the task's current one on this worker (the report is stale)."""
        return self._run(Op.TASK_PROGRESS, [worker_id, job_id, index, attempt,
                                            float(progress), dict(counters or {})],
                         Durability.parse(durability), _none)

    def finish_task(self, worker_id: str, job_id: str, index: int, attempt: int, ok: bool,
                    outcome: Any, durability: str | int | None = "sync"):
        """Report the attempt's end: `outcome` is the result when ok, else the error
        message. Returns the task's new state; BadState when the report is stale."""
        return self._run(Op.TASK_FINISH, [worker_id, job_id, index, attempt, bool(ok),
                                          outcome], Durability.parse(durability), _result)

    def leave_worker(self, worker_id: str, durability: str | int | None = None):
        """Graceful exit: the worker's unfinished tasks go back to pending."""
        return self._run(Op.WORKER_LEAVE, [worker_id], Durability.parse(durability), _none)
