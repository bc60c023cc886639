"""Stopping and crashing a real master process, then restarting it on the same data.

The writer is a bare DEALER keeping a window of PUTs in flight; key i is `/w/{i:06d}` and one
DEALER's requests are applied in the order sent, so key order is txid order and "a prefix of
the history" means "keys 0..k-1 for some k".
"""

from __future__ import annotations

import os

import msgpack
import pytest

from mwcluster.testing import MasterProcess, RawDealer
from mwcluster.wire.protocol import ErrorCode, Op

pytestmark = pytest.mark.fault


def pack(value) -> bytes:
    return msgpack.packb(value, use_bin_type=True)


def key(i: int) -> str:
    return f"/w/{i:06d}"


def write_window(dealer: RawDealer, count: int, window: int, durability: int = 0,
                 on_ack=None, durability_of=None) -> dict[int, int]:
    """PUT keys 0..count-1 with `window` requests in flight; return {i: txid} of the acks.
    `on_ack(acked)` may return True to stop early (requests stay in flight);
    `durability_of(i)`, if given, is key i's durability instead of `durability`."""
    sent = 0
    acked: dict[int, int] = {}
    index_of: dict[int, int] = {}
    while len(acked) < count:
        while sent < count and sent - len(acked) < window:
            level = durability if durability_of is None else durability_of(sent)
            index_of[dealer.send(Op.PUT, [key(sent), pack(sent), None], level)] = sent
            sent += 1
        reply = dealer.recv()
        assert reply is not None and reply.status == 0, reply
        acked[index_of[reply.request_id]] = reply.txid
        if on_ack is not None and on_ack(acked):
            break
    return acked


def keys_present(dealer: RawDealer) -> list[str]:
    reply = dealer.call(Op.LIST, ["/w/", 100_000, None])
    assert reply.status == 0
    return reply.result


def test_sigterm_under_load_then_restart_loses_nothing_acknowledged(tmp_path):
    data = tmp_path / "data"
    with MasterProcess(data) as master, RawDealer(master.client_endpoint) as dealer:
        acked = write_window(dealer, 2000, 128)
        before = dealer.status()
        merge = dealer.call(Op.PUT, ["/cfg", pack({"a": 1}), None])
        # a burst still in flight when SIGTERM arrives: each is answered ok or shutting_down
        burst = {dealer.send(Op.PUT, [f"/late/{i}", pack(i), None]): i for i in range(20000)}
        assert master.terminate() == 0
        answers = {}
        while (reply := dealer.recv(timeout_s=0.5)) is not None:
            answers[burst[reply.request_id]] = reply.status
        assert set(answers.values()) <= {0, ErrorCode.SHUTTING_DOWN}
    with MasterProcess(data) as master, RawDealer(master.client_endpoint) as dealer:
        status = dealer.status()
        assert status["epoch"] == 2 and master.epoch == 2
        assert status["recovery_s"] > 0 and status["recovery"]["replayed_records"] >= 2001
        assert keys_present(dealer) == [key(i) for i in sorted(acked)]
        assert dealer.call(Op.GET, [key(1999)]).result[0] == pack(1999)
        assert dealer.call(Op.GET, ["/cfg"]).result[3] == merge.txid
        # every late key, however many were applied before the stop (up to the burst)
        late = set(dealer.call(Op.LIST, ["/late/", 100_000, None]).result)
        for i, code in answers.items():
            assert (f"/late/{i}" in late) == (code == 0), (i, code)
        assert status["txid"] == before["txid"] + 1 + len(late)


def test_sigint_stops_gracefully_too(tmp_path):
    with MasterProcess(tmp_path / "data") as master, RawDealer(master.client_endpoint) as d:
        assert d.call(Op.PUT, ["/x", pack(1), None]).status == 0
        assert master.interrupt() == 0
    with MasterProcess(tmp_path / "data") as master, RawDealer(master.client_endpoint) as d:
        assert d.call(Op.GET, ["/x"]).result[0] == pack(1)


