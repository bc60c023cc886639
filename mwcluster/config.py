"""Typed configuration of the master, the checkpoint node and the worker: built-in defaults <
TOML file < MWCLUSTER_* environment < command-line flags.

Every key is declared once in `MASTER_KEYS` with its type, default, allowed values and a one
line description; `conf/master.toml` documents the same keys with their defaults (a test keeps
the two in step). A bad value from any source raises ConfigError naming the key, the source
(the file, the environment variable or the flag) and what is allowed; unknown keys in a TOML
file are refused too. Environment variables are `MWCLUSTER_` + the key in upper case
(`MWCLUSTER_SEGMENT_BYTES=1048576`); other `MWCLUSTER_*` variables belong to other commands and
are ignored here. The checkpoint node's keys (`CHECKPOINT_KEYS`, conf/checkpoint.toml) follow
the same rules with the prefix `MWCLUSTER_CHECKPOINT_` (`MWCLUSTER_CHECKPOINT_PERIOD_S=30`),
and the worker's (`WORKER_KEYS`, conf/worker.toml) with `MWCLUSTER_WORKER_`; for a worker,
`slots` 0 and `worker_id` "" mean "decide at start": the CPU count, and host-pid. The
command-line options of the three node commands are made from these keys
(cli/common.key_option), so their help and defaults are these.
"""

from __future__ import annotations

import os
import socket
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from mwcluster.core.durability import MASTER_LEVELS
from mwcluster.core.failover import Mode as FailoverMode
from mwcluster.errors import ConfigError
from mwcluster.wire.protocol import DEFAULT_CLIENT_ENDPOINT, DEFAULT_PUB_ENDPOINT

ENV_PREFIX = "MWCLUSTER_"


@dataclass(frozen=True, slots=True)
class Key:
    """One configuration key: declared once, read by the loaders, the documented TOML files
    and the command-line options (cli/common.key_option)."""
    name: str
    kind: type                       # int, float, str or bool
    default: Any
    help: str
    check: Callable[[Any], bool] | None = None
    allowed: str = ""                # what `check` accepts, for the error message
    choices: tuple[str, ...] = ()    # the only values allowed: the check, and the CLI's choice

    def __post_init__(self) -> None:
        if self.choices:
            choices = self.choices
            object.__setattr__(self, "check", lambda v: v in choices)
            names = ["empty" if c == "" else c for c in choices]
            object.__setattr__(self, "allowed", ", ".join(names[:-1]) + " or " + names[-1])


def _at_least(n: float) -> Callable[[Any], bool]:
    return lambda v: v >= n


def _endpoint(v: str) -> bool:
    return "://" in v and v.split("://", 1)[0] in ("tcp", "ipc", "inproc")


def _security_keys(server: bool, whose: str) -> tuple[Key, ...]:
    """The keys of CURVE authentication (docs/security.md), the same for every node."""
    keys = (
        Key("key_file", str, "", f"{whose} own secret key file (NAME.secret from `mwcluster "
            "keys new`); empty: no CURVE (then only loopback may be bound, unless insecure)"),
        Key("server_key", str, "", "the public key of the master it connects to: Z85 or the "
            "path of the server principal's .toml file" + (" (empty: its own, the "
                                                             "cluster's server key)"
                                                             if server else "")),
        Key("principals_dir", str, "", "directory of the allowed principals (NAME.toml "
            "files), read at start and at SIGHUP; needed with key_file"),
        Key("insecure", bool, False, "allow binding a non-loopback address without keys "
            "(protected mode off): logged at every start and shown in status"),
    )
    return keys


