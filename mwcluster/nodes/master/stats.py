"""The master's figures: plain counters kept by the event loop, fsync timing from the journal's
I/O seam, and their Prometheus exposition.

Nothing here is on the per-request path except integer increments made by the loop itself:
the loop counts requests per operation and errors per code in plain lists and dicts, and adds
each drained batch's duration to per-operation histograms once per batch. Once per tick (about
a second) the loop publishes an immutable snapshot (`MasterStats.snapshot`); the Prometheus
collector, which runs on the HTTP server's thread, reads only that snapshot, so it never
iterates a structure the loop is changing. The metrics are therefore up to one tick old.

fsync times come from `TimedJournalIO`, a JournalIO that wraps the real one (or a test's
FaultyJournalIO) and times each fsync/fdatasync on the flusher thread, its only writer.
"""

from __future__ import annotations

import logging
import threading
import time
from bisect import bisect_left
from collections import deque
from collections.abc import Iterator
from typing import Any

from mwcluster.storage.fsutil import JournalIO, WrappedJournalIO

log = logging.getLogger(__name__)

# seconds; request latency inside the master and fsync durations share one scale
LATENCY_BOUNDS_S = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                    0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
FSYNC_SAMPLES = 4096
# A peer counts as connected while it sent something this recently (STATUS `peers`; the loop
# forgets peers silent for longer).
PEER_WINDOW_S = 30.0


class Histogram:
    """A fixed-bucket histogram of plain ints; one writer thread."""

    __slots__ = ("bounds", "counts", "total", "count")

    def __init__(self, bounds: tuple[float, ...] = LATENCY_BOUNDS_S) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0
        self.count = 0

    def add(self, value: float, n: int = 1) -> None:
        self.counts[bisect_left(self.bounds, value)] += n
        self.total += value * n
        self.count += n

    def copy(self) -> tuple[tuple[float, ...], list[int], float, int]:
        return self.bounds, list(self.counts), self.total, self.count


