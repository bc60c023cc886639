"""The checkpoint node's Prometheus metrics, from its status map.

The loop replaces `CheckpointCollector.status` with a fresh `CheckpointNode.status()` dict
about once a second; the collector, on the HTTP server's thread, only reads that immutable
reference, so it never sees a structure the loop is changing. Served by
nodes/metrics.MetricsServer (its own registry and thread), like the master's.
"""

from __future__ import annotations

from typing import Any

from mwcluster.core.follower import Phase

_GAUGES = (
    # (metric, status field, help)
    ("replica_txid", "replica_txid", "Last txid applied to the replica"),
    ("master_durable_txid", "master_durable_txid", "The master's durable txid, as last seen"),
    ("lag_records", "lag_records", "Records the master has made durable that the replica "
     "has not applied"),
    ("lag_seconds", "lag_s", "Seconds since the replica last held every durable record"),
    ("epoch", "epoch_seen", "The master's epoch, as last seen"),
    ("last_checkpoint_txid", "last_checkpoint_txid", "Txid of the newest local checkpoint"),
    ("last_checkpoint_timestamp_seconds", "last_checkpoint_time",
     "Unix time the newest local checkpoint was taken"),
    ("last_checkpoint_size_bytes", "last_checkpoint_size_bytes",
     "Size of the newest local checkpoint file"),
    ("last_checkpoint_duration_seconds", "last_checkpoint_duration_s",
     "How long writing the newest local checkpoint took"),
)
_COUNTERS = (
    ("checkpoints", "checkpoints_total", "Local checkpoints written"),
    ("checkpoint_failures", "checkpoint_failures", "Local checkpoints that failed"),
    ("reloads", "reloads", "Reloads of the replica from the master's snapshot and log"),
    ("gaps", "gaps", "Gaps found in the log stream"),
    ("epoch_changes", "epoch_changes", "Master epoch changes seen"),
    ("fetch_failures", "fetch_failures", "FETCH requests that failed"),
    ("stale_messages", "stale_messages", "Late stream messages ignored (an older epoch, or a "
     "heartbeat overtaken by later batches)"),
)


class CheckpointCollector:
    def __init__(self) -> None:
        self.status: dict[str, Any] = {}

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        status = self.status
        for name, field, text in _GAUGES:
            value = status.get(field)
            if value is not None:
                yield GaugeMetricFamily(f"mwcluster_checkpoint_{name}", text, value=value)
        for name, field, text in _COUNTERS:
            yield CounterMetricFamily(f"mwcluster_checkpoint_{name}", text,
                                      value=status.get(field) or 0)
        yield CounterMetricFamily(
            "mwcluster_checkpoint_unauthorized_requests",
            "Requests at the status endpoint refused by the access check (docs/security.md)",
            value=(status.get("security") or {}).get("unauthorized_requests") or 0)
        checks = CounterMetricFamily("mwcluster_checkpoint_digest_checks",
                                     "Replica digest checks against the master's heartbeats",
                                     labels=["result"])
        checks.add_metric(["ok"], status.get("checks_passed") or 0)
        checks.add_metric(["mismatch"], status.get("checks_failed") or 0)
        yield checks
        state = GaugeMetricFamily("mwcluster_checkpoint_state", "1 for the current state",
                                  labels=["state"])
        for phase in Phase:
            state.add_metric([phase.value], 1 if status.get("state") == phase.value else 0)
        yield state
