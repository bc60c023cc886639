"""The consistency barrier in the master's handlers, in memory: with sync or replicated
durability a reply that depends on the state (a read, a refusal, a success) is sent only once
every record applied before it was computed is durable at that level; consistency "fast" (the
FAST flag on the wire) answers at once from memory, as before. The journal's writes are held
back by a FaultyJournalIO, so "not durable yet" is a state the test controls."""

from __future__ import annotations

import msgpack

from mwcluster.core.durability import FAST, Durability, wire_code
from mwcluster.nodes.master.handlers import STANDBY_SILENT_S, Drain, Handlers
from mwcluster.nodes.master.stats import MasterStats
from mwcluster.wire.protocol import ErrorCode, Op, decode_reply, encode_request

EPOCH = 4
SYNC, REPLICATED = int(Durability.SYNC), int(Durability.REPLICATED)



def master(engine, default_sync=True) -> Handlers:
    return Handlers(engine, EPOCH, MasterStats(), default_sync=default_sync)


def ask(h, op, args=(), durability=0, rid=1, cid=b"c1", now=1.0):
    out = h.handle(b"peer-" + cid, encode_request(cid, rid, op, list(args), durability),
                   Drain(now))
    return None if out is None else decode_reply(out)


def put(key, value, expected=None):
    return [key, msgpack.packb(value), expected]


def released(h, engine, upto=None):
    """The replies released by the durable txid (or `upto`), by request id."""
    return {decode_reply(frame).request_id: decode_reply(frame)
            for _ident, frame in h.release(engine.journal.durable_txid if upto is None
                                           else upto, 2.0)}


def durable(engine, io, txid):
    io.block_writes.set()
    assert engine.wait_durable(txid, timeout=10)


def test_an_idle_sync_master_answers_reads_at_once(engine):
    h = master(engine)
    ask(h, Op.PUT, put("/k", 1), rid=1)        # parked or not: the fsync may be done already
    assert engine.wait_durable(1, timeout=10)
    h.release(engine.journal.durable_txid, 1.0)
    r = ask(h, Op.GET, ["/k"], rid=2, cid=b"c2")
    assert r is not None and r.status == 0 and r.txid == 1   # nothing pending: no wait
    assert not h.parked


def test_a_read_waits_for_the_write_it_sees_to_be_durable(engine, io):
    h = master(engine)
    io.block_writes.clear()
    assert ask(h, Op.PUT, put("/k", "x"), rid=1) is None          # a sync put, parked
    # another client's read sees the put's value: it may not be answered before the fsync
    assert ask(h, Op.GET, ["/k"], rid=7, cid=b"c2") is None
    assert ask(h, Op.STAT, ["/k"], rid=8, cid=b"c2") is None
    assert ask(h, Op.CHILDREN, ["/", None], rid=9, cid=b"c2") is None
    assert ask(h, Op.LIST, ["/", 10, None], rid=10, cid=b"c2") is None
    assert h.parked.txids() == [1, 1, 1, 1, 1]
    assert h.release(engine.journal.durable_txid, 1.5) == []
    durable(engine, io, 1)
    out = released(h, engine)
    assert sorted(out) == [1, 7, 8, 9, 10]
    got = out[7]
    assert got.status == 0 and msgpack.unpackb(got.result[0]) == "x" and got.txid == 1


def test_fast_consistency_answers_at_once_and_may_show_what_a_crash_erases(engine, io):
    h = master(engine)
    io.block_writes.clear()
    assert ask(h, Op.PUT, put("/k", "x"), rid=1) is None
    r = ask(h, Op.GET, ["/k"], wire_code(None, "fast"), rid=2, cid=b"c2")
    assert r.status == 0 and msgpack.unpackb(r.result[0]) == "x"   # not durable yet
    assert r.txid == 1 and engine.journal.durable_txid == 0
    # a fast sync write still waits for its own record, but its refusal goes at once
    assert ask(h, Op.PUT, put("/j", 1), SYNC | FAST, rid=3, cid=b"c2") is None
    r = ask(h, Op.PUT, put("/k", "y", 5), SYNC | FAST, rid=4, cid=b"c2")
    assert r.status == ErrorCode.BAD_VERSION


def test_a_refusal_waits_for_the_state_that_caused_it(engine, io):
    h = master(engine)
    io.block_writes.clear()
    assert ask(h, Op.PUT, put("/k", "x"), rid=1) is None
    # "is at version 1" would reveal the parked put: the refusal waits for its fsync
    assert ask(h, Op.PUT, put("/k", "z", 5), rid=2, cid=b"c2") is None
    assert ask(h, Op.PUT, put("/k", "z", 0), rid=3, cid=b"c3") is None      # NodeExists
    assert ask(h, Op.DELETE, ["/none", False, None], rid=4, cid=b"c4") is None   # NoNode
    durable(engine, io, 1)
    out = released(h, engine)
    assert out[2].status == ErrorCode.BAD_VERSION and "version 1" in out[2].result[1]
    assert out[3].status == ErrorCode.NODE_EXISTS and out[4].status == ErrorCode.NO_NODE


