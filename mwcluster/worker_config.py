"""Typed configuration of a worker: built-in defaults < TOML file (conf/worker.toml, or a
[worker] table) < MWCLUSTER_WORKER_* environment variables < command-line flags.

The layering, the checks and the error messages are config.py's; only the keys are here.
`slots` 0 and `worker_id` "" mean "decide at start": the CPU count, and host-pid.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from mwcluster.config import Key, _at_least, _endpoint, _layer

WORKER_ENV_PREFIX = "MWCLUSTER_WORKER_"

WORKER_KEYS: tuple[Key, ...] = (
    Key("master", str, "tcp://127.0.0.1:5550", "the master's ROUTER endpoint; several separated "
        "by commas (the master and the standby's promote endpoint) let the worker follow a "
        "failover", lambda v: all(_endpoint(e.strip()) for e in v.split(",")),
        "a ZeroMQ endpoint such as tcp://127.0.0.1:5550, or several separated by commas"),
    Key("worker_id", str, "", "this worker's id (empty: host name and process id)"),
    Key("slots", int, 0, "tasks run at once, one thread each (0: the CPU count)",
        lambda v: 0 <= v <= 4096, "0..4096"),
    Key("handlers", str, "", "comma-separated Python modules that register task handlers on "
        "import (e.g. mwcluster.demo_job)"),
    Key("heartbeat_ms", int, 1000, "heartbeat interval (when set nowhere, the master's "
        "at register; never more than a third of its worker timeout)",
        lambda v: 10 <= v <= 60_000, "10..60000"),
    Key("progress_interval_ms", int, 500, "at most one progress report per task this often",
        lambda v: 0 <= v <= 600_000, "0..600000"),
    Key("idle_poll_ms", int, 200, "after an empty answer, ask for tasks again after this long",
        lambda v: 1 <= v <= 60_000, "1..60000"),
    Key("request_timeout_s", float, 2.0, "a request unanswered this long is resent (then the "
        "worker reconnects with backoff)", lambda v: 0.05 <= v <= 600,
        "a number of seconds within 0.05..600"),
    Key("stop_timeout_s", float, 10.0, "at a graceful stop, how long running tasks may take "
        "before they are abandoned (the master requeues them)", _at_least(0),
        "a number of seconds >= 0"),
    Key("ready_file", str, "", "write a JSON file with the worker id and pid once registered "
        "(empty: none)"),
    Key("standby_status", str, "", "the standby's status endpoint(s), comma-separated: an "
        "unanswered request also asks it to serve (a VOTE, for failover = auto); empty: none",
        lambda v: v == "" or all(_endpoint(e.strip()) for e in v.split(",")),
        "empty, or ZeroMQ endpoints separated by commas"),
    Key("status_endpoint", str, "", "ROUTER answering STATUS and PING with this worker's "
        "status; the worker names it at register so the master's STATUS lists it (empty: "
        "none; port 0 picks a free port)", lambda v: v == "" or _endpoint(v),
        "empty or a ZeroMQ endpoint such as tcp://127.0.0.1:5560"),
    Key("metrics_port", int, 0, "Prometheus metrics on metrics_host:PORT; 0 turns them off",
        lambda v: 0 <= v <= 65535, "0..65535"),
    Key("metrics_host", str, "127.0.0.1", "address the metrics HTTP server listens on",
        lambda v: v != "", "a host name or address"),
)

_BY_NAME = {k.name: k for k in WORKER_KEYS}


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    master: str
    worker_id: str
    slots: int
    handlers: str
    heartbeat_ms: int
    progress_interval_ms: int
    idle_poll_ms: int
    request_timeout_s: float
    stop_timeout_s: float
    ready_file: str
    standby_status: str
    status_endpoint: str
    metrics_port: int
    metrics_host: str
    sources: Mapping[str, str]

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "sources"}

    def handler_modules(self) -> list[str]:
        return [m.strip() for m in self.handlers.split(",") if m.strip()]

    def resolved(self) -> WorkerConfig:
        """The id and slot count filled in when left to the defaults."""
        worker_id = self.worker_id or f"{socket.gethostname()}-{os.getpid()}"
        slots = self.slots or os.cpu_count() or 1
        return replace(self, worker_id=worker_id, slots=slots)


assert [k.name for k in WORKER_KEYS] == [f.name for f in fields(WorkerConfig)][:-1]


def load_worker_config(config_file: str | os.PathLike[str] | None = None, *,
                       env: Mapping[str, str] | None = None,
                       flags: Mapping[str, Any] | None = None) -> WorkerConfig:
    """Layer the sources (the file: `config_file`, else MWCLUSTER_WORKER_CONFIG)."""
    values, sources = _layer(WORKER_KEYS, _BY_NAME, WORKER_ENV_PREFIX, "worker", config_file,
                             os.environ if env is None else env, flags)
    return WorkerConfig(**values, sources=sources)