def test_kill9_in_sync_mode_loses_no_acknowledged_write(tmp_path):
    data = tmp_path / "data"
    with MasterProcess(data, durability="sync") as master, \
            RawDealer(master.client_endpoint) as dealer:
        acked = write_window(dealer, 100_000, 64, on_ack=lambda a: len(a) >= 1500)
        assert master.kill() < 0          # requests are still in flight
    with MasterProcess(data) as master, RawDealer(master.client_endpoint) as dealer:
        present = set(keys_present(dealer))
        assert {key(i) for i in acked} <= present
        for i in list(acked)[-50:]:
            value, _version, created, _modified = dealer.call(Op.GET, [key(i)]).result
            assert (value, created) == (pack(i), acked[i])


@pytest.mark.parametrize("flush_interval_ms", ["0", "20"])
def test_kill9_in_async_mode_recovers_a_prefix_of_the_history(tmp_path, flush_interval_ms):
    data = tmp_path / "data"
    env = dict(os.environ, MWCLUSTER_FLUSH_INTERVAL_MS=flush_interval_ms)
    with MasterProcess(data, durability="async", env=env) as master, \
            RawDealer(master.client_endpoint) as dealer:
        acked = write_window(dealer, 100_000, 256, on_ack=lambda a: len(a) >= 5000)
        assert master.kill() < 0
    with MasterProcess(data) as master, RawDealer(master.client_endpoint) as dealer:
        present = keys_present(dealer)
        assert present == [key(i) for i in range(len(present))]   # a prefix, no holes
        status = dealer.status()
        assert status["txid"] == len(present) and status["epoch"] == 2
        for i in range(0, len(present), 97):
            assert dealer.call(Op.GET, [key(i)]).result[0] == pack(i)
        # what was lost is the tail of the acknowledged history only
        assert all(acked[i] == i + 1 for i in range(len(present)) if i in acked)


def test_kill9_with_a_flush_interval_keeps_every_sync_ack_and_what_came_before(tmp_path):
    """Async puts wait out a 50 ms flush interval; every 10th put is sync and urges the
    write. After kill -9: a prefix of the history, holding every sync-acknowledged put, so
    also every async put sent before it (docs/durability.md, "The flush policy")."""
    data = tmp_path / "data"
    env = dict(os.environ, MWCLUSTER_FLUSH_INTERVAL_MS="50")
    with MasterProcess(data, durability="async", env=env) as master, \
            RawDealer(master.client_endpoint) as dealer:
        acked = write_window(dealer, 100_000, 64, on_ack=lambda a: len(a) >= 3000,
                             durability_of=lambda i: 2 if i % 10 == 9 else 1)
        assert master.kill() < 0
    with MasterProcess(data) as master, RawDealer(master.client_endpoint) as dealer:
        present = keys_present(dealer)
        assert present == [key(i) for i in range(len(present))]   # a prefix, no holes
        synced = [i for i in acked if i % 10 == 9]
        assert synced and max(synced) < len(present), (max(synced), len(present))


@pytest.mark.parametrize("stop", ["sigterm", "kill9"])
def test_a_retried_request_is_applied_once_also_across_a_restart(tmp_path, stop):
    data = tmp_path / "data"
    cid = b"retrying-client"
    with MasterProcess(data, durability="sync") as master, \
            RawDealer(master.client_endpoint, client_id=cid) as dealer:
        first = dealer.call(Op.PUT, ["/r/a", pack(1), None], request_id=77)
        merge = dealer.call(Op.MULTI, [[[1, "/r/b", pack(2), 0], [4, "/r/a", 1]]],
                            request_id=78)
        assert (first.status, merge.status) == (0, 0)
        again = dealer.call(Op.PUT, ["/r/a", pack(1), None], request_id=77)
        assert (again.txid, again.result) == (first.txid, first.result)
        assert dealer.status()["txid"] == merge.txid
        if stop == "sigterm":
            assert master.terminate() == 0
        else:
            assert master.kill() < 0
    with MasterProcess(data) as master, RawDealer(master.client_endpoint,
                                                  client_id=cid) as dealer:
        for rid, original in ((77, first), (78, merge)):
            retry = dealer.call(Op.PUT, ["/r/a", pack(1), None], request_id=rid)
            assert (retry.status, retry.txid, retry.result) == (0, original.txid,
                                                                original.result)
            assert retry.epoch == 2
        status = dealer.status()
        assert status["txid"] == merge.txid and status["retried_requests"] == 2
        fresh = dealer.call(Op.PUT, ["/r/a", pack(1), None], request_id=79)
        assert fresh.txid == merge.txid + 1
