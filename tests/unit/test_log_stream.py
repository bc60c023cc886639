"""The master's log stream without its socket (nodes/master/stream.py): batches end where a
drain ended and carry the digest there; nothing goes out before a drain end is durable."""

from __future__ import annotations

import pytest

from mwcluster.core import records as r
from mwcluster.core.values import encode
from mwcluster.engine import Engine
from mwcluster.nodes.master.stream import LogStream
from mwcluster.wire.protocol import TOPIC_HEARTBEAT, TOPIC_LOG, decode_pub


class Ring:
    def __init__(self) -> None:
        self.points: list[tuple[int, int]] = []

    def record(self, txid: int, digest: int) -> None:
        self.points.append((txid, digest))


@pytest.fixture
def engine(tmp_path):
    eng = Engine(tmp_path / "d", background=False)
    eng.open()
    yield eng
    eng.close()


def put(engine: Engine, n: int) -> list[int]:
    digests = []
    for i in range(n):
        engine.submit(r.Put(f"/k/{i % 3}", encode(i)))
        digests.append(engine.state.digest)
    return digests


def batches(bodies):
    return [decode_pub(TOPIC_LOG, body)[1] for body in bodies]


def test_a_batch_ends_at_the_last_drain_end_inside_it_with_the_digest_there(engine):
    ring = Ring()
    stream = LogStream(engine, 7, ring, batch_bytes=1 << 20)
    first = put(engine, 3)
    stream.drain_ended()                       # a drain applied txids 1..3
    second = put(engine, 2)
    stream.drain_ended()                       # and another one 4..5
    assert stream.publish(engine.journal.durable_txid) is None     # nothing durable yet
    engine.journal.flush()
    out = batches(stream.publish(engine.journal.durable_txid))
    assert [(epoch, lo, hi, digest) for epoch, lo, hi, _recs, digest in out] == [
        (7, 1, 5, second[-1])]
    assert [t for t, _e, _p in out[0][3]] == [1, 2, 3, 4, 5]
    assert ring.points == [(5, second[-1])] and first[-1] != second[-1]
    assert stream.published_txid == 5
    assert stream.publish(5) == [] and stream.published_txid == 5


def test_a_batch_larger_than_the_limit_within_one_drain_carries_no_digest(engine):
    stream = LogStream(engine, 1, Ring(), batch_bytes=1)          # one record a batch
    digests = put(engine, 3)
    stream.drain_ended()
    engine.journal.flush()
    out = batches(stream.publish(3))
    assert [(lo, hi, digest) for _e, lo, hi, _recs, digest in out] == [
        (1, 1, None), (2, 2, None), (3, 3, digests[-1])]


def test_records_after_the_last_durable_drain_end_wait(engine):
    stream = LogStream(engine, 1, Ring(), batch_bytes=1 << 20)
    put(engine, 2)
    stream.drain_ended()
    engine.journal.flush()
    put(engine, 2)                             # applied, a drain end, not durable
    stream.drain_ended()
    out = batches(stream.publish(2))
    assert [(lo, hi) for _e, lo, hi, _recs, _d in out] == [(1, 2)]
    engine.journal.flush()
    assert [(lo, hi) for _e, lo, hi, _recs, _d in batches(stream.publish(4))] == [(3, 4)]


def test_a_heartbeat_carries_the_digest_only_when_idle(engine):
    ring = Ring()
    stream = LogStream(engine, 2, ring, batch_bytes=1 << 20)
    digests = put(engine, 2)
    _topic, (epoch, durable, digest, now_ms) = decode_pub(TOPIC_HEARTBEAT,
                                                          stream.heartbeat(1234))
    assert (epoch, durable, digest, now_ms) == (2, 0, None, 1234)   # records not durable
    engine.journal.flush()
    _topic, (_e, durable, digest, _t) = decode_pub(TOPIC_HEARTBEAT, stream.heartbeat(1235))
    assert (durable, digest) == (2, digests[-1]) and ring.points == [(2, digests[-1])]
