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


class JournalUnavailable(StorageError):
    """The journal cannot take writes now (a write or fsync failed, or it is closed)."""

    code = "journal_unavailable"


class ConfigError(MwclusterError):
    code = "config"


# --- the client: errors the master answered with, and failures to reach it ----------------
# Errors of the state machine (NoNode, BadVersion...) keep their classes above when the master
# reports them; these cover the rest of the wire's error codes and the client's own failures.


class ServerError(MwclusterError):
    """The master refused a request for a reason that is not a state-machine refusal."""

    code = "server_error"


class BadRequest(ServerError):
    """The master could not read the request (wrong shape, types or argument count)."""

    code = "bad_request"


class UnknownOp(BadRequest):
    code = "unknown_op"


class UnsupportedVersion(BadRequest):
    code = "unsupported_version"


class MessageTooLarge(ServerError):
    """A request is larger than the master accepts (`max_message_bytes`)."""

    code = "too_large"


class Truncated(ServerError, StorageError):
    """Records asked for are no longer kept (a checkpoint dropped them): fetch the snapshot.
    Raised by the engine (a storage condition) and by the client when FETCH says so."""

    code = "truncated"


class Compacted(ServerError):
    """A watch asked for events the master no longer holds (or that belong to another
    history, after a failover): re-read what it watches, then watch from the txid that read
    was served at + 1 (Client.watch does). `oldest_txid` is the oldest txid whose events are
    held, `current_txid` the master's txid (None when the reply did not say)."""

    code = "compacted"

    def __init__(self, message: str, oldest_txid: int | None = None,
                 current_txid: int | None = None) -> None:
        super().__init__(message)
        self.oldest_txid, self.current_txid = oldest_txid, current_txid


class NoSnapshot(ServerError):
    code = "no_snapshot"


class ShuttingDown(ServerError):
    """The master is stopping; nothing was applied. Retry once it is back."""

    code = "shutting_down"


class Fenced(ServerError):
    """This master saw a higher epoch than its own: another master replaced it, and it
    refuses requests until it rejoins as a standby. Nothing was applied; ask the other
    master (the client moves to its next endpoint)."""

    code = "fenced"


class StandbyBehind(ServerError):
    """A standby could not serve a read: its replica did not reach the txid the client has
    seen within the wait. Read from the master (Client(read_from="standby") does)."""

    code = "behind"


class Unauthorized(ServerError):
    """The server knows who sent the request and its roles do not allow it (or its key is no
    longer allowed). The message names the principal, the operation and what is missing;
    nothing was applied."""

    code = "unauthorized"


class AuthenticationFailed(MwclusterError):
    """The server refused the connection's CURVE handshake: an unknown or removed key, a
    client without a key against a secured server (or the reverse), or the wrong server key.
    The message says which; retrying cannot help."""

    code = "authentication_failed"


class InternalServerError(ServerError):
    code = "internal"


class RemoteMultiFailed(MultiFailed):
    """MultiFailed as the master reports it: the index and the cause's message, no cause
    object (it stayed in the master)."""

    def __init__(self, message: str, index: int | None = None):
        ApplyError.__init__(self, message)
        self.index = index
        self.cause = None


class RequestTimeout(MwclusterError):
    """No reply from the master within the timeout, after every retry. A mutation may or may
    not have been applied; retrying it with the same request id is safe."""

    code = "timeout"
