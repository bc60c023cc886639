"""The audit log (config key `audit_log`, off by default): one key=value line per mutation,
admin operation and refusal of authorization, in the order the master answered them.

    time=2026-12-02T16:31:09.123Z principal=etl peer=10.1.2.3 op=PUT key=/teams/etl/a
    result=ok txid=42

(one line each). `result` is ok or the error code's name; `txid` the record's (0 when nothing
was logged). Values with spaces, quotes, '=', backslashes or characters that are not printable
are JSON-quoted (ASCII), so every line stays one line of fields. The file is appended to by the
master's loop and flushed at every tick (0.25 s) and at stop: a kill -9 may lose the last
quarter second of lines, never a record of the journal. Nothing secret is written: principals
are named, keys never appear.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from mwcluster import errors
from mwcluster.wire.protocol import ErrorCode, Op

log = logging.getLogger(__name__)

# what is audited besides the mutations (ops below 100) and the refusals of authorization
ADMIN_OPS = frozenset({Op.RELOAD_PRINCIPALS, Op.SNAPSHOT_UPLOAD_BEGIN, Op.PROMOTE})
_KEY_OPS = frozenset({Op.PUT, Op.MERGE, Op.DELETE})


def _value(text: Any) -> str:
    """A field from an untrusted request: strings and numbers as they are (at most 200
    characters), anything else by its type only."""
    if type(text) not in (str, int, float, bool):
        text = f"({type(text).__name__})"
    text = str(text)
    if len(text) > 200:
        text = text[:200] + "..."
    # quoted (JSON, ASCII): a space, '"', '=', '\\', or anything not printable (a control
    # character, a line or paragraph separator) could split a line or a field
    if not text or not text.isprintable() or any(c in text for c in ' "=\\'):
        return json.dumps(text)
    return text


def _op_name(op: int) -> str:
    try:
        return Op(op).name
    except ValueError:
        return str(op)


def _target(op: int, args: Any) -> str:
    """key=... or job=... (and worker=...) of a request, from its (untrusted) args."""
    if type(args) is not list or not args:
        return ""
    first = args[0]
    if op in _KEY_OPS:
        return f" key={_value(first)}"
    if op == Op.MULTI and type(first) is list:
        keys = [m[1] for m in first if type(m) is list and len(m) > 1][:8]
        named = (k if type(k) is str else f"({type(k).__name__})" for k in keys)
        return f" keys={_value(','.join(named))} ops={len(first)}"
    if op in (Op.JOB_CANCEL, Op.JOB_DELETE, Op.JOB_STATUS, Op.JOB_TASKS):
        return f" job={_value(first)}"
    if op == Op.JOB_SUBMIT:
        return f" job={_value(first or '(new)')}"
    if op in (Op.TASK_PROGRESS, Op.TASK_FINISH) and len(args) > 3:
        return f" worker={_value(first)} job={_value(args[1])} task={_value(args[2])}"
    if Op.WORKER_REGISTER <= op <= Op.WORKER_LEAVE:
        return f" worker={_value(first)}"
    return ""


class AuditLog:
    """Appends audit lines to one file; owned by the master's loop (or by a checkpoint
    node's, for its status endpoint)."""

    def __init__(self, path: str) -> None:
        self.path = path
        try:
            self._file = open(path, "a", buffering=1 << 16, encoding="utf-8")
        except OSError as exc:
            raise errors.ConfigError(f"cannot open the audit log {path}: {exc.strerror} "
                                     "(audit_log names a file this node may append to)") from None
        self.lines = 0
        self.lost = 0             # lines that could not be written (a full disk)

    def write(self, principal: str, peer: str, op: int, args: Any, status: int,
              txid: int) -> None:
        now = time.time()
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now))
        result = "ok" if status == 0 else _code_name(status)
        try:
            self._file.write(f"time={stamp}.{int(now * 1000) % 1000:03d}Z "
                             f"principal={_value(principal)} peer={_value(peer or '-')} "
                             f"op={_op_name(op)}{_target(op, args)} result={result} "
                             f"txid={txid}\n")
        except OSError as exc:        # the audit must not stop the master: count, say once
            if not self.lost:
                log.error("the audit log %s could not be written (%s): lines are lost from "
                          "now on until it can be (counted in status)", self.path, exc)
            self.lost += 1
            return
        self.lines += 1

    def flush(self) -> None:
        try:
            self._file.flush()
        except OSError as exc:      # the audit must not stop the master; say it loudly
            if not self.lost:
                log.error("the audit log %s could not be written: %s", self.path, exc)
            self.lost += 1

    def close(self) -> None:
        self.flush()
        try:
            self._file.close()
        except OSError:
            pass


def _code_name(status: int) -> str:
    try:
        return ErrorCode(status).name.lower()
    except ValueError:
        return str(status)