MASTER_KEYS: tuple[Key, ...] = (
    Key("data_dir", str, "./mwcluster-data", "journal, snapshots and the epoch file live here",
        lambda v: v != "", "a non-empty path"),
    Key("client_endpoint", str, DEFAULT_CLIENT_ENDPOINT,
        "ROUTER socket for clients, workers and the checkpoint node", _endpoint,
        "a ZeroMQ endpoint such as tcp://127.0.0.1:5550 (port 0 or * picks a free port)"),
    Key("pub_endpoint", str, DEFAULT_PUB_ENDPOINT, "PUB socket of the log stream", _endpoint,
        "a ZeroMQ endpoint such as tcp://127.0.0.1:5551"),
    Key("durability", str, "async", "default durability of mutations",
        choices=MASTER_LEVELS),
    Key("metrics_port", int, 0, "Prometheus metrics on 127.0.0.1:PORT; 0 turns them off",
        lambda v: 0 <= v <= 65535, "0..65535"),
    Key("metrics_host", str, "127.0.0.1", "address the metrics HTTP server listens on",
        lambda v: v != "", "a host name or address"),
    Key("ready_file", str, "", "write a JSON file with the actual endpoints once serving "
        "(empty: none)"),
    Key("segment_bytes", int, 64 << 20, "a journal segment is closed past this size",
        _at_least(4096), "an integer >= 4096"),
    Key("buffer_limit_bytes", int, 64 << 20,
        "unflushed journal bytes past which appends wait for the disk (back-pressure)",
        _at_least(4096), "an integer >= 4096"),
    Key("max_message_bytes", int, 16 << 20, "largest request frame accepted (ZMQ_MAXMSGSIZE)",
        _at_least(1024), "an integer >= 1024"),
    Key("recent_requests", int, 100_000,
        "how many recent (client_id, request_id) are remembered for idempotent retries",
        _at_least(0), "an integer >= 0"),
    Key("tail_bytes", int, 64 << 20,
        "payload bytes of the newest records kept in memory for the log stream and FETCH",
        _at_least(0), "an integer >= 0"),
    Key("publish_batch_bytes", int, 1 << 20, "a log-stream message carries at most this much "
        "payload (at least one record)", _at_least(1024), "an integer >= 1024"),
    Key("fetch_max_bytes", int, 4 << 20, "cap on the payload bytes one FETCH reply carries",
        _at_least(1024), "an integer >= 1024"),
    Key("heartbeat_interval_s", float, 1.0, "heartbeat on the log stream when idle this long",
        lambda v: 0.01 <= v <= 60, "a number of seconds within 0.01..60"),
    Key("slow_fsync_ms", float, 50.0, "an fsync longer than this counts as slow (metrics)",
        _at_least(0), "a number of milliseconds >= 0"),
    Key("flush_interval_ms", float, 0.0, "flush policy: async records are written and "
        "fsynced at most once per this many milliseconds, unless a reply waits for them "
        "(0: as fast as the disk allows)", lambda v: 0 <= v <= 60_000,
        "a number of milliseconds within 0..60000"),
    Key("watch_events", int, 200_000, "watches: the newest changes kept in memory (events of "
        "keys, jobs and workers); a watch from an older txid is answered compacted "
        "(0: no watches)", _at_least(0), "an integer >= 0"),
    Key("watch_bytes", int, 64 << 20, "watches: the most entry bytes the kept changes hold",
        _at_least(1 << 20), "an integer >= 1048576"),
    Key("max_watches", int, 10_000, "watches waiting for events at once; one more is refused "
        "unavailable", _at_least(1), "an integer >= 1"),
    Key("keep_snapshots", int, 2, "snapshots kept (the journal is kept from the oldest)",
        _at_least(1), "an integer >= 1"),
    Key("router_hwm", int, 10_000, "ROUTER send and receive high-water mark, per peer",
        _at_least(0), "an integer >= 0 (0: no limit)"),
    Key("pub_hwm", int, 10_000, "PUB send high-water mark in messages (batches)",
        _at_least(0), "an integer >= 0 (0: no limit)"),
    Key("switch_interval_ms", float, 1.0, "Python's thread switch interval in the master "
        "process: lower lets the journal flusher take the GIL sooner under load (a smaller "
        "loss window, faster sync replies)", lambda v: 0.05 <= v <= 100,
        "a number of milliseconds within 0.05..100"),
    Key("shutdown_linger_ms", int, 500, "at a graceful stop, how long the last replies and "
        "log messages may take to leave", lambda v: 0 <= v <= 60_000, "0..60000"),
    Key("worker_timeout_s", float, 10.0, "a worker not heard from for this long is marked "
        "lost and its tasks go back to pending", lambda v: 0.1 <= v <= 86_400,
        "a number of seconds within 0.1..86400"),
    Key("worker_heartbeat_ms", int, 1000, "how often workers are told to heartbeat (at "
        "register); keep it well below worker_timeout_s", lambda v: 10 <= v <= 3_600_000,
        "10..3600000"),
    Key("max_assign_per_request", int, 64, "most tasks one TASK_REQUEST is given",
        lambda v: 1 <= v <= 4096, "1..4096"),
    Key("peer_master_endpoint", str, "", "failover: the standby's promote_client_endpoint, "
        "asked at start whether it serves as master under a higher epoch (empty: no peer)",
        lambda v: v == "" or _endpoint(v), "empty or a ZeroMQ endpoint"),
    Key("peer_status_endpoint", str, "", "failover: the standby's status endpoint, asked at "
        "start whether it is still a standby (empty: none)",
        lambda v: v == "" or _endpoint(v), "empty or a ZeroMQ endpoint"),
    *_security_keys(True, "the master's"),
    Key("audit_log", str, "", "append one key=value line per mutation, admin operation and "
        "refusal to this file (empty: no audit log)"),
)

