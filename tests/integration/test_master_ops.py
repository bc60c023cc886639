"""A real master process on random 127.0.0.1 ports, driven by a bare DEALER.

One master serves the whole module (each test uses its own keys); tests that need a fresh
data directory or other options start their own.
"""

from __future__ import annotations

import os
import socket
import time
import urllib.request

import msgpack
import pytest

from mwcluster.testing import MasterProcess, MasterStartError, RawDealer
from mwcluster.wire.protocol import ErrorCode, Op

STATUS_FIELDS = {"epoch", "txid", "durable_txid", "loss_window_s", "buffered_bytes",
                 "journal_bytes", "journal_segments", "last_snapshot_txid",
                 "last_snapshot_age_s", "requests_per_s", "uptime_s", "recovery_s", "recovery",
                 "peers", "durability", "fsync_p50_ms", "fsync_p99_ms", "keys", "jobs",
                 "workers", "journal_failed", "last_error", "messages_total",
                 "batch_messages_total", "messages_per_drain", "records_since_snapshot",
                 "journal_bytes_since_snapshot", "journal_truncation"}


def pack(value) -> bytes:
    return msgpack.packb(value, use_bin_type=True)


@pytest.fixture(scope="module")
def master(tmp_path_factory):
    with MasterProcess(tmp_path_factory.mktemp("master") / "data") as m:
        yield m


@pytest.fixture
def dealer(master):
    with RawDealer(master.client_endpoint) as d:
        yield d


def test_ready_file_names_real_endpoints_and_epoch(master):
    assert master.client_endpoint.startswith("tcp://127.0.0.1:")
    assert not master.client_endpoint.endswith(":0")
    assert master.pub_endpoint != master.client_endpoint
    assert master.info["pid"] == master.pid and master.epoch == 1


def test_every_operation_end_to_end(dealer, master):
    r = dealer.call(Op.PUT, ["/ops/a", pack({"n": 1}), None])
    assert (r.status, r.epoch, r.result) == (0, master.epoch, 1) and r.txid > 0
    put_txid = r.txid
    r = dealer.call(Op.PUT, ["/ops/b/c", pack([1, 2]), 0], durability=2)
    assert r.status == 0 and r.txid == put_txid + 1
    assert dealer.call(Op.GET, ["/ops/a"]).result == [pack({"n": 1}), 1, put_txid, put_txid]
    assert dealer.call(Op.GET, ["/ops/none"]).result is None
    assert dealer.call(Op.STAT, ["/ops/b/c"]).result[0] == 1
    r = dealer.call(Op.MERGE, ["/ops/a", pack({"m": 2}), 1])
    assert (r.status, r.result) == (0, 2)
    assert msgpack.unpackb(dealer.call(Op.GET, ["/ops/a"]).result[0]) == {"n": 1, "m": 2}
    assert dealer.call(Op.CHILDREN, ["/ops", None]).result == ["a", "b"]
    assert dealer.call(Op.LIST, ["/ops/", 10, None]).result == ["/ops/a", "/ops/b/c"]
    r = dealer.call(Op.MULTI, [[[1, "/ops/m", pack(1), None], [4, "/ops/a", 2],
                                [3, "/ops/b/c", False, 1]]])
    assert (r.status, r.result) == (0, [1, None, 1])
    assert dealer.call(Op.DELETE, ["/ops", True, None]).result == 2
    assert dealer.call(Op.LIST, ["/ops/", 10, None]).result == []
    assert dealer.call(Op.PING).result is None
    r = dealer.call(Op.FETCH, [put_txid, 1 << 20])
    durable, records = r.result
    assert durable >= put_txid + 1 and records[0][0] == put_txid
    assert dealer.call(Op.SNAPSHOT_INFO).status == ErrorCode.NO_SNAPSHOT
    status = dealer.status()
    assert STATUS_FIELDS <= set(status)
    assert status["epoch"] == master.epoch and status["peers"] >= 1
    assert status["recovery"]["replayed_records"] == 0 and status["durability"] == "async"


