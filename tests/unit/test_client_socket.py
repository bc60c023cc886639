"""The client against an in-test ROUTER stub on 127.0.0.1: what goes on the wire, retries
that resend the same request, timeouts, stale replies and pipelining.

The stub runs in a thread and answers each request through a handler that returns the reply
frames to send (none to drop the reply, several to duplicate it). Nothing waits with sleep:
retries get an injected sleep that only records its argument.
"""

from __future__ import annotations

import pytest
import zmq
from helpers import EPOCH, Sleeps, Stub, make_client

from mwcluster import errors
from mwcluster.client import Pipeline
from mwcluster.core.namespace import Stat
from mwcluster.core.values import decode, encode
from mwcluster.wire.protocol import ErrorCode, Op, encode_error, encode_reply


@pytest.fixture
def stub():
    s = Stub()
    yield s
    s.close()


def test_requests_on_the_wire_and_results(stub):
    with make_client(stub.endpoint, client_id=b"c1") as client:
        txid = client.put("/a/b", {"n": 1}, durability="sync")
        assert txid == 1
        assert client.get("/a/b") == {"n": 1}
        assert client.get("/missing") is None
        assert client.stat("/a/b") == Stat(1, 1, 1, len(encode({"n": 1})))
        assert client.stat("/missing") is None
        assert client.status() == {"epoch": EPOCH, "txid": 1}
        assert client.ping() == EPOCH
        assert client.epoch == EPOCH
    reqs = [r for _, r in stub.seen()]
    assert [r.op for r in reqs] == [Op.PUT, Op.GET, Op.GET, Op.STAT, Op.STAT, Op.STATUS,
                                    Op.PING]
    put = reqs[0]
    assert put.client_id == b"c1" and put.durability == 2
    assert put.args == ["/a/b", encode({"n": 1}), None]
    assert decode(put.args[1]) == {"n": 1}
    ids = [r.request_id for r in reqs]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)


def test_errors_are_typed_and_carry_the_masters_message(stub):
    with make_client(stub.endpoint) as client:
        client.put("/k", 1)
        with pytest.raises(errors.BadVersion, match="/k is at version 1, not 5"):
            client.put("/k", 2, expected_version=5)
        with pytest.raises(errors.UnknownOp, match="stub: op 2"):
            client.merge("/k", {"a": 1})
        assert client.put("/k", 3, expected_version=1) == 2    # the client still works


def test_a_dropped_reply_is_retried_with_the_same_request_id_on_a_new_connection():
    dropped = []

    def handler(req, identity):
        if req.op == Op.PUT and not dropped:
            dropped.append(req.request_id)
            return []
        return stub.answer(req)

    stub = Stub(handler)
    try:
        sleeps = Sleeps()
        with make_client(stub.endpoint, timeout_s=0.3, retries=3, sleep=sleeps) as client:
            assert client.put("/x", "v") == 1
            assert client.reconnects == 1 and len(sleeps) == 1 and 0 < sleeps[0] <= 2.0
        (id1, first), (id2, second) = stub.seen()
        assert first.request_id == second.request_id == dropped[0]
        assert first.client_id == second.client_id
        assert first.args == second.args
        assert id1 != id2            # the retry came on a new DEALER
    finally:
        stub.close()


def test_no_reply_at_all_raises_request_timeout_after_bounded_attempts():
    stub = Stub(lambda req, identity: [])
    try:
        sleeps = Sleeps()
        with make_client(stub.endpoint, timeout_s=0.1, retries=2, sleep=sleeps) as client:
            with pytest.raises(errors.RequestTimeout, match="no reply within 0.1 s"):
                client.put("/x", 1)
            assert len(sleeps) == 2
            assert sleeps[1] >= 0.1 - 0.05     # exponential backoff (with jitter)
        seen = stub.seen()
        assert len(seen) == 3
        assert len({r.request_id for _, r in seen}) == 1
    finally:
        stub.close()


def test_stale_and_duplicate_replies_are_dropped():
    def handler(req, identity):
        replies = stub.answer(req)
        if req.op == Op.PUT:
            # a late answer to an old request and a duplicate of this one
            return [encode_reply(req.request_id - 1000, EPOCH, 0, 99, 99)] + replies * 2
        return replies

    stub = Stub(handler)
    try:
        with make_client(stub.endpoint) as client:
            assert client.put("/a", 1) == 1
            assert client.get("/a") == 1       # the duplicate PUT reply does not answer it
            assert client.stale_replies == 2
    finally:
        stub.close()


def test_a_malformed_reply_is_dropped():
    def handler(req, identity):
        return [b"\xc1not msgpack", b"\x93\x01\x02\x03"] + stub.answer(req)

    stub = Stub(handler)
    try:
        with make_client(stub.endpoint) as client:
            assert client.ping() == EPOCH
            assert client.bad_replies == 2
    finally:
        stub.close()


def test_an_error_without_request_id_answers_the_only_request_in_flight():
    stub = Stub(lambda req, identity: [encode_error(0, EPOCH, ErrorCode.TOO_LARGE, "too big")])
    try:
        with make_client(stub.endpoint) as client:
            with pytest.raises(errors.MessageTooLarge, match="too big"):
                client.put("/a", 1)
    finally:
        stub.close()


def test_a_request_over_the_size_limit_is_refused_before_sending(stub):
    with make_client(stub.endpoint, max_message_bytes=1000) as client:
        with pytest.raises(errors.MessageTooLarge, match="the limit is 1000"):
            client.put("/a", b"x" * 2000)
        assert client.put("/a", b"x" * 10) == 1
    assert len(stub.seen()) == 1


