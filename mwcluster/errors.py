"""The error hierarchy: every error mwcluster raises on purpose derives from MwclusterError.

Foreign errors (OSError, msgpack's exceptions) are wrapped at the boundary into one of these,
with a message that says what failed, where, and what to do about it.
"""

from __future__ import annotations


class MwclusterError(Exception):
    """Base of every error mwcluster raises on purpose."""

    code = "error"


# --- the state machine: a record cannot be applied (nothing was changed) ----------------


class ApplyError(MwclusterError):
    """A record was refused by the state machine; the state is unchanged."""

    code = "apply_error"


class InvalidRecord(ApplyError):
    """A record or one of its fields is malformed (bad key, wrong type, value too large)."""

    code = "invalid"


class NoNode(ApplyError):
    code = "no_node"


class NodeExists(ApplyError):
    code = "node_exists"


class BadVersion(ApplyError):
    code = "bad_version"


class NotEmpty(ApplyError):
    code = "not_empty"


class NotAMap(ApplyError):
    code = "not_a_map"


class NotFound(ApplyError):
    """A job, task or worker that a record names does not exist."""

    code = "not_found"


class BadState(ApplyError):
    """The record is not allowed in the current state (a stale attempt, a finished task...)."""

    code = "bad_state"


class MultiFailed(ApplyError):
    """One operation of a multi failed; none was applied. `index` names the failed one."""

    code = "multi_failed"

    def __init__(self, index: int, cause: ApplyError):
        super().__init__(f"operation {index} of the multi failed: {cause}")
        self.index = index
        self.cause = cause


# --- storage -----------------------------------------------------------------------------


class StorageError(MwclusterError):
    code = "storage_error"


class CorruptionError(StorageError):
    """A file is damaged where damage cannot be a torn tail; startup must stop."""

    code = "corrupt"

    def __init__(self, message: str, *, path: str | None = None, offset: int | None = None,
                 txid: int | None = None):
        where = []
        if path is not None:
            where.append(f"file {path}")
        if offset is not None:
            where.append(f"offset {offset}")
        if txid is not None:
            where.append(f"txid {txid}")
        full = message + (f" ({', '.join(where)})" if where else "")
        super().__init__(full)
        self.path = path
        self.offset = offset
        self.txid = txid


class Truncated(StorageError):
    """Records asked for are no longer kept (a checkpoint dropped them): fetch the snapshot."""

    code = "truncated"


class JournalUnavailable(StorageError):
    """The journal cannot take writes now (a write or fsync failed, or it is closed)."""

    code = "journal_unavailable"


class ConfigError(MwclusterError):
    code = "config"