def test_errors_over_the_wire(dealer):
    r = dealer.call(Op.PUT, ["/err/x", pack(1), 3])
    assert (r.status, r.result[0]) == (ErrorCode.NO_NODE, "no_node")
    dealer.send_frames(b"\x92not-a-request")
    r = dealer.recv()
    assert (r.status, r.request_id) == (ErrorCode.BAD_REQUEST, 0)
    dealer.send_frames(b"one", b"two", b"three")
    r = dealer.recv()
    assert r.status == ErrorCode.BAD_REQUEST and "3 frames" in r.result[1]
    assert dealer.call(Op.PING).status == 0


def test_many_requests_in_flight_are_all_answered_in_order_of_txid(dealer):
    n = 3000
    for i in range(n):
        dealer.send(Op.PUT, [f"/load/{i:05d}", pack(i), None])
    replies = [dealer.recv() for _ in range(n)]
    assert all(r is not None and r.status == 0 for r in replies)
    by_request = sorted(replies, key=lambda r: r.request_id)
    txids = [r.txid for r in by_request]
    assert txids == sorted(txids) and len(set(txids)) == n
    assert len(dealer.call(Op.LIST, ["/load/", 10_000, None]).result) == n


def test_sync_request_is_answered_only_once_durable(dealer):
    # durable_txid can only grow: once the sync reply is here, status must show it durable
    for i in range(20):
        r = dealer.call(Op.PUT, [f"/sync/{i}", pack(i), None], durability=2)
        assert r.status == 0
        assert dealer.status()["durable_txid"] >= r.txid


def batch(dealer, subs, *, request_id=None, client_id=None):
    """Send a BATCH of (request_id, op, durability, args) and return its reply."""
    r = dealer.call(Op.BATCH, [list(sub) for sub in subs], request_id=request_id,
                    client_id=client_id)
    assert r.status == 0, r
    return r


def test_a_batch_of_mixed_operations_end_to_end(dealer):
    before = dealer.status()
    r = batch(dealer, [(1, Op.PUT, 0, ["/bat/a", pack({"n": 1}), None]),
                       (2, Op.MERGE, 0, ["/bat/a", pack({"m": 2}), 1]),
                       (3, Op.GET, 0, ["/bat/a"]),
                       (4, Op.MULTI, 0, [[[1, "/bat/b", pack(2), 0], [4, "/bat/a", 2]]]),
                       (5, Op.LIST, 0, ["/bat/", 10, None]),
                       (6, Op.DELETE, 0, ["/bat", True, None]),
                       (7, Op.PING, 0, [])], request_id=900)
    first = before["txid"] + 1
    assert r.request_id == 900 and r.txid == first + 3
    assert [(s[0], s[1], s[2]) for s in r.result] == [
        (1, 0, first), (2, 0, first + 1), (3, 0, first + 1), (4, 0, first + 2),
        (5, 0, first + 2), (6, 0, first + 3), (7, 0, 0)]     # reads: the txid served at
    assert msgpack.unpackb(r.result[2][3][0]) == {"n": 1, "m": 2}
    assert r.result[4][3] == ["/bat/a", "/bat/b"] and r.result[5][3] == 2
    after = dealer.status()
    assert after["batch_messages_total"] == before["batch_messages_total"] + 1
    assert after["requests_total"] >= before["requests_total"] + 7


def test_a_bad_sub_request_inside_a_good_batch(dealer):
    r = batch(dealer, [(1, Op.PUT, 0, ["/bad/a", pack(1), None]),
                       "garbage",
                       (2, Op.PUT, 0, ["/bad/b"]),
                       (3, Op.BATCH, 0, []),
                       (4, 77, 0, []),
                       (5, Op.PUT, 0, ["/bad/c", pack(3), None])])
    assert [(s[0], s[1]) for s in r.result] == [
        (1, 0), (0, ErrorCode.BAD_REQUEST), (2, ErrorCode.BAD_REQUEST),
        (3, ErrorCode.BAD_REQUEST), (4, ErrorCode.UNKNOWN_OP), (5, 0)]
    assert r.result[5][2] == r.result[0][2] + 1
    assert dealer.call(Op.LIST, ["/bad/", 10, None]).result == ["/bad/a", "/bad/c"]


