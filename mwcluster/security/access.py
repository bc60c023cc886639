"""What each role may ask, and the check every server makes per request (docs/security.md).

A connection's principal comes from its CURVE handshake: the ZAP handler (curve.py) admits a
connection only with an allowed public key and sets the message property User-Id to that key,
which `Access.check` looks up in the current principals (replaced whole by `reload`): a key
removed or rotated out is refused at its next request, whatever connection it came on. Nothing
in a message can name its principal.

    read     GET STAT CHILDREN LIST RANGE WATCH, the job reads, STANDBY_READ, STATUS PING
    write    read + PUT MERGE DELETE MULTI, JOB_SUBMIT JOB_CANCEL JOB_DELETE, the lease ops
             (LEASE_GRANT LEASE_REVOKE LEASE_KEEPALIVE), VOTE
    worker   WORKER_* and TASK_* for its own worker id only (the principal's name, or the name
             followed by '-' and anything), VOTE, STATUS PING
    replica  FETCH SNAPSHOT_* CHECKPOINT_HELLO REPLICA_ACK and the log stream, STATUS PING
    admin    everything: PROMOTE, RELOAD_PRINCIPALS too

A principal with `prefixes` may change only keys under one of them (every key of a MULTI) and
may not submit, cancel or delete jobs, nor revoke a lease (a revoke deletes the lease's keys,
wherever they are): its writes are limited. Reads (watches too) are not scoped. A worker
id claimed by a longer worker principal's name (`web-2-7` for `web-2`) is not `web`'s.

Retries are answered per principal: on a secured server a request's client id is bound to
its principal's key (`bound_client_id`) before the table of recent requests sees it.
"""

from __future__ import annotations

import hashlib
from typing import Any, Iterable, NamedTuple

from mwcluster.security.keys import ROLES, Principal, fingerprint
from mwcluster.wire.protocol import Op

_ANY = frozenset({Op.STATUS, Op.PING, Op.BATCH})
_READ = frozenset({Op.GET, Op.STAT, Op.CHILDREN, Op.LIST, Op.JOB_LIST, Op.JOB_STATUS,
                   Op.JOB_TASKS, Op.STANDBY_READ, Op.RANGE, Op.WATCH})
KEY_WRITES = frozenset({Op.PUT, Op.MERGE, Op.DELETE, Op.MULTI})
JOB_WRITES = frozenset({Op.JOB_SUBMIT, Op.JOB_CANCEL, Op.JOB_DELETE})
WORKER_OPS = frozenset({Op.WORKER_REGISTER, Op.WORKER_HEARTBEAT, Op.TASK_REQUEST,
                        Op.TASK_PROGRESS, Op.TASK_FINISH, Op.WORKER_LEAVE})
REPLICA_OPS = frozenset({Op.FETCH, Op.SNAPSHOT_INFO, Op.SNAPSHOT_CHUNK,
                         Op.SNAPSHOT_UPLOAD_BEGIN, Op.SNAPSHOT_UPLOAD_CHUNK,
                         Op.SNAPSHOT_UPLOAD_END, Op.SNAPSHOT_UPLOAD_ABORT,
                         Op.CHECKPOINT_HELLO, Op.REPLICA_ACK})
ROLE_OPS: dict[str, frozenset[int]] = {
    "read": _ANY | _READ,
    "write": _ANY | _READ | KEY_WRITES | JOB_WRITES | {Op.VOTE, Op.LEASE_GRANT,
                                                         Op.LEASE_REVOKE, Op.LEASE_KEEPALIVE},
    "worker": _ANY | WORKER_OPS | {Op.VOTE},
    "replica": _ANY | REPLICA_OPS,
    "admin": frozenset(Op),
}
# who may subscribe to a master's log stream (its PUB): it carries every record
STREAM_ROLES = frozenset({"replica", "admin"})
assert set(ROLE_OPS) == set(ROLES)


def roles_for(op: int) -> list[str]:
    """The roles that allow `op`, for a refusal's message."""
    return [role for role in ROLES if op in ROLE_OPS[role]]


def shown(value: Any) -> str:
    """A value from an untrusted request as a refusal names it: a string (quoted, at most
    100 characters), else only its type (never the repr of an arbitrary, maybe nested,
    value)."""
    if type(value) is str:
        return repr(value if len(value) <= 100 else value[:100] + "...")
    return f"a {type(value).__name__}"


def _op_name(op: int) -> str:
    try:
        return Op(op).name
    except ValueError:
        return f"op {op}"


class Grant(NamedTuple):
    """A principal as the per-request check sees it: the ops its roles allow, precomputed."""
    name: str
    roles: frozenset[str]
    ops: frozenset[int]
    prefixes: tuple[str, ...]
    admin: bool

    @classmethod
    def of(cls, principal: Principal) -> Grant:
        ops = frozenset().union(*(ROLE_OPS[r] for r in principal.roles))
        if principal.prefixes:
            ops = ops - JOB_WRITES if "admin" not in principal.roles else ops
        return cls(principal.name, principal.roles, ops, principal.prefixes,
                   "admin" in principal.roles)