class TimedJournalIO(WrappedJournalIO):
    """Delegates every call to `inner`; times fsync and fdatasync (the flusher's calls)."""

    def __init__(self, inner: JournalIO | None = None, slow_fsync_s: float = 0.05) -> None:
        super().__init__(inner)
        self.slow_fsync_s = slow_fsync_s
        self.histogram = Histogram()
        self.samples: deque[float] = deque(maxlen=FSYNC_SAMPLES)
        self.slow = 0

    def _timed(self, call, fd: int) -> None:
        t0 = time.perf_counter()
        call(fd)
        elapsed = time.perf_counter() - t0
        self.histogram.add(elapsed)
        self.samples.append(elapsed)
        if elapsed > self.slow_fsync_s:
            self.slow += 1
            if self.slow & (self.slow - 1) == 0:   # the 1st, 2nd, 4th, 8th...: no log flood
                log.warning("slow fsync: %.1f ms (threshold %.1f ms; %d slow so far)",
                            elapsed * 1000, self.slow_fsync_s * 1000, self.slow)

    def fsync(self, fd: int) -> None:
        self._timed(self.inner.fsync, fd)

    def fdatasync(self, fd: int) -> None:
        self._timed(self.inner.fdatasync, fd)

    def percentiles_ms(self) -> tuple[float | None, float | None]:
        """p50 and p99 of the recent fsyncs, in milliseconds (None before the first)."""
        for _ in range(3):
            try:
                samples = sorted(self.samples)
                break
            except RuntimeError:   # appended to by the flusher while copied
                continue
        else:
            return None, None
        if not samples:
            return None, None
        n = len(samples)
        return (round(samples[n // 2] * 1000, 3),
                round(samples[min(n - 1, int(n * 0.99))] * 1000, 3))


class MasterStats:
    """Counters owned by the event loop. `snapshot` is replaced whole once per tick."""

    def __init__(self) -> None:
        self.requests_by_op: dict[int, int] = {}
        self.latency_by_op: dict[int, Histogram] = {}
        self.sync_wait = Histogram()   # sync replies: from parking to the covering fsync
        self.errors_by_code: dict[int, int] = {}
        self.dropped = 0            # messages that could not be answered at all
        self.retries = 0            # mutations answered from the idempotency table
        self.requests_total = 0
        self._rate_points: deque[tuple[float, int]] = deque(maxlen=6)
        self.snapshot: dict[str, Any] = {}
        self.lock = threading.Lock()   # guards only the swap of `snapshot`

    def add_batch(self, ops: dict[int, int], elapsed_s: float) -> None:
        """Account one drained batch: how many requests of each op, and how long it took
        from the first read to the last reply (each request's latency inside the master is
        at most that)."""
        by_op = self.requests_by_op
        lat = self.latency_by_op
        total = 0
        for op, n in ops.items():
            by_op[op] = by_op.get(op, 0) + n
            h = lat.get(op)
            if h is None:
                h = lat[op] = Histogram()
            h.add(elapsed_s, n)
            total += n
        self.requests_total += total

    def sample_rate(self, now: float) -> None:
        self._rate_points.append((now, self.requests_total))

    def requests_per_s(self) -> float:
        points = self._rate_points
        if len(points) < 2:
            return 0.0
        (t0, n0), (t1, n1) = points[0], points[-1]
        return round((n1 - n0) / (t1 - t0), 1) if t1 > t0 else 0.0

    def publish(self, status: dict[str, Any], fsync: TimedJournalIO) -> None:
        snap = {
            "status": status,
            "requests_by_op": dict(self.requests_by_op),
            "latency_by_op": {op: h.copy() for op, h in self.latency_by_op.items()},
            "errors_by_code": dict(self.errors_by_code),
            "sync_wait": self.sync_wait.copy(),
            "dropped": self.dropped,
            "retries": self.retries,
            "fsync": fsync.histogram.copy(),
            "slow_fsyncs": fsync.slow,
        }
        with self.lock:
            self.snapshot = snap


# --- Prometheus -------------------------------------------------------------------------

_GAUGES = (  # status key -> (metric name, help)
    ("epoch", "mwcluster_epoch", "master epoch (incremented at every start)"),
    ("txid", "mwcluster_txid", "last applied txid"),
    ("durable_txid", "mwcluster_durable_txid", "last txid covered by an fsync"),
    ("loss_window_s", "mwcluster_loss_window_seconds", "age of the oldest unflushed record"),
    ("buffered_bytes", "mwcluster_buffered_bytes", "journal bytes not yet fsynced"),
    ("journal_bytes", "mwcluster_journal_bytes", "bytes in journal segments"),
    ("journal_segments", "mwcluster_journal_segments", "journal segment files"),
    ("last_snapshot_txid", "mwcluster_last_snapshot_txid", "txid of the newest snapshot"),
    ("last_snapshot_age_s", "mwcluster_last_snapshot_age_seconds", "age of the newest snapshot"),
    ("requests_per_s", "mwcluster_requests_per_second", "requests over the last seconds"),
    ("uptime_s", "mwcluster_uptime_seconds", "seconds since the master started serving"),
    ("recovery_s", "mwcluster_recovery_seconds", "how long recovery took at this start"),
    ("peers", "mwcluster_peers", "distinct peers seen in the last 30 s"),
    ("keys", "mwcluster_keys", "keys in the namespace"),
    ("jobs", "mwcluster_jobs", "jobs"),
    ("workers", "mwcluster_workers", "workers"),
    ("journal_failed", "mwcluster_journal_failed", "1 while the journal refuses writes"),
    ("parked_sync_replies", "mwcluster_parked_sync_replies", "sync replies waiting for fsync"),
)
_COORDINATION_GAUGES = (  # the status's "coordination" map (coordination.py)
    ("leases", "mwcluster_leases", "leases held now"),
    ("leased_keys", "mwcluster_leased_keys", "keys attached to a lease"),
    ("watches_waiting", "mwcluster_watches_waiting", "watches parked at the master"),
)
_COORDINATION_COUNTERS = (
    ("lease_grants", "mwcluster_lease_grants", "leases granted since the start"),
    ("lease_keepalives", "mwcluster_lease_keepalives", "keepalives answered"),
    ("lease_revokes", "mwcluster_lease_revokes", "leases revoked by a client"),
    ("lease_expiries", "mwcluster_lease_expiries", "leases this master expired"),
    ("watch_answers", "mwcluster_watch_answers", "WATCH replies sent"),
    ("watch_events", "mwcluster_watch_events", "events sent in WATCH replies"),
    ("watch_compacted", "mwcluster_watch_compacted", "WATCH requests answered compacted"),
)


class MasterCollector:
    """A prometheus_client collector over the latest `MasterStats.snapshot`."""

    def __init__(self, stats: MasterStats, op_names: dict[int, str],
                 code_names: dict[int, str]) -> None:
        self.stats = stats
        self.op_names = op_names
        self.code_names = code_names

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import (CounterMetricFamily, GaugeMetricFamily,
                                            HistogramMetricFamily)

        with self.stats.lock:
            snap = self.stats.snapshot
        if not snap:
            return
        status = snap["status"]
        for key, name, doc in _GAUGES:
            value = status.get(key)
            if value is not None:
                yield GaugeMetricFamily(name, doc, value=float(value))
        requests = CounterMetricFamily("mwcluster_requests", "requests by operation",
                                       labels=["op"])
        for op, n in sorted(snap["requests_by_op"].items()):
            requests.add_metric([self.op_names.get(op, str(op))], n)
        yield requests
        latency = HistogramMetricFamily("mwcluster_request_latency_seconds",
                                        "time from reading a request to its reply, by "
                                        "operation (the batch it was drained in)",
                                        labels=["op"])
        for op, hist in sorted(snap["latency_by_op"].items()):
            latency.add_metric([self.op_names.get(op, str(op))], *_buckets(hist))
        yield latency
        sync_wait = HistogramMetricFamily("mwcluster_sync_wait_seconds",
                                          "how long sync replies waited for their fsync")
        sync_wait.add_metric([], *_buckets(snap["sync_wait"]))
        yield sync_wait
        errors = CounterMetricFamily("mwcluster_errors", "error replies by code",
                                     labels=["code"])
        for code, n in sorted(snap["errors_by_code"].items()):
            errors.add_metric([self.code_names.get(code, str(code))], n)
        yield errors
        coordination = status.get("coordination") or {}
        for key, name, doc in _COORDINATION_GAUGES:
            yield GaugeMetricFamily(name, doc, value=float(coordination.get(key, 0)))
        for key, name, doc in _COORDINATION_COUNTERS:
            yield CounterMetricFamily(name, doc, value=coordination.get(key, 0))
        yield CounterMetricFamily("mwcluster_dropped_messages",
                                  "messages dropped without a reply", value=snap["dropped"])
        yield CounterMetricFamily("mwcluster_retried_requests",
                                  "mutations answered from the idempotency table",
                                  value=snap["retries"])
        fsync = HistogramMetricFamily("mwcluster_fsync_seconds", "journal fsync durations")
        fsync.add_metric([], *_buckets(snap["fsync"]))
        yield fsync
        yield CounterMetricFamily("mwcluster_slow_fsyncs", "fsyncs over the slow threshold",
                                  value=snap["slow_fsyncs"])


def _buckets(hist: tuple[tuple[float, ...], list[int], float, int]
             ) -> tuple[list[tuple[str, float]], float]:
    bounds, counts, total, _count = hist
    cumulative = 0
    out = []
    for bound, n in zip(bounds, counts):
        cumulative += n
        out.append((repr(bound), cumulative))
    cumulative += counts[-1]
    out.append(("+Inf", cumulative))
    return out, total