def test_a_batch_with_a_sync_sub_request_is_answered_once_durable(dealer):
    for i in range(10):
        r = batch(dealer, [(1 + 2 * i, Op.PUT, 1, [f"/bsync/{i}/a", pack(i), None]),
                           (2 + 2 * i, Op.PUT, 2, [f"/bsync/{i}/b", pack(i), None])])
        assert r.txid == r.result[1][2] > r.result[0][2]
        assert dealer.status()["durable_txid"] >= r.txid


def test_a_retried_batch_is_applied_once(dealer):
    subs = [(1, Op.PUT, 0, ["/retry/a", pack(1), None]),
            (2, Op.PUT, 0, ["/retry/a", pack(2), 1])]
    first = batch(dealer, subs, request_id=10)
    txid = dealer.status()["txid"]
    again = batch(dealer, subs, request_id=11)
    assert [s[:3] for s in again.result] == [s[:3] for s in first.result]
    assert dealer.status()["txid"] == txid
    assert dealer.call(Op.STAT, ["/retry/a"]).result[0] == 2


def test_a_batch_of_too_many_sub_requests_is_refused_whole(dealer):
    before = dealer.status()["txid"]
    subs = [[i + 1, Op.PUT, 0, [f"/many/{i}", pack(i), None]] for i in range(1025)]
    r = dealer.call(Op.BATCH, subs)
    assert r.status == ErrorCode.TOO_LARGE and "at most 1024" in r.result[1]
    assert dealer.status()["txid"] == before
    assert dealer.call(Op.BATCH, subs[:1024]).result[-1][1] == 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_metrics_endpoint_exposes_the_figures(tmp_path):
    pytest.importorskip("prometheus_client")
    port = _free_port()
    with MasterProcess(tmp_path / "data", extra_args=("--metrics-port", str(port))) as m, \
            RawDealer(m.client_endpoint) as d:
        assert m.metrics_port == port
        for i in range(10):
            d.call(Op.PUT, [f"/m/{i}", pack(i), None], durability=2)
        d.call(Op.LEASE_GRANT, [60_000], durability=2)
        d.call(Op.GET, ["/m/1"])
        d.call(Op.GET, [1])
        deadline = time.monotonic() + 10
        while True:   # the figures are refreshed about once a second
            text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) \
                .read().decode()
            if 'mwcluster_requests_total{op="get"} 2.0' in text:
                break
            assert time.monotonic() < deadline, text
            d.recv(timeout_s=0.1)
        for needle in ('mwcluster_requests_total{op="put"} 10.0',
                       'mwcluster_errors_total{code="bad_request"} 1.0',
                       "mwcluster_fsync_seconds_bucket", "mwcluster_slow_fsyncs_total",
                       'mwcluster_request_latency_seconds_count{op="put"} 10.0',
                       "mwcluster_sync_wait_seconds_count 11.0", "mwcluster_epoch 1.0",
                       "mwcluster_durable_txid 11.0", "mwcluster_loss_window_seconds",
                       "mwcluster_leases 1.0", "mwcluster_lease_grants_total 1.0",
                       "mwcluster_lease_expiries_total 0.0", "mwcluster_watches_waiting 0.0"):
            assert needle in text, needle


def test_a_second_master_on_the_same_data_dir_is_refused(master):
    with pytest.raises(MasterStartError, match="another master"):
        MasterProcess(master.data_dir).start()
    assert master.returncode is None


def test_a_bad_setting_stops_the_start_naming_its_source(tmp_path):
    env = {**os.environ, "MWCLUSTER_SEGMENT_BYTES": "lots"}
    with pytest.raises(MasterStartError, match="MWCLUSTER_SEGMENT_BYTES.*an integer"):
        MasterProcess(tmp_path / "data", env=env).start()
    assert not (tmp_path / "data").exists()
