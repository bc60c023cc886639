"""What lets an operator see a worker: its status endpoint and its Prometheus metrics.

    owner thread (node.py)                   status thread               metrics HTTP thread
    ───────────────────────────────          ─────────────               ───────────────────
    after each batch of events:              ROUTER (status_endpoint)    GET /metrics
      publish(): snapshot() of the      ──▶  STATUS: render(snap, now)   collect():
      machine into a fresh dict, one         PING: nil                     render(snap, now)
      reference assignment                   else: an error reply          -> mwcluster_worker_*

The owner thread replaces `ObservedWorker.snap` with a new dict (core/worker_status.snapshot)
and never changes a dict once published; the two readers only load that reference and build
their own answer from it (core/worker_status.render turns the monotonic times into ages at the
moment they answer). So no lock, and no structure is shared while one side changes it.

`CountingClient` wraps the worker's Client on the owner thread: it notes when the master last
answered (any answer, a refusal too) and counts the requests that timed out after every retry
and the refusals, for the status.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Callable

from mwcluster.core import worker_status as ws
from mwcluster.errors import BadState, MwclusterError, NotFound, RequestTimeout

log = logging.getLogger(__name__)

_CALLS = frozenset({"register_worker", "worker_heartbeat", "request_tasks", "report_progress",
                    "finish_task", "leave_worker"})


class CountingClient:
    """The worker's Client, with the figures of its exchanges (owner thread only)."""

    def __init__(self, client: Any, clock_ms: Callable[[], int]) -> None:
        self.client = client
        self._clock_ms = clock_ms
        self.last_exchange_at_ms: int | None = None
        self.timed_out = 0
        self.refused = 0

    @property
    def endpoint(self) -> str | None:
        endpoint = getattr(self.client, "endpoint", None)
        return endpoint if isinstance(endpoint, str) else None

    def __getattr__(self, name: str):
        method = getattr(self.client, name)
        if name not in _CALLS:
            return method

        def call(*args, **kwargs):
            try:
                result = method(*args, **kwargs)
            except RequestTimeout:
                self.timed_out += 1
                raise
            except MwclusterError as exc:    # an answer all the same
                self.last_exchange_at_ms = self._clock_ms()
                if not isinstance(exc, (BadState, NotFound)):   # stale attempts are not
                    self.refused += 1                           # refusals of the worker
                raise
            self.last_exchange_at_ms = self._clock_ms()
            return result

        return call

    def close(self) -> None:
        self.client.close()


class ObservedWorker:
    """The status snapshot, the status thread and the metrics server of one WorkerNode."""

    def __init__(self, node, clock_ms: Callable[[], int]) -> None:
        self.node = node
        self._clock_ms = clock_ms
        self.started_at_ms = clock_ms()
        self.snap: dict[str, Any] = {}           # replaced whole by publish(), never changed
        self.status_endpoint: str | None = None
        self.metrics_port: int | None = None
        self._ctx = None
        self._status = None
        self._metrics = None
        self.security = None             # security.curve.ServerSecurity of the status endpoint
        self.insecure_warning: str | None = None

    def start(self) -> None:
        """Bind the status endpoint and the metrics port of the config (either may be off).
        A bind failure raises MwclusterError with nothing left open."""
        cfg = self.node.config
        try:
            if cfg.status_endpoint:
                import zmq

                from mwcluster.nodes.status_endpoint import StatusThread
                from mwcluster.security.curve import ServerSecurity, protect

                # served with the worker's own key to the principals of principals_dir
                self.security = ServerSecurity.from_config(
                    cfg.key_file, cfg.principals_dir, cfg.server_key)
                self.insecure_warning = protect([cfg.status_endpoint],
                                                self.security is not None, cfg.insecure,
                                                "worker's status endpoint")
                if self.insecure_warning:
                    log.warning(self.insecure_warning)
                self._ctx = zmq.Context()
                self._status = StatusThread(self._ctx, cfg.status_endpoint, self.status,
                                            self._epoch, role="worker",
                                            security=self.security)
                self.status_endpoint = self._status.endpoint
                self._status.start()
            if cfg.metrics_port:
                from mwcluster.nodes.metrics import MetricsServer
                from mwcluster.nodes.worker.metrics import WorkerCollector

                self._metrics = MetricsServer(WorkerCollector(self.status), cfg.metrics_host,
                                              cfg.metrics_port)
                self.metrics_port = self._metrics.port
        except BaseException:
            self.stop()
            raise
        if self.status_endpoint:
            log.info("worker %s: status on %s", cfg.worker_id, self.status_endpoint)
        if self.metrics_port:
            log.info("worker %s: metrics on %s:%d", cfg.worker_id, cfg.metrics_host,
                     self.metrics_port)

    def publish(self) -> None:
        """Owner thread: replace the snapshot (one reference assignment)."""
        node = self.node
        client = node._client
        counting = client if isinstance(client, CountingClient) else None
        shell = ws.Shell(
            master_endpoint=(counting.endpoint if counting else None) or node.config.master,
            started_at_ms=self.started_at_ms,
            last_exchange_at_ms=counting.last_exchange_at_ms if counting else None,
            requests_timed_out=counting.timed_out if counting else 0,
            requests_refused=counting.refused if counting else 0,
            status_endpoint=self.status_endpoint, metrics_port=self.metrics_port,
            pid=os.getpid())
        self.snap = ws.snapshot(node.machine, shell, self._clock_ms())

    # --- readers (any thread) ---------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        from mwcluster.security.curve import security_status

        status = ws.render(self.snap, self._clock_ms())
        status["security"] = security_status(
            self.security, self.insecure_warning,
            self._status.unauthorized if self._status is not None else 0)
        status["security"]["curve"] = self.node.credentials is not None
        cfg = self.node.config
        status["executor"] = {"kind": cfg.executor, "busy_slots": self.node.busy,
                              "task_timeout_s": cfg.task_timeout_s or None,
                              "task_memory_mb": cfg.task_memory_mb or None}
        if self.node.dask is not None:
            status["executor"]["dask"] = self.node.dask.status()
        return status

    def reload_principals(self) -> None:
        """SIGHUP: read the status endpoint's principals again (a bad directory keeps
        those in force)."""
        if self.security is None:
            return
        try:
            log.info("worker %s: principals reloaded: %d allowed", self.node.config.worker_id,
                     self.security.reload())
        except MwclusterError as exc:
            log.error("worker %s: the principals were not reloaded (those in force stay): "
                      "%s", self.node.config.worker_id, exc)

    def _epoch(self) -> int:
        return self.snap.get("epoch") or 0

    def stop(self) -> None:
        """Stop the status thread (it closes its socket) and the metrics server."""
        stopped = True
        if self._status is not None:
            stopped = self._status.stop()
            self._status = None
        if self.security is not None:
            self.security.stop()
            self.security = None
        if self._ctx is not None and stopped:     # term() would wait for an open socket
            self._ctx.term()
            self._ctx = None
        if self._metrics is not None:
            self._metrics.close()
            self._metrics = None