MASTER_BY_NAME = {k.name: k for k in MASTER_KEYS}


@dataclass(frozen=True, slots=True)
class MasterConfig:
    data_dir: str
    client_endpoint: str
    pub_endpoint: str
    durability: str
    metrics_port: int
    metrics_host: str
    ready_file: str
    segment_bytes: int
    buffer_limit_bytes: int
    max_message_bytes: int
    recent_requests: int
    tail_bytes: int
    publish_batch_bytes: int
    fetch_max_bytes: int
    heartbeat_interval_s: float
    slow_fsync_ms: float
    flush_interval_ms: float
    watch_events: int
    watch_bytes: int
    max_watches: int
    keep_snapshots: int
    router_hwm: int
    pub_hwm: int
    switch_interval_ms: float
    shutdown_linger_ms: int
    worker_timeout_s: float
    worker_heartbeat_ms: int
    max_assign_per_request: int
    peer_master_endpoint: str
    peer_status_endpoint: str
    key_file: str
    server_key: str
    principals_dir: str
    insecure: bool
    audit_log: str
    sources: Mapping[str, str]       # key -> "default", "file PATH", "env NAME", "flag --x"

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "sources"}


assert [k.name for k in MASTER_KEYS] == [f.name for f in fields(MasterConfig)][:-1]


def _convert(key: Key, value: Any, source: str, from_text: bool) -> Any:
    """Check (and, for environment strings, parse) one value; raise ConfigError."""
    kind = key.kind
    what = f"{key.name} = {value!r} (from {source})"
    if from_text and isinstance(value, str) and kind is not str:
        text = value.strip()
        try:
            if kind is bool:
                if text.lower() not in ("1", "0", "true", "false", "yes", "no"):
                    raise ValueError(text)
                value = text.lower() in ("1", "true", "yes")
            else:
                value = kind(text)
        except ValueError:
            raise ConfigError(f"{what} is not {_kind_name(kind)}; allowed: "
                              f"{key.allowed or _kind_name(kind)}") from None
    if kind is float and type(value) is int:
        value = float(value)
    if type(value) is not kind:
        raise ConfigError(f"{what} has type {type(value).__name__}, not {_kind_name(kind)}; "
                          f"allowed: {key.allowed or _kind_name(kind)}")
    if key.check is not None and not key.check(value):
        raise ConfigError(f"{what} is out of range; allowed: {key.allowed}")
    return value


def _kind_name(kind: type) -> str:
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}[kind]


