"""The Prometheus HTTP endpoint every node serves its metrics on (`metrics_port`): its own
registry and thread. Each node brings its collector (nodes/master/stats.py,
nodes/checkpoint/metrics.py, nodes/worker/metrics.py), which reads only an immutable snapshot
its owner replaces, never a structure the owner is changing.
"""

from __future__ import annotations

from typing import Any

from mwcluster.errors import MwclusterError


class MetricsServer:
    """The Prometheus HTTP endpoint, on its own registry and thread."""

    def __init__(self, collector: Any, host: str, port: int) -> None:
        try:
            from prometheus_client import CollectorRegistry, start_http_server
        except ImportError:
            raise MwclusterError("--metrics-port needs the prometheus-client package "
                                 "(pip install prometheus-client), or leave metrics off "
                                 "with --metrics-port 0") from None
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(collector)
        try:
            self._server, self._thread = start_http_server(port, addr=host,
                                                           registry=self.registry)
        except OSError as exc:
            raise MwclusterError(f"cannot serve metrics on {host}:{port}: {exc}") from None
        self.port = self._server.server_port

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