def test_a_value_msgpack_cannot_carry_is_refused_locally(stub):
    with make_client(stub.endpoint) as client:
        with pytest.raises(errors.InvalidRecord, match="cannot be encoded"):
            client.put("/a", object())
    assert stub.seen() == []


def test_failover_to_the_next_endpoint():
    stub = Stub()
    ctx = zmq.Context.instance()
    probe = ctx.socket(zmq.ROUTER)
    dead = f"tcp://127.0.0.1:{probe.bind_to_random_port('tcp://127.0.0.1')}"
    probe.close(linger=0)                 # nothing listens there any more
    try:
        with make_client([dead, stub.endpoint], timeout_s=0.2) as client:
            assert client.ping() == EPOCH
            assert client.endpoint == stub.endpoint
    finally:
        stub.close()


def test_closed_client_refuses_requests(stub):
    client = make_client(stub.endpoint)
    client.close()
    client.close()
    with pytest.raises(errors.MwclusterError, match="closed"):
        client.ping()


def test_pipeline_returns_results_in_order_when_replies_come_reversed():
    window = 8
    held: list = []

    def handler(req, identity):
        held.append(stub.answer(req)[0])
        if len(held) < window:
            return []
        out = held[::-1]
        held.clear()
        return out

    stub = Stub(handler)
    try:
        with make_client(stub.endpoint) as client:
            with client.pipeline(window=window, batch=1) as p:    # a request per message
                futures = []
                for i in range(4 * window):
                    futures.append(p.put(f"/p/{i % 5}", i))
                    assert p._inflight <= window
            assert all(f.done() for f in futures)
            txids = [f.result() for f in futures]
            # the stub's txids follow arrival order, which is submission order
            assert txids == list(range(1, 4 * window + 1))
            assert p.results() == txids and p.futures == []
        seen = [r for _, r in stub.seen()]
        assert [r.args[0] for r in seen] == [f"/p/{i % 5}" for i in range(4 * window)]
    finally:
        stub.close()


def test_pipeline_errors_stay_with_their_request(stub):
    with make_client(stub.endpoint) as client:
        p: Pipeline = client.pipeline(window=4)
        ok = p.put("/a", 1)
        bad = p.put("/a", 2, expected_version=7)
        got = p.get("/a")
        p.wait()
        assert ok.result() == 1
        assert isinstance(bad.exception(), errors.BadVersion)
        with pytest.raises(errors.BadVersion):
            bad.result()
        assert got.result() == 1
        with pytest.raises(errors.BadVersion):
            p.results()


def test_pipeline_resends_everything_in_flight_after_a_lost_reply():
    lost = []

    def handler(req, identity):
        if req.op == Op.PUT and req.args[0] == "/p/3" and not lost:
            lost.append(req.request_id)
            return []
        return stub.answer(req)

    stub = Stub(handler)
    try:
        with make_client(stub.endpoint, timeout_s=0.3) as client:
            with client.pipeline(window=4, batch=1) as p:     # a request per message
                futures = [p.put(f"/p/{i}", i) for i in range(10)]
            assert [f.result() for f in futures][3] is not None
            assert client.reconnects == 1
        by_id: dict[int, int] = {}
        for _, r in stub.seen():
            by_id[r.request_id] = by_id.get(r.request_id, 0) + 1
        assert by_id[lost[0]] == 2       # resent once, with the same id
        assert len(by_id) == 10
    finally:
        stub.close()


def test_sync_calls_and_a_pipeline_share_one_socket(stub):
    with make_client(stub.endpoint) as client:
        p = client.pipeline(window=16)
        futures = [p.put(f"/s/{i}", i) for i in range(10)]
        assert client.get("/nothing") is None      # replies for the pipeline are kept
        p.wait()
        assert sorted(f.result() for f in futures) == list(range(1, 11))
        assert client.stale_replies == 0


def test_listing_and_paging(stub):
    with make_client(stub.endpoint) as client:
        for i in range(7):
            client.put(f"/l/{i}/x", i)
        client.put("/l/top", 0)
        assert client.children("/l") == ["0", "1", "2", "3", "4", "5", "6", "top"]
        assert client.list("/l/", 3) == ["/l/0/x", "/l/1/x", "/l/2/x"]
        assert list(client.iter_keys("/l/", page=3)) == [f"/l/{i}/x" for i in range(7)] + [
            "/l/top"]
        assert client.delete("/l", recursive=True) == 9
        with pytest.raises(errors.NoNode):
            client.delete("/l")
        with pytest.raises(errors.Truncated, match="no records"):
            client.fetch(1)


def test_a_master_shutting_down_gets_the_request_again_after_a_backoff():
    refused = []

    def handler(req, identity):
        if not refused:
            refused.append(req.request_id)
            return [encode_error(req.request_id, EPOCH, ErrorCode.SHUTTING_DOWN,
                                 "the master is stopping; nothing was applied, retry later")]
        return stub.answer(req)

    stub = Stub(handler)
    try:
        sleeps = Sleeps()
        with make_client(stub.endpoint, sleep=sleeps) as client:
            assert client.put("/k", 1) == 1
            assert client.reconnects == 1 and len(sleeps) == 1
        assert [r.request_id for _, r in stub.seen()] == refused * 2
    finally:
        stub.close()


def test_shutting_down_every_time_ends_with_the_masters_error():
    stub = Stub(lambda req, identity: [encode_error(req.request_id, EPOCH,
                                                    ErrorCode.SHUTTING_DOWN, "stopping")])
    try:
        sleeps = Sleeps()
        with make_client(stub.endpoint, retries=2, sleep=sleeps) as client:
            with pytest.raises(errors.ShuttingDown, match="stopping"):
                client.ping()
            assert len(sleeps) == 2 and len(stub.seen()) == 3
    finally:
        stub.close()