def read_toml(path: str | os.PathLike[str], table: str = "master") -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"cannot read the config file {path}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    if set(data) == {table} and isinstance(data[table], dict):
        data = data[table]        # a [master] (or [checkpoint]) table is accepted as well
    return data


def _layer(keys: tuple[Key, ...], by_name: dict[str, Key], env_prefix: str, table: str,
           config_file: str | os.PathLike[str] | None, env: Mapping[str, str],
           flags: Mapping[str, Any] | None) -> tuple[dict[str, Any], dict[str, str]]:
    """defaults < TOML file < environment (env_prefix + KEY) < flags; (values, sources)."""
    values = {k.name: k.default for k in keys}
    sources = {k.name: "default" for k in keys}
    if config_file is None and env.get(env_prefix + "CONFIG"):
        config_file = env[env_prefix + "CONFIG"]
    if config_file is not None:
        source = f"config file {config_file}"
        for name, value in read_toml(config_file, table).items():
            key = by_name.get(name)
            if key is None:
                raise ConfigError(f"unknown key {name!r} in {source}; known keys: "
                                  f"{', '.join(sorted(by_name))}")
            values[name] = _convert(key, value, source, from_text=False)
            sources[name] = source
    for key in keys:
        var = env_prefix + key.name.upper()
        if var in env:
            source = f"environment variable {var}"
            values[key.name] = _convert(key, env[var], source, from_text=True)
            sources[key.name] = source
    for name, value in (flags or {}).items():
        if value is None:
            continue
        key = by_name.get(name)
        if key is None:
            raise ConfigError(f"unknown option {name!r}")
        source = f"option --{name.replace('_', '-')}"
        values[name] = _convert(key, value, source, from_text=isinstance(value, str))
        sources[name] = source
    return values, sources


def load_master_config(config_file: str | os.PathLike[str] | None = None, *,
                       env: Mapping[str, str] | None = None,
                       flags: Mapping[str, Any] | None = None) -> MasterConfig:
    """Layer the sources; `flags` maps key names to values given on the command line (None
    means the flag was not given). The config file is `config_file`, else MWCLUSTER_CONFIG."""
    values, sources = _layer(MASTER_KEYS, MASTER_BY_NAME, ENV_PREFIX, "master", config_file,
                             os.environ if env is None else env, flags)
    return MasterConfig(**values, sources=sources)


# --- the checkpoint node ----------------------------------------------------------------------

CHECKPOINT_ENV_PREFIX = "MWCLUSTER_CHECKPOINT_"

