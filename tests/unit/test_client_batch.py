"""The batching pipeline against the in-test ROUTER stub: what goes on the wire (BATCH
messages of at most K requests, flushed when K are queued, when the window is full and when
the caller waits), how sub-replies reach their futures, resends, splits and refusals."""

from __future__ import annotations

import pytest
from helpers import EPOCH, Stub, make_client

from mwcluster import errors
from mwcluster.core.values import decode
from mwcluster.wire.protocol import ErrorCode, Op, encode_error, encode_reply


@pytest.fixture
def stub():
    s = Stub()
    yield s
    s.close()


def messages(stub):
    """(op, number of requests) of every message the stub got, in order."""
    return [(req.op, len(req.args) if req.op == Op.BATCH else 1) for _, req in stub.seen()]


def test_requests_go_k_per_message_and_results_keep_their_order(stub):
    with make_client(stub.endpoint) as client:
        with client.pipeline(window=64, batch=16) as p:
            futures = [p.put(f"/b/{i:03d}", i) for i in range(100)]
            reads = [p.get(f"/b/{i:03d}") for i in range(0, 100, 10)]
        assert [f.result() for f in futures] == list(range(1, 101))
        assert [f.result() for f in reads] == list(range(0, 100, 10))
        assert p.results()[:3] == [1, 2, 3]
    sent = messages(stub)
    assert all(op == Op.BATCH and n <= 16 for op, n in sent)
    assert sum(n for _, n in sent) == 110
    assert len(sent) == 7                    # 6 full batches of 16, then the last 14
    ids = [sub[0] for _, req in stub.seen() for sub in req.args]
    assert ids == sorted(ids) and len(set(ids)) == 110


def test_waiting_on_a_queued_request_sends_what_is_queued(stub):
    with make_client(stub.endpoint) as client:
        p = client.pipeline(window=100, batch=64)
        first = p.put("/w/1", "a")
        p.put("/w/2", "b")
        assert not stub.seen()              # queued, not sent
        assert first.result() == 1          # waiting sends both in one BATCH
        assert messages(stub) == [(Op.BATCH, 2)]
        third = p.get("/w/2")
        assert third.result() == "b"        # a lone request goes as itself
        assert messages(stub)[-1] == (Op.GET, 1)
        assert p.results() == [1, 2, "b"]


def test_a_full_window_flushes_a_short_batch(stub):
    with make_client(stub.endpoint) as client:
        with client.pipeline(window=5, batch=4) as p:
            for i in range(12):
                p.put(f"/f/{i}", i)
        assert p.results() == list(range(1, 13))
    sent = messages(stub)
    assert max(n for _, n in sent) <= 4 and sum(n for _, n in sent) == 12


def test_errors_stay_with_their_request_inside_a_batch(stub):
    with make_client(stub.endpoint) as client:
        client.put("/e", 1)
        p = client.pipeline(window=16, batch=8)
        ok = p.put("/e", 2, expected_version=1)
        bad = p.put("/e", 3, expected_version=7)
        missing = p.delete("/nothing")
        after = p.get("/e")
        p.wait()
        assert ok.result() == 2 and after.result() == 2
        with pytest.raises(errors.BadVersion, match="version"):
            bad.result()
        assert isinstance(missing.exception(), errors.NoNode)
        assert missing.exception().epoch == EPOCH
        with pytest.raises(errors.BadVersion):
            p.results()


def test_a_lost_batch_reply_is_resent_whole_with_the_same_ids():
    lost = []

    def handler(req, identity):
        if req.op == Op.BATCH and not lost:
            lost.append(req)
            return []
        return stub.answer(req)

    stub = Stub(handler)
    try:
        with make_client(stub.endpoint, timeout_s=0.3) as client:
            with client.pipeline(window=8, batch=8) as p:
                futures = [p.put(f"/l/{i}", i) for i in range(8)]
            assert [f.result() for f in futures] == list(range(1, 9))
            assert client.reconnects == 1
        (_, first), (_, again) = stub.seen()
        assert first.request_id == again.request_id and first.args == again.args
        assert [s[0] for s in first.args] == [f.request_id for f in futures]
    finally:
        stub.close()


def test_a_batch_refused_whole_fails_every_request_in_it():
    def handler(req, identity):
        if req.op == Op.BATCH:
            return [encode_error(req.request_id, EPOCH, ErrorCode.TOO_LARGE,
                                 "a BATCH carries at most 2 sub-requests")]
        return stub.answer(req)

    stub = Stub(handler)
    try:
        with make_client(stub.endpoint) as client:
            p = client.pipeline(window=8, batch=3)
            futures = [p.put(f"/r/{i}", i) for i in range(3)]
            p.wait()
            for f in futures:
                with pytest.raises(errors.MessageTooLarge, match="at most 2"):
                    f.result()
    finally:
        stub.close()