def test_an_async_master_reads_at_once_unless_the_read_asks_for_sync(engine, io):
    h = master(engine, default_sync=False)
    io.block_writes.clear()
    r = ask(h, Op.PUT, put("/k", "x"), rid=1)
    assert r.status == 0 and r.txid == 1                            # async: at once
    r = ask(h, Op.GET, ["/k"], rid=2, cid=b"c2")
    assert r.status == 0 and msgpack.unpackb(r.result[0]) == "x"
    assert ask(h, Op.GET, ["/k"], SYNC, rid=3, cid=b"c2") is None   # waits for the fsync
    durable(engine, io, 1)
    assert sorted(released(h, engine)) == [3]


def test_job_reads_wait_too(engine, io):
    h = master(engine)
    io.block_writes.clear()
    assert ask(h, Op.JOB_SUBMIT, ["j1", "job", "h.x", 0, 3, [[1, {}]]], rid=1) is None
    assert ask(h, Op.JOB_STATUS, ["j1"], rid=2, cid=b"c2") is None
    assert ask(h, Op.JOB_LIST, [True], rid=3, cid=b"c2") is None
    durable(engine, io, 1)
    out = released(h, engine)
    assert out[2].status == 0 and out[2].result["id"] == "j1" and out[3].status == 0


def test_status_and_ping_are_not_held_back(engine, io):
    h = master(engine)
    io.block_writes.clear()
    assert ask(h, Op.PUT, put("/k", "x"), rid=1) is None
    assert ask(h, Op.PING, [], rid=2, cid=b"c2").status == 0
    assert ask(h, Op.STATUS, [], rid=3, cid=b"c2").status == 0


def test_a_batch_with_a_read_behind_a_pending_write_is_parked_whole(engine, io):
    h = master(engine)
    io.block_writes.clear()
    assert ask(h, Op.PUT, put("/k", "x"), rid=1) is None
    frame = encode_request(b"c2", 50, Op.BATCH, [[51, int(Op.GET), 0, ["/k"]],
                                                 [52, int(Op.PING), 0, []]])
    assert h.handle(b"peer", frame, Drain(1.0)) is None
    durable(engine, io, 1)
    r = released(h, engine)[50]
    assert [sub[0] for sub in r.result] == [51, 52] and r.result[0][2] == 1


def test_a_failing_journal_answers_held_reads_unavailable(engine, io):
    h = master(engine)
    io.block_writes.clear()
    assert ask(h, Op.PUT, put("/k", "x"), rid=1) is None
    assert ask(h, Op.GET, ["/k"], rid=2, cid=b"c2") is None
    out = h.fail_parked("the disk is full (test)")
    messages = {decode_reply(f).request_id: decode_reply(f) for _i, f in out}
    assert messages[2].status == ErrorCode.UNAVAILABLE
    assert "not durable" in messages[2].result[1] and "fast" in messages[2].result[1]
    io.block_writes.set()


def test_replicated_reads_wait_for_the_standby(engine, io):
    h = master(engine)
    assert ask(h, Op.CHECKPOINT_HELLO, [None, 0, None], rid=90, cid=b"node").status == 0
    assert ask(h, Op.PUT, put("/k", "x"), REPLICATED, rid=1) is None
    assert engine.wait_durable(1, timeout=10)
    assert h.release(1, 1.0) == []                   # durable is not enough
    assert ask(h, Op.GET, ["/k"], REPLICATED, rid=2, cid=b"c2") is None
    # the sync barrier is passed, so a plain (sync default) read goes at once
    assert ask(h, Op.GET, ["/k"], rid=3, cid=b"c2").status == 0
    assert ask(h, Op.REPLICA_ACK, [1], rid=91, cid=b"node").status == 0
    out = [decode_reply(f).request_id for _i, f in h.release_replicated(1.0)]
    assert out == [1, 2]


def test_replicated_without_a_standby_is_refused_at_once_and_applies_nothing(engine):
    h = master(engine)
    r = ask(h, Op.PUT, put("/k", "x"), REPLICATED, rid=1, now=100.0)
    assert r.status == ErrorCode.UNAVAILABLE and engine.state.txid == 0
    assert "no standby follows" in r.result[1] and "since it started" in r.result[1]
    assert not h.standby_follows(100.0)
    assert ask(h, Op.CHECKPOINT_HELLO, [None, 0, None], rid=2, cid=b"node",
               now=100.0).status == 0
    assert h.standby_follows(100.0)
    assert ask(h, Op.PUT, put("/k", "x"), REPLICATED, rid=1, now=101.0) is None   # parked
    # silent past STANDBY_SILENT_S: refused again, saying when it was last heard
    later = 100.0 + STANDBY_SILENT_S + 1
    r = ask(h, Op.GET, ["/k"], REPLICATED, rid=3, cid=b"c2", now=later)
    assert r.status == ErrorCode.UNAVAILABLE and "heard 11.0 s ago" in r.result[1]