CHECKPOINT_KEYS: tuple[Key, ...] = (
    Key("data_dir", str, "./mwcluster-checkpoint", "the node's own snapshots live here",
        lambda v: v != "", "a non-empty path"),
    Key("master", str, DEFAULT_CLIENT_ENDPOINT, "the master's ROUTER (FETCH, snapshots)",
        _endpoint, "a ZeroMQ endpoint such as tcp://127.0.0.1:5550"),
    Key("subscribe", str, DEFAULT_PUB_ENDPOINT, "the master's PUB (the log stream)",
        _endpoint, "a ZeroMQ endpoint such as tcp://127.0.0.1:5551"),
    Key("status_endpoint", str, "", "ROUTER answering STATUS and PING with this node's status "
        "(empty: none; port 0 picks a free port)", lambda v: v == "" or _endpoint(v),
        "empty or a ZeroMQ endpoint such as tcp://127.0.0.1:5552"),
    Key("period_s", float, 60.0, "a checkpoint at least this often (when there is something "
        "new)", lambda v: 0.05 <= v <= 86_400, "a number of seconds within 0.05..86400"),
    Key("txns", int, 100_000, "a checkpoint after this many records, if the period is not "
        "over first", _at_least(1), "an integer >= 1"),
    Key("keep_snapshots", int, 2, "local snapshots kept", _at_least(1), "an integer >= 1"),
    Key("heartbeat_interval_s", float, 1.0, "the master's heartbeat interval: silence longer "
        "than 3 of them sends the node back to FETCH", lambda v: 0.01 <= v <= 60,
        "a number of seconds within 0.01..60"),
    Key("request_timeout_s", float, 2.0, "how long a request to the master may take before it "
        "is retried (with backoff)", lambda v: 0.05 <= v <= 600,
        "a number of seconds within 0.05..600"),
    Key("fetch_max_bytes", int, 4 << 20, "record payload asked for per FETCH",
        _at_least(1024), "an integer >= 1024"),
    Key("upload_bytes_per_s", int, 32 << 20, "pace of a snapshot upload to the master, in "
        "bytes per second (0: unpaced); a burst slows the master's answers", _at_least(0),
        "an integer >= 0"),
    Key("snapshot_chunk_bytes", int, 1 << 20, "bytes per SNAPSHOT_CHUNK request",
        lambda v: 1024 <= v <= 1 << 20, "an integer within 1024..1048576"),
    Key("snapshot_credit", int, 4, "SNAPSHOT_CHUNK requests kept in flight",
        lambda v: 1 <= v <= 64, "an integer within 1..64"),
    Key("max_buffer_bytes", int, 64 << 20, "stream payload buffered while fetching; more is "
        "dropped and fetched later", _at_least(0), "an integer >= 0"),
    Key("recent_requests", int, 100_000, "how many recent (client_id, request_id) the replica "
        "remembers: its snapshots carry them, so a master restarting from one (or this node, "
        "promoted) answers their retries; set it as the master's", _at_least(0),
        "an integer >= 0"),
    Key("metrics_port", int, 0, "Prometheus metrics on metrics_host:PORT; 0 turns them off",
        lambda v: 0 <= v <= 65535, "0..65535"),
    Key("metrics_host", str, "127.0.0.1", "address the metrics HTTP server listens on",
        lambda v: v != "", "a host name or address"),
    Key("ready_file", str, "", "write a JSON file with the status endpoint and pid once "
        "running (empty: none)"),
    Key("promote_client_endpoint", str, "", "the ROUTER this node serves on as master once "
        "promoted (empty: it cannot be promoted)", lambda v: v == "" or _endpoint(v),
        "empty or a ZeroMQ endpoint such as tcp://127.0.0.1:5560"),
    Key("promote_pub_endpoint", str, "", "the PUB of its log stream once promoted",
        lambda v: v == "" or _endpoint(v),
        "empty or a ZeroMQ endpoint such as tcp://127.0.0.1:5561"),
    Key("promote_data_dir", str, "", "the master data directory it writes and serves from "
        "once promoted (empty: DATA_DIR/master)"),
    Key("promote_durability", str, "", "the promoted master's default durability (empty: the "
        "old master's, read from its STATUS at the promotion; sync when it cannot be asked)",
        choices=("", *MASTER_LEVELS)),
    Key("audit_log", str, "", "append an audit line per PROMOTE, VOTE and refusal at the "
        "status endpoint to this file, and once promoted every line the master audits "
        "(empty: no audit log)"),
    Key("failover", str, "manual", "manual: only `mwcluster promote` promotes this node; "
        "auto: it also promotes itself when the master is silent and a client votes",
        choices=tuple(mode.value for mode in FailoverMode)),
    Key("failover_timeout_s", float, 3.0, "auto failover: the master's silence needed before "
        "a vote can promote this node", lambda v: 0.1 <= v <= 3600,
        "a number of seconds within 0.1..3600"),
    *_security_keys(True, "the node's"),
)

CHECKPOINT_BY_NAME = {k.name: k for k in CHECKPOINT_KEYS}


@dataclass(frozen=True, slots=True)
class CheckpointConfig:
    data_dir: str
    master: str
    subscribe: str
    status_endpoint: str
    period_s: float
    txns: int
    keep_snapshots: int
    heartbeat_interval_s: float
    request_timeout_s: float
    fetch_max_bytes: int
    upload_bytes_per_s: int
    snapshot_chunk_bytes: int
    snapshot_credit: int
    max_buffer_bytes: int
    recent_requests: int
    metrics_port: int
    metrics_host: str
    ready_file: str
    promote_client_endpoint: str
    promote_pub_endpoint: str
    promote_data_dir: str
    promote_durability: str
    audit_log: str
    failover: str
    failover_timeout_s: float
    key_file: str
    server_key: str
    principals_dir: str
    insecure: bool
    sources: Mapping[str, str]

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "sources"}