def test_malformed_sub_replies_fail_only_their_request():
    def handler(req, identity):
        if req.op == Op.BATCH:
            subs = [[s[0], 0, 5, 1] for s in req.args]
            subs[1] = [999, 0, 0, None]             # answers another request id
            return [encode_reply(req.request_id, EPOCH, 0, 5, subs)]
        return stub.answer(req)

    stub = Stub(handler)
    try:
        with make_client(stub.endpoint) as client:
            p = client.pipeline(window=8, batch=3)
            a, b, c = (p.put(f"/m/{i}", i) for i in range(3))
            p.wait()
            assert a.result() == 5 and c.result() == 5
            with pytest.raises(errors.MwclusterError, match="malformed sub-reply"):
                b.result()
    finally:
        stub.close()


def test_a_wrong_number_of_sub_replies_fails_the_batch():
    def handler(req, identity):
        if req.op == Op.BATCH:
            return [encode_reply(req.request_id, EPOCH, 0, 0, [])]
        return stub.answer(req)

    stub = Stub(handler)
    try:
        with make_client(stub.endpoint) as client:
            p = client.pipeline(window=8, batch=2)
            a, b = p.ping(), p.ping()
            p.wait()
            assert "expected 2 sub-replies" in str(a.exception())
            assert "expected 2 sub-replies" in str(b.exception())
    finally:
        stub.close()


def test_batches_over_the_frame_limit_are_split_and_a_lone_giant_fails(stub):
    with make_client(stub.endpoint, max_message_bytes=4096) as client:
        p = client.pipeline(window=64, batch=32)
        small = [p.put(f"/s/{i}", "v" * 300) for i in range(31)]
        giant = p.put("/s/giant", "v" * 5000)
        p.wait()
        assert [f.result() for f in small] == list(range(1, 32))
        with pytest.raises(errors.MessageTooLarge, match="limit is 4096"):
            giant.result()
        assert client.get("/s/giant") is None
    sent = messages(stub)
    assert len(sent) > 2 and sum(n for op, n in sent if op != Op.GET) == 31   # split
    assert all(len(frame_args) * 300 < 4096 for op, frame_args in
               ((req.op, req.args) for _, req in stub.seen()) if op == Op.BATCH)


def test_batch_must_be_within_the_masters_limit(stub):
    with make_client(stub.endpoint) as client:
        for bad in (0, 1025):
            with pytest.raises(ValueError, match="batch must be within 1..1024"):
                client.pipeline(batch=bad)
        assert client.pipeline(batch=1024).batch == 1024


def test_batched_values_round_trip(stub):
    values = [{"n": i, "tags": ["a", "b"], "raw": bytes([i])} for i in range(20)]
    with make_client(stub.endpoint) as client:
        with client.pipeline(window=32, batch=7) as p:
            for i, v in enumerate(values):
                p.put(f"/v/{i}", v)
            gets = [p.get(f"/v/{i}") for i in range(20)]
        assert [g.result() for g in gets] == values
        assert decode(stub.store["/v/3"][0]) == values[3]


def test_a_pipeline_without_a_batch_size_batches_what_queues_while_requests_are_in_flight(stub):
    with make_client(stub.endpoint) as client:
        with client.pipeline(window=200, linger_ms=60_000) as p:   # the linger never ends here
            first = p.put("/a/000", 0)
            assert client._pending and not p._queue      # nothing was in flight: sent at once
            futures = [p.put(f"/a/{i:03d}", i) for i in range(1, 150)]
        assert [f.result() for f in [first, *futures]] == list(range(1, 151))
    # the first alone, then full BATCHes of AUTO_BATCH (64), then the rest when the block waits
    assert messages(stub) == [(Op.PUT, 1), (Op.BATCH, 64), (Op.BATCH, 64), (Op.BATCH, 21)]


def test_an_idle_pipeline_sends_each_request_at_once(stub):
    with make_client(stub.endpoint) as client:
        p = client.pipeline(linger_ms=60_000)
        for i in range(3):
            assert p.put("/idle", i).result() == i + 1
    assert messages(stub) == [(Op.PUT, 1)] * 3


def test_a_queued_request_waits_no_longer_than_the_linger(stub):
    with make_client(stub.endpoint) as client:
        with client.pipeline(window=100, linger_ms=0) as p:
            for i in range(5):
                p.put(f"/l/{i}", i)
                assert not p._queue          # past the linger: sent as the request comes
        assert p.results() == [1, 2, 3, 4, 5]
    assert sum(n for _, n in messages(stub)) == 5


def test_a_pipeline_checks_its_batch_and_linger(stub):
    with make_client(stub.endpoint) as client:
        with pytest.raises(ValueError, match="or None to batch"):
            client.pipeline(batch=0)
        with pytest.raises(ValueError, match="linger_ms"):
            client.pipeline(linger_ms=-1)
