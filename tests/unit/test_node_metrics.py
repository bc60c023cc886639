"""The checkpoint node's and the worker's Prometheus collectors count the requests their
status endpoints refused (status security.unauthorized_requests), as the master's
mwcluster_errors_total{code="unauthorized"} does for its own."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from mwcluster.nodes.checkpoint.metrics import CheckpointCollector
from mwcluster.nodes.worker.metrics import WorkerCollector


def exposition(collector) -> str:
    registry = CollectorRegistry()
    registry.register(collector)
    return generate_latest(registry).decode()


def test_refusals_at_a_nodes_status_endpoint_are_counted_in_its_metrics():
    checkpoint = CheckpointCollector()
    checkpoint.status = {"security": {"unauthorized_requests": 3}}
    assert "mwcluster_checkpoint_unauthorized_requests_total 3.0" in exposition(checkpoint)
    worker = WorkerCollector(lambda: {"security": {"unauthorized_requests": 2}})
    assert "mwcluster_worker_unauthorized_requests_total 2.0" in exposition(worker)
    plain = WorkerCollector(lambda: {})
    assert "mwcluster_worker_unauthorized_requests_total 0.0" in exposition(plain)