assert [k.name for k in CHECKPOINT_KEYS] == [f.name for f in fields(CheckpointConfig)][:-1]


def load_checkpoint_config(config_file: str | os.PathLike[str] | None = None, *,
                           env: Mapping[str, str] | None = None,
                           flags: Mapping[str, Any] | None = None) -> CheckpointConfig:
    """The checkpoint node's configuration, layered like the master's: defaults < TOML file
    (`config_file`, else MWCLUSTER_CHECKPOINT_CONFIG; top-level keys or a [checkpoint]
    table) < MWCLUSTER_CHECKPOINT_<KEY> environment variables < flags."""
    values, sources = _layer(CHECKPOINT_KEYS, CHECKPOINT_BY_NAME, CHECKPOINT_ENV_PREFIX,
                             "checkpoint", config_file, os.environ if env is None else env,
                             flags)
    return CheckpointConfig(**values, sources=sources)


# --- the worker -------------------------------------------------------------------------------

WORKER_ENV_PREFIX = "MWCLUSTER_WORKER_"

WORKER_KEYS: tuple[Key, ...] = (
    Key("master", str, DEFAULT_CLIENT_ENDPOINT, "the master's ROUTER endpoint; several separated "
        "by commas (the master and the standby's promote endpoint) let the worker follow a "
        "failover", lambda v: all(_endpoint(e.strip()) for e in v.split(",")),
        "a ZeroMQ endpoint such as tcp://127.0.0.1:5550, or several separated by commas"),
    Key("worker_id", str, "", "this worker's id (empty: host name and process id)"),
    Key("slots", int, 0, "tasks run at once, one thread each (0: the CPU count)",
        lambda v: 0 <= v <= 4096, "0..4096"),
    Key("executor", str, "process", "where a slot runs its handler: process (a child "
        "process per slot: CPU-bound handlers use every core), thread (in the worker: for "
        "I/O-bound handlers) or dask (on the Dask cluster of dask_scheduler; needs "
        "mwcluster[dask])", choices=("process", "thread", "dask")),
    Key("dask_scheduler", str, "", "the Dask scheduler's address (tcp://HOST:PORT) that the "
        "dask executor runs tasks on (empty: none)",
        lambda v: v == "" or "://" in v, "empty or an address such as tcp://10.0.0.5:8786"),
    Key("task_timeout_s", float, 0.0, "an attempt running longer is failed as timed out, "
        "then retried by its job's rules; its process is stopped (process executor), its "
        "thread abandoned (thread) or its Dask task cancelled (dask); a job's timeout_s "
        "overrides it; 0: no limit", _at_least(0), "a number of seconds >= 0"),
    Key("task_memory_mb", int, 0, "the address space a handler's process may use, in MiB "
        "(process executor; past it the handler gets MemoryError); 0: no limit",
        _at_least(0), "an integer >= 0"),
    Key("handlers", str, "", "comma-separated Python modules that register task handlers on "
        "import (e.g. mwcluster.demo.job)"),
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
    *_security_keys(False, "the worker's"),
)

WORKER_BY_NAME = {k.name: k for k in WORKER_KEYS}


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    master: str
    worker_id: str
    slots: int
    executor: str
    dask_scheduler: str
    task_timeout_s: float
    task_memory_mb: int
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
    key_file: str
    server_key: str
    principals_dir: str
    insecure: bool
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
    values, sources = _layer(WORKER_KEYS, WORKER_BY_NAME, WORKER_ENV_PREFIX, "worker",
                             config_file, os.environ if env is None else env, flags)
    return WorkerConfig(**values, sources=sources)