class Access:
    """The allowed principals of one server, by the User-Id its ZAP handler sets (the Z85
    public key); `check` is called once per request (and per BATCH sub-request)."""

    def __init__(self, principals: dict[bytes, Principal]) -> None:
        self.grants: dict[str, Grant] = {}
        self.reload(principals)

    def reload(self, principals: dict[bytes, Principal]) -> None:
        """Replace the principals whole (a thread reading `grants` sees old or new)."""
        self.worker_names = frozenset(p.name for p in principals.values()
                                      if "worker" in p.roles)
        self.grants = {key.decode("ascii"): Grant.of(p) for key, p in principals.items()}

    def name(self, user_id: str | None) -> str:
        grant = self.grants.get(user_id or "")
        if grant is not None:
            return grant.name
        return f"key {fingerprint((user_id or '-').encode())}"

    def check(self, user_id: str | None, op: int, args: Any) -> str | None:
        """None when the principal behind `user_id` may make this request, else why not."""
        grant = self.grants.get(user_id or "")
        if grant is None:
            return (f"the key {fingerprint((user_id or '').encode()) or '(none)'} of this "
                    "connection is not an allowed principal any more (removed or rotated); "
                    "nothing was applied: connect with a current key")
        if op not in grant.ops:
            return _missing(grant, op)
        if grant.admin:
            return None
        if grant.prefixes and op in KEY_WRITES:
            return _outside_prefixes(grant, op, args)
        if grant.prefixes and op == Op.LEASE_REVOKE:
            return (f"principal {grant.name!r} may not LEASE_REVOKE: its writes are limited "
                    f"to keys under {', '.join(grant.prefixes)}, and a revoke deletes the "
                    "lease's keys wherever they are; delete its keys instead (the lease then "
                    "expires); nothing was applied")
        if op in WORKER_OPS:
            return _other_worker(grant, op, args, self.worker_names)
        return None


def _missing(grant: Grant, op: int) -> str:
    roles = ", ".join(sorted(grant.roles))
    needs = " or ".join(roles_for(op))
    if op in JOB_WRITES and grant.prefixes:
        return (f"principal {grant.name!r} (roles {roles}) may not {_op_name(op)}: its "
                f"writes are limited to keys under {', '.join(grant.prefixes)}, and jobs are "
                "not keys; nothing was applied")
    return (f"principal {grant.name!r} (roles {roles}) may not {_op_name(op)}: that needs "
            f"the role {needs}; nothing was applied")


def _keys_written(op: int, args: Any) -> Iterable[Any]:
    if op == Op.MULTI:
        members = args[0] if type(args) is list and args else None
        if type(members) is not list:
            return [None]
        return [m[1] if type(m) is list and len(m) > 1 else None for m in members]
    return [args[0] if type(args) is list and args else None]


def _outside_prefixes(grant: Grant, op: int, args: Any) -> str | None:
    for key in _keys_written(op, args):
        if type(key) is not str or not key.startswith(grant.prefixes):
            return (f"principal {grant.name!r} may not {_op_name(op)} {shown(key)}: its writes "
                    f"are limited to keys under {', '.join(grant.prefixes)}; nothing was "
                    "applied")
    return None


def _other_worker(grant: Grant, op: int, args: Any,
                  worker_names: frozenset[str]) -> str | None:
    worker_id = args[0] if type(args) is list and args else None
    name = grant.name
    if type(worker_id) is str and (worker_id == name or worker_id.startswith(name + "-")):
        # not when a longer worker principal's name claims it: `web` is not `web-2-7`
        longer = [other for other in worker_names if len(other) > len(name) and
                  (worker_id == other or worker_id.startswith(other + "-"))]
        if not longer:
            return None
        return (f"principal {name!r} may not act as worker {shown(worker_id)}: that id "
                f"belongs to principal {max(longer, key=len)!r}; nothing was applied")
    return (f"principal {name!r} (role worker) may act only as worker {name!r} or "
            f"'{name}-...'; this {_op_name(op)} names worker {shown(worker_id)}; nothing was "
            "applied")


def bound_client_id(user_id: str, client_id: bytes) -> bytes:
    """The client id a request is remembered under (the table of recent requests, the
    records' origins) on a secured server: the sender's own id within its principal's key,
    so that no principal can be answered from, or fill, another's retries."""
    return hashlib.blake2b(user_id.encode() + b"\0" + client_id, digest_size=16).digest()


def allows_stream(principal: Principal) -> bool:
    return bool(principal.roles & STREAM_ROLES)
