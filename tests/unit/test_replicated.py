"""`replicated` durability (3) in the master's handlers, in memory: the reply is parked until
a standby's REPLICA_ACK reaches its txid, never released above the master's durable txid,
answered unavailable when no standby confirms in time; a BATCH with a replicated sub-request
is parked whole."""

from __future__ import annotations

import msgpack
import pytest

from mwcluster.core.durability import Durability
from mwcluster.engine import Engine
from mwcluster.nodes.master.handlers import Drain, Handlers
from mwcluster.nodes.master.stats import MasterStats
from mwcluster.wire.protocol import ErrorCode, Op, decode_reply, encode_request

EPOCH = 3
CID = b"c"


@pytest.fixture
def handlers(tmp_path):
    eng = Engine(tmp_path / "d", epoch=EPOCH)
    eng.open()
    yield Handlers(eng, EPOCH, MasterStats())
    eng.close()


def send(h, op, args, durability=0, rid=1, now=0.0):
    out = h.handle(b"peer", encode_request(CID, rid, op, list(args), durability), Drain(now))
    return None if out is None else decode_reply(out)


def put(key):
    return [key, msgpack.packb(1), None]


def hello(h, now=0.0):
    """A checkpoint node says hello: from now on a standby follows (for STANDBY_SILENT_S)."""
    assert send(h, Op.CHECKPOINT_HELLO, [None, h.replica_txid, None], rid=999, now=now).status == 0


def test_replicated_reply_waits_for_the_standby(handlers):
    h = handlers
    assert Durability.parse("replicated") == 3
    hello(h)
    assert send(h, Op.PUT, put("/a"), 3, rid=1) is None
    assert send(h, Op.PUT, put("/b"), 3, rid=2) is None
    assert h.engine.wait_durable(2, timeout=10)
    assert h.release_replicated(0.0) == []
    assert send(h, Op.REPLICA_ACK, [1], rid=3).status == 0
    out = h.release_replicated(0.0)
    assert [decode_reply(r).request_id for _i, r in out] == [1]
    assert send(h, Op.REPLICA_ACK, [50], rid=4).status == 0   # clamped to the durable txid
    assert h.replica_txid == 2
    out = h.release_replicated(0.0)
    assert [(decode_reply(r).request_id, decode_reply(r).txid) for _i, r in out] == [(2, 2)]
    # once the standby has it, a replicated write of an already acknowledged txid is sent
    assert send(h, Op.PUT, put("/b"), 3, rid=2).txid == 2     # a retry: answered at once


def test_unconfirmed_replicated_reply_becomes_unavailable(handlers):
    h = handlers
    hello(h, now=10.0)
    assert send(h, Op.PUT, put("/a"), 3, now=10.0) is None
    assert h.expire_replicated(12.0, 5.0) == []
    (ident, frame), = h.expire_replicated(16.0, 5.0)
    r = decode_reply(frame)
    assert ident == b"peer" and r.status == ErrorCode.UNAVAILABLE and "txid 1" in r.result[1]
    assert h.engine.state.txid == 1            # applied all the same


def test_batch_with_a_replicated_sub_request_is_parked_whole(handlers):
    h = handlers
    hello(h)
    subs = [[10, int(Op.PUT), 1, put("/x")], [11, int(Op.PUT), 3, put("/y")]]
    out = h.handle(b"peer", encode_request(CID, 6, Op.BATCH, subs), Drain(0.0))
    assert out is None
    assert h.engine.wait_durable(h.engine.state.txid, timeout=10)
    send(h, Op.REPLICA_ACK, [h.engine.state.txid], rid=7)
    (_ident, frame), = h.release_replicated(0.0)[-1:]
    r = decode_reply(frame)
    assert r.request_id == 6 and [s[0] for s in r.result] == [10, 11]
