"""Epoch fencing in memory: the 7th request field, the master's handlers once a higher epoch
is seen, the fence file, and the client moving to the next endpoint on `fenced` or on a
reply from a lower epoch (against ROUTER stubs on 127.0.0.1)."""

from __future__ import annotations

import msgpack
import pytest
from helpers import Stub

from mwcluster import Client, errors
from mwcluster.engine import Engine
from mwcluster.nodes.master.handlers import Drain, Handlers
from mwcluster.nodes.master.stats import MasterStats
from mwcluster.storage import fenced as fence_file
from mwcluster.wire.protocol import (
    ErrorCode,
    Op,
    ProtocolError,
    decode_reply,
    decode_request,
    encode_error,
    encode_reply,
    encode_request,
)

EPOCH = 7
CID = b"client-1"


@pytest.fixture
def engine(tmp_path):
    eng = Engine(tmp_path / "data", epoch=EPOCH)
    eng.open()
    yield eng
    eng.close()


def ask(h: Handlers, op, args=(), rid=1, epoch_seen=0):
    out = h.handle(b"peer", encode_request(CID, rid, op, list(args), 0, epoch_seen), Drain(0.0))
    return decode_reply(out)


def put(key: str) -> list:
    return [key, msgpack.packb(1), None]


def test_request_with_and_without_the_epoch_field():
    six = encode_request(CID, 5, Op.PING, [])
    assert len(msgpack.unpackb(six)) == 6
    assert decode_request(six).epoch_seen == 0
    seven = encode_request(CID, 5, Op.PING, [], 0, 9)
    assert len(msgpack.unpackb(seven)) == 7
    assert decode_request(seven).epoch_seen == 9
    bad = msgpack.packb([1, CID, 5, int(Op.PING), 0, [], "nine"])
    with pytest.raises(ProtocolError) as caught:
        decode_request(bad)
    assert caught.value.error == ErrorCode.BAD_REQUEST and caught.value.request_id == 5


def test_a_higher_epoch_fences_the_master_for_good(engine):
    fenced = []
    h = Handlers(engine, EPOCH, MasterStats(), status=lambda: {"ok": True},
                 on_fenced=fenced.append)
    assert ask(h, Op.PUT, put("/a"), rid=1, epoch_seen=EPOCH).status == 0   # equal: fine
    assert ask(h, Op.PUT, put("/b"), rid=2, epoch_seen=EPOCH - 1).status == 0
    assert fenced == [] and not h.fence.fenced
    r = ask(h, Op.PUT, put("/c"), rid=3, epoch_seen=EPOCH + 2)
    assert r.status == ErrorCode.FENCED and r.epoch == EPOCH and "epoch 9" in r.result[1]
    assert fenced == [EPOCH + 2] and h.fence.fenced_by == EPOCH + 2
    assert engine.state.ns.get_encoded("/c") is None             # nothing applied
    # later requests without any epoch are refused too: reads, writes, batches, job ops
    assert ask(h, Op.PUT, put("/d"), rid=4).status == ErrorCode.FENCED
    assert ask(h, Op.GET, ["/a"], rid=5).status == ErrorCode.FENCED
    assert ask(h, Op.BATCH, [[6, int(Op.GET), 0, ["/a"]]], rid=7).status == ErrorCode.FENCED
    assert ask(h, Op.WORKER_REGISTER, ["w", "", 1], rid=8).status == ErrorCode.FENCED
    # status, ping and the replication reads still work (the new master may fetch)
    assert ask(h, Op.STATUS, rid=9).status == 0
    assert ask(h, Op.PING, rid=10).status == 0
    assert engine.wait_durable(2, timeout=10)
    r = ask(h, Op.FETCH, [1, 1 << 20], rid=11)
    assert r.status == 0 and [t for t, _e, _p in r.result[1]] == [1, 2]
    # an even higher epoch is remembered, without a second fencing call
    ask(h, Op.PING, rid=12, epoch_seen=EPOCH + 5)
    assert fenced == [EPOCH + 2] and h.fence.fenced_by == EPOCH + 5


def test_a_batch_envelope_carries_the_epoch_for_its_sub_requests(engine):
    h = Handlers(engine, EPOCH, MasterStats())
    r = ask(h, Op.BATCH, [[1, int(Op.PUT), 0, put("/x")]], rid=2, epoch_seen=EPOCH + 1)
    assert r.status == ErrorCode.FENCED
    assert engine.state.txid == 0


def test_a_master_opened_fenced_refuses_at_once(engine):
    h = Handlers(engine, EPOCH, MasterStats(), fenced_by=EPOCH + 1)
    assert h.fence.fenced_by == EPOCH + 1
    assert ask(h, Op.PUT, put("/a")).status == ErrorCode.FENCED


def test_fence_file_round_trip_and_damage(tmp_path):
    assert fence_file.read_fenced(tmp_path, 3) is None
    fence_file.write_fenced(tmp_path, 3, 5)
    assert fence_file.read_fenced(tmp_path, 3) == 5
    raw = bytearray((tmp_path / "fenced").read_bytes())
    raw[12] ^= 0xFF
    (tmp_path / "fenced").write_bytes(bytes(raw))
    assert fence_file.read_fenced(tmp_path, 3) == 4     # damaged: fenced all the same


def _stub_at(epoch: int, *, fenced: bool = False) -> Stub:
    stub = Stub()

    def handler(req, _identity):
        if fenced:
            return [encode_error(req.request_id, epoch, ErrorCode.FENCED, "fenced")]
        reply = decode_reply(stub.answer(req)[0])
        return [encode_reply(reply.request_id, epoch, reply.status, reply.txid, reply.result)]

    stub.handler = handler
    return stub


def test_client_moves_on_from_a_fenced_master_and_carries_the_epoch():
    old, new = _stub_at(3, fenced=True), _stub_at(4)
    try:
        with Client([old.endpoint, new.endpoint], timeout_s=5, sleep=lambda s: None) as c:
            assert c.put("/k", 1) == 1
            assert c.epochs.highest == 4 and c.fenced_replies == 1
            c.get("/k")
            # the second request carries epoch 4 to the new master
            assert new.seen()[-1][1].epoch_seen == 4
        assert len(old.seen()) == 1
    finally:
        old.close()
        new.close()


def test_client_refuses_a_reply_from_a_lower_epoch():
    new, old = _stub_at(5), _stub_at(4)
    try:
        with Client([new.endpoint, old.endpoint], timeout_s=5, sleep=lambda s: None) as c:
            assert c.put("/a", 1) == 1          # epoch 5 seen
            c._reconnect()                      # as after a timeout: now on the old master
            assert c.put("/b", 2) == 2          # old answered (epoch 4): refused, resent
            assert c.stale_epoch_replies == 1 and c.epochs.highest == 5
            assert [r.args[0] for _i, r in new.seen() if r.op == Op.PUT] == ["/a", "/b"]
            assert old.seen()[0][1].epoch_seen == 5
    finally:
        new.close()
        old.close()


def test_client_gives_up_after_bounded_retries_when_every_master_is_fenced():
    a, b = _stub_at(3, fenced=True), _stub_at(3, fenced=True)
    try:
        with Client([a.endpoint, b.endpoint], timeout_s=5, retries=2,
                    sleep=lambda s: None) as c:
            with pytest.raises(errors.Fenced):
                c.put("/k", 1)
        assert len(a.seen()) + len(b.seen()) == 3
    finally:
        a.close()
        b.close()
