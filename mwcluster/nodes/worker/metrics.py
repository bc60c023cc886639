"""A worker's Prometheus metrics, from its status map (nodes/worker/observe.py).

The collector runs on the metrics server's thread and calls `status()`, which renders the
snapshot the owner thread last published (an immutable dict), so it never reads a structure
the owner is changing. Served by nodes/metrics.MetricsServer, like the master's.
"""

from __future__ import annotations

from typing import Any, Callable

_GAUGES = (
    # (metric, status field, help)
    ("registered", "registered", "1 while the worker is registered with a master"),
    ("epoch", "epoch", "The master's epoch at the last registration"),
    ("slots", "slots", "Tasks the worker runs at once"),
    ("free_slots", "free_slots", "Slots free for new tasks"),
    ("tasks_running", "tasks_running", "Attempts whose handler runs now"),
    ("finishes_unreported", "finishes_unreported",
     "Finished attempts whose result the master has not acknowledged yet"),
    ("dropped_handlers_running", "dropped_handlers_running",
     "Handlers of given-up attempts that have not returned yet (they hold a slot)"),
    ("uptime_seconds", "uptime_s", "Seconds since the worker started"),
    ("last_exchange_age_seconds", "last_exchange_age_s",
     "Seconds since the master last answered a request of this worker"),
)
_COUNTERS = (
    ("tasks_started", "tasks_started", "Attempts started"),
    ("tasks_succeeded", "tasks_succeeded", "Attempts whose handler returned"),
    ("tasks_failed", "tasks_failed", "Attempts whose handler raised, crashed or timed out"),
    ("tasks_dropped", "tasks_dropped",
     "Attempts given up because they were stale or cancelled at the master"),
    ("tasks_abandoned", "tasks_abandoned", "Attempts still running when a stop gave up on them"),
    ("tasks_timed_out", "tasks_timed_out", "Attempts failed for running past their timeout"),
    ("progress_reports_sent", "progress_sent", "Progress reports sent to the master"),
    ("progress_reports_coalesced", "progress_coalesced",
     "Progress reports replaced by a newer one before they were sent"),
    ("registrations", "registrations", "Registrations with the master (the first included)"),
    ("reconnects", "reconnects", "Times the master stopped answering and the worker reconnected"),
    ("requests_timed_out", "requests_timed_out",
     "Requests the master left unanswered after every retry"),
    ("requests_refused", "requests_refused",
     "Requests the master refused (other than stale attempts)"),
)


class WorkerCollector:
    def __init__(self, status: Callable[[], dict[str, Any]]) -> None:
        self.status = status

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        status = self.status()
        for name, field, text in _GAUGES:
            value = status.get(field)
            if value is not None:
                yield GaugeMetricFamily(f"mwcluster_worker_{name}", text, value=float(value))
        for name, field, text in _COUNTERS:
            yield CounterMetricFamily(f"mwcluster_worker_{name}", text,
                                      value=status.get(field) or 0)
        yield CounterMetricFamily(
            "mwcluster_worker_unauthorized_requests",
            "Requests at the status endpoint refused by the access check (docs/security.md)",
            value=(status.get("security") or {}).get("unauthorized_requests") or 0)
        progress = GaugeMetricFamily("mwcluster_worker_task_progress",
                                     "The newest progress (0..1) of each running attempt",
                                     labels=["job_id", "index"])
        running = GaugeMetricFamily("mwcluster_worker_task_running_seconds",
                                    "How long each running attempt has run",
                                    labels=["job_id", "index"])
        for task in status.get("tasks") or ():
            labels = [str(task["job_id"]), str(task["index"])]
            progress.add_metric(labels, task["progress"] or 0.0)
            running.add_metric(labels, task["running_s"] or 0.0)
        yield progress
        yield running
