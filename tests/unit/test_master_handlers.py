"""The master's request handlers driven in memory: no sockets, an Engine on tmp_path.

Each test feeds encoded request frames to `Handlers.handle` and decodes what comes back, so
the whole per-request contract (codes, txids, epochs, parking, retries) is checked without
the event loop.
"""

from __future__ import annotations

import errno
import time

import msgpack
import pytest

from mwcluster.nodes.master.handlers import Drain, Handlers
from mwcluster.nodes.master.replication import MAX_CHUNK_BYTES
from mwcluster.nodes.master.stats import MasterStats
from mwcluster.storage import snapshot as snapshots
from mwcluster.wire.protocol import ErrorCode, Op, decode_reply, encode_request

EPOCH = 7
CID = b"client-1"



@pytest.fixture
def handlers(engine):
    return Handlers(engine, EPOCH, MasterStats(), status=lambda: {"ok": True})


def ask(h: Handlers, op, args=(), durability=0, rid=1, cid=CID, drain=None):
    """One request; in `drain` (the loop's drain it is read in), else in one at time 1.0."""
    out = h.handle(b"peer", encode_request(cid, rid, op, list(args), durability),
                   drain or Drain(1.0))
    return None if out is None else decode_reply(out)


def pack(value) -> bytes:
    return msgpack.packb(value, use_bin_type=True)


def test_put_get_stat_and_every_reply_carries_the_epoch(handlers):
    r = ask(handlers, Op.PUT, ["/a/b", pack({"x": 1}), None])
    assert (r.status, r.txid, r.result, r.epoch) == (0, 1, 1, EPOCH)
    r = ask(handlers, Op.GET, ["/a/b"], rid=2)
    # a read carries the txid it was served at
    assert r.result == [pack({"x": 1}), 1, 1, 1] and r.txid == 1 and r.epoch == EPOCH
    assert ask(handlers, Op.STAT, ["/a/b"], rid=3).result == [1, 1, 1, len(pack({"x": 1}))]
    assert ask(handlers, Op.GET, ["/nope"], rid=4).result is None
    assert ask(handlers, Op.STAT, ["/nope"], rid=5).result is None


def test_merge_delete_multi_children_list(handlers):
    ask(handlers, Op.PUT, ["/j/a", pack({"n": 1}), None], rid=1)
    ask(handlers, Op.PUT, ["/j/b/c", pack(2), None], rid=2)
    r = ask(handlers, Op.MERGE, ["/j/a", pack({"m": 2}), 1], rid=3)
    assert (r.status, r.result) == (0, 2)
    assert msgpack.unpackb(ask(handlers, Op.GET, ["/j/a"], rid=4).result[0]) == {"n": 1, "m": 2}
    assert ask(handlers, Op.CHILDREN, ["/j", None], rid=5).result == ["a", "b"]
    assert ask(handlers, Op.CHILDREN, ["/", 10], rid=6).result == ["j"]
    assert ask(handlers, Op.LIST, ["/j/", 1, None], rid=7).result == ["/j/a"]
    assert ask(handlers, Op.LIST, ["/j/", 10, "/j/a"], rid=8).result == ["/j/b/c"]
    r = ask(handlers, Op.MULTI, [[[1, "/j/x", pack(1), 0], [4, "/j/a", 2]]], rid=9)
    assert (r.status, r.txid, r.result) == (0, 4, [1, None])
    r = ask(handlers, Op.DELETE, ["/j/b", True, None], rid=10)
    assert (r.status, r.result) == (0, 1)


@pytest.mark.parametrize("op,args,code", [
    (Op.PUT, ["/k", pack(1), 5], ErrorCode.NO_NODE),
    (Op.PUT, ["/a", pack(1), 0], ErrorCode.NODE_EXISTS),
    (Op.PUT, ["/a", pack(1), 9], ErrorCode.BAD_VERSION),
    (Op.DELETE, ["/p", False, None], ErrorCode.NOT_EMPTY),
    (Op.MERGE, ["/s", pack({"x": 1}), None], ErrorCode.NOT_A_MAP),
    (Op.MULTI, [[[1, "/m", pack(1), None], [4, "/a", 99]]], ErrorCode.MULTI_FAILED),
    (Op.MULTI, [[]], ErrorCode.INVALID),
    (Op.PUT, ["no-slash", pack(1), None], ErrorCode.INVALID),
    (Op.PUT, ["/bad", b"\xc4" + b"x" * 10, None], ErrorCode.INVALID),
    (Op.PUT, ["/big", msgpack.packb("x" * ((1 << 20) + 1)), None], ErrorCode.INVALID),
    (Op.PUT, ["/" + "k" * 2000, msgpack.packb(1), None], ErrorCode.INVALID),
    (Op.PUT, ["/a", pack(1)], ErrorCode.BAD_REQUEST),
    (Op.PUT, ["/a", "not bytes", None], ErrorCode.BAD_REQUEST),
    (Op.MULTI, [[[9, "x"]]], ErrorCode.BAD_REQUEST),
    (Op.GET, [], ErrorCode.BAD_REQUEST),
    (Op.GET, [1], ErrorCode.BAD_REQUEST),
    (Op.CHILDREN, ["/a", -1], ErrorCode.BAD_REQUEST),
    (Op.CHILDREN, ["bad path", None], ErrorCode.INVALID),
    (Op.LIST, ["/", "x", None], ErrorCode.BAD_REQUEST),
    (Op.FETCH, [-1, 10], ErrorCode.BAD_REQUEST),
    (Op.SNAPSHOT_CHUNK, [1, 0, 10], ErrorCode.NO_SNAPSHOT),
    (Op.SNAPSHOT_INFO, [], ErrorCode.NO_SNAPSHOT),
    (Op.PING, [1], ErrorCode.BAD_REQUEST),
], ids=lambda v: repr(v)[:40])
def test_refusals_have_codes_and_apply_nothing(handlers, engine, op, args, code):
    ask(handlers, Op.PUT, ["/a", pack(1), None], rid=100)
    ask(handlers, Op.PUT, ["/p/q", pack(1), None], rid=101)
    ask(handlers, Op.PUT, ["/s", pack(1), None], rid=102)
    before = (engine.state.txid, engine.state.digest)
    r = ask(handlers, op, args, rid=5)
    assert (r.status, r.request_id, r.epoch, r.txid) == (code, 5, EPOCH, 0), r
    assert r.result[0] == code.name.lower() and r.result[1]
    assert (engine.state.txid, engine.state.digest) == before
    assert handlers.stats.errors_by_code[code] == 1


def test_undecodable_frames_get_request_id_zero_or_their_own(handlers):
    r = decode_reply(handlers.handle(b"p", b"\xc1garbage", Drain(1.0)))
    assert (r.status, r.request_id) == (ErrorCode.BAD_REQUEST, 0)
    r = decode_reply(handlers.handle(b"p", msgpack.packb([2, CID, 9, 111, 0, []]),
                                     Drain(1.0)))
    assert (r.status, r.request_id) == (ErrorCode.UNSUPPORTED_VERSION, 9)
    r = decode_reply(handlers.handle(b"p", msgpack.packb([1, CID, 9, 99, 0, []]),
                                     Drain(1.0)))
    assert (r.status, r.request_id) == (ErrorCode.UNKNOWN_OP, 9)
    small = Handlers(handlers.engine, EPOCH, MasterStats(), max_message_bytes=1024)
    r = decode_reply(small.handle(b"p", encode_request(CID, 3, Op.PUT, ["/x", b"y" * 2000, None]),
                                  Drain(1.0)))
    assert r.status == ErrorCode.TOO_LARGE


def test_a_retried_mutation_is_applied_once_and_answered_the_same(handlers, engine):
    first = ask(handlers, Op.PUT, ["/r", pack(1), None], rid=42)
    again = ask(handlers, Op.PUT, ["/r", pack(1), None], rid=42)
    assert (again.status, again.txid, again.result) == (0, first.txid, first.result)
    assert engine.state.txid == first.txid
    assert handlers.stats.retries == 1
    other_client = ask(handlers, Op.PUT, ["/r", pack(1), None], rid=42, cid=b"other")
    assert other_client.txid == first.txid + 1


def test_sync_replies_are_parked_until_durable(handlers, engine, io):
    io.block_writes.clear()            # the flusher cannot finish a write
    assert ask(handlers, Op.PUT, ["/s", pack(1), None], durability=2, rid=1) is None
    async_reply = ask(handlers, Op.PUT, ["/t", pack(1), None], durability=1, rid=2)
    assert async_reply.status == 0 and async_reply.txid == 2
    assert handlers.parked.txids() == [1]
    assert handlers.durability_wanted() == 1       # what the loop urges the journal for
    assert handlers.release(engine.journal.durable_txid, 2.0) == []
    # a retry of the parked request parks too: it is not durable either
    assert ask(handlers, Op.PUT, ["/s", pack(1), None], durability=2, rid=1) is None
    io.block_writes.set()
    assert engine.wait_durable(2, timeout=10)
    released = handlers.release(engine.journal.durable_txid, 3.0)
    replies = [decode_reply(r) for _, r in released]
    assert [(r.request_id, r.txid) for r in replies] == [(1, 1), (1, 1)]
    assert not handlers.parked and handlers.durability_wanted() == 0
    assert handlers.stats.sync_wait.count == 2


def test_the_master_default_durability_applies_to_durability_zero(engine, io):
    h = Handlers(engine, EPOCH, MasterStats(), default_sync=True)
    io.block_writes.clear()
    assert ask(h, Op.PUT, ["/d", pack(1), None], durability=0) is None
    assert ask(h, Op.PUT, ["/e", pack(1), None], durability=1, rid=2).status == 0
    io.block_writes.set()


def test_journal_failure_answers_unavailable_and_reads_still_work(handlers, engine, io):
    ask(handlers, Op.PUT, ["/ok", pack(1), None], rid=1)
    assert engine.wait_durable(1, timeout=10)
    io.fail_write_errno = errno.ENOSPC
    ask(handlers, Op.PUT, ["/doomed", pack(1), None], rid=2)   # buffered; its write fails
    deadline = time.monotonic() + 10
    while not engine.journal.stats().failed:
        assert time.monotonic() < deadline, "the injected write failure was not seen"
        engine.wait_durable(2, timeout=0.01)      # a short wait; the write cannot succeed
    before = (engine.state.txid, engine.state.digest)
    r = ask(handlers, Op.PUT, ["/refused", pack(1), None], rid=3)
    assert r.status == ErrorCode.UNAVAILABLE and "injected" in r.result[1]
    assert (engine.state.txid, engine.state.digest) == before
    assert ask(handlers, Op.GET, ["/ok"], rid=4).status == 0
    io.heal()


def test_fetch_returns_durable_records_in_bounded_batches(handlers, engine):
    for i in range(20):
        ask(handlers, Op.PUT, [f"/f/{i:02d}", pack(i), None], rid=i + 1)
    assert engine.wait_durable(20, timeout=10)
    r = ask(handlers, Op.FETCH, [5, 1], rid=100)
    durable, records = r.result
    assert durable == 20 and [rec[0] for rec in records] == [5]
    r = ask(handlers, Op.FETCH, [0, 1 << 30], rid=101)
    assert [rec[0] for rec in r.result[1]] == list(range(1, 21))
    assert all(rec[1] == EPOCH for rec in r.result[1])
    assert ask(handlers, Op.FETCH, [21, 100], rid=102).result == [20, []]


def test_snapshot_info_and_chunks_read_the_newest_file(handlers, engine):
    for i in range(50):
        ask(handlers, Op.PUT, [f"/s/{i:02d}", pack("v" * 100), None], rid=i + 1)
    header = engine.snapshot(created_ms=1234)
    r = ask(handlers, Op.SNAPSHOT_INFO, rid=100)
    txid, epoch, digest, size, created_ms = r.result
    data = header.path.read_bytes()
    assert (txid, epoch, digest, size, created_ms) == (50, EPOCH, engine.state.digest,
                                                      len(data), 1234)
    chunks = []
    for offset in range(0, size, 1000):
        chunks.append(ask(handlers, Op.SNAPSHOT_CHUNK, [txid, offset, 1000], rid=200).result)
    assert b"".join(chunks) == data
    assert ask(handlers, Op.SNAPSHOT_CHUNK, [txid, size + 10, 100], rid=300).result == b""
    big = ask(handlers, Op.SNAPSHOT_CHUNK, [txid, 0, 1 << 40], rid=301).result
    assert big == data[:MAX_CHUNK_BYTES]
    assert snapshots.list_snapshots(engine.snapshot_dir)[0][0] == 50


def test_status_and_ping_and_shutting_down(handlers, engine):
    assert ask(handlers, Op.STATUS).result == {"ok": True}
    assert ask(handlers, Op.PING, rid=2).result is None
    handlers.stop_taking_requests()
    r = ask(handlers, Op.PUT, ["/late", pack(1), None], rid=3)
    assert r.status == ErrorCode.SHUTTING_DOWN and engine.state.txid == 0


# --- BATCH ------------------------------------------------------------------------------


def ask_batch(h: Handlers, subs, rid=1000, cid=CID, drain=None):
    """Send a BATCH of [request_id, op, durability, args] sub-requests; the decoded reply."""
    out = h.handle(b"peer", encode_request(cid, rid, Op.BATCH, [list(s) for s in subs]),
                   drain or Drain(1.0))
    return None if out is None else decode_reply(out)


def test_a_batch_of_mixed_operations_is_answered_in_order_in_one_reply(handlers, engine):
    drain = Drain(1.0)
    r = ask_batch(handlers, [
        (1, Op.PUT, 0, ["/b/a", pack({"n": 1}), None]),
        (2, Op.GET, 0, ["/b/a"]),
        (3, Op.MERGE, 1, ["/b/a", pack({"m": 2}), 1]),
        (4, Op.MULTI, 0, [[[1, "/b/c", pack(3), 0], [4, "/b/a", 2]]]),
        (5, Op.CHILDREN, 0, ["/b", None]),
        (6, Op.DELETE, 0, ["/b/c", False, None]),
        (7, Op.PING, 0, []),
        (8, Op.STATUS, 0, []),
    ], rid=77, drain=drain)
    assert (r.request_id, r.status, r.epoch, r.txid) == (77, 0, EPOCH, 4)
    assert [tuple(sub[:3]) for sub in r.result] == [
        (1, 0, 1), (2, 0, 1), (3, 0, 2), (4, 0, 3), (5, 0, 3), (6, 0, 4), (7, 0, 0), (8, 0, 0)]
    # (reads of the namespace carry the txid they were served at; PING and STATUS 0)
    results = [sub[3] for sub in r.result]
    assert results[0] == 1 and results[1] == [pack({"n": 1}), 1, 1, 1]
    assert results[2] == 2 and results[3] == [1, None] and results[4] == ["a", "c"]
    assert results[5] == 1 and results[6] is None and results[7] == {"ok": True}
    assert engine.state.txid == 4
    assert handlers.batches == 1
    assert drain.ops == {Op.PUT: 1, Op.GET: 1, Op.MERGE: 1, Op.MULTI: 1, Op.CHILDREN: 1,
                         Op.DELETE: 1, Op.PING: 1, Op.STATUS: 1}


def test_bad_sub_requests_get_their_own_errors_and_the_others_proceed(handlers, engine):
    r = ask_batch(handlers, [
        (1, Op.PUT, 0, ["/g/1", pack(1), None]),
        "not an array",
        [2, Op.PUT, 0],                                   # three fields
        (3, Op.BATCH, 0, [[4, Op.PING, 0, []]]),          # no BATCH inside a BATCH
        (5, 99, 0, []),                                   # unknown op
        (6, Op.PUT, 7, ["/g/x", pack(1), None]),          # bad durability
        (-1, Op.PING, 0, []),                             # bad request id
        (8, Op.PUT, 0, "args"),                           # args not an array
        (9, Op.PUT, 0, ["no-slash", pack(1), None]),      # refused by the rules
        (10, Op.PUT, 0, ["/g/1", pack(1), 0]),            # refused: exists
        (11, Op.GET, 0, [42]),                            # wrong type
        (12, Op.PUT, 0, ["/g/2", pack(2), None]),
    ])
    assert r.status == 0 and r.txid == 2
    codes = [(sub[0], sub[1]) for sub in r.result]
    assert codes == [
        (1, 0), (0, ErrorCode.BAD_REQUEST), (0, ErrorCode.BAD_REQUEST),
        (3, ErrorCode.BAD_REQUEST), (5, ErrorCode.UNKNOWN_OP), (6, ErrorCode.BAD_REQUEST),
        (0, ErrorCode.BAD_REQUEST), (8, ErrorCode.BAD_REQUEST), (9, ErrorCode.INVALID),
        (10, ErrorCode.NODE_EXISTS), (11, ErrorCode.BAD_REQUEST), (12, 0)]
    for sub in r.result:
        if sub[1]:
            assert sub[2] == 0 and sub[3][0] == ErrorCode(sub[1]).name.lower() and sub[3][1]
    assert "cannot contain a BATCH" in r.result[3][3][1]
    assert [sub[2] for sub in r.result if sub[1] == 0] == [1, 2]
    assert engine.state.txid == 2
    assert handlers.stats.errors_by_code[ErrorCode.BAD_REQUEST] == 7


def test_sync_inside_a_batch_parks_the_whole_reply_until_its_highest_txid(handlers, engine,
                                                                           io):
    io.block_writes.clear()
    assert ask_batch(handlers, [(1, Op.PUT, 1, ["/s/1", pack(1), None]),
                                (2, Op.PUT, 2, ["/s/2", pack(2), None]),
                                (3, Op.PUT, 1, ["/s/3", pack(3), None]),
                                (4, Op.GET, 0, ["/s/1"])], rid=50) is None
    # an all-async batch behind it is answered at once
    r = ask_batch(handlers, [(5, Op.PUT, 1, ["/s/4", pack(4), None])], rid=51)
    assert (r.status, r.txid, r.result[0][2]) == (0, 4, 4)
    assert handlers.parked.txids() == [3]
    assert handlers.release(engine.journal.durable_txid, 2.0) == []
    io.block_writes.set()
    assert engine.wait_durable(3, timeout=10)
    (ident, frame), = handlers.release(engine.journal.durable_txid, 3.0)
    r = decode_reply(frame)
    assert ident == b"peer" and (r.request_id, r.txid) == (50, 3)
    assert [sub[2] for sub in r.result] == [1, 2, 3, 3]      # the GET was served at txid 3


def test_a_batch_with_sync_reads_only_is_not_parked(handlers, io):
    io.block_writes.clear()
    r = ask_batch(handlers, [(1, Op.PING, 2, []), (2, Op.GET, 2, ["/none"])])
    assert r.status == 0 and r.txid == 0 and not handlers.parked
    io.block_writes.set()


def test_the_master_default_sync_applies_to_sub_requests_with_durability_zero(engine, io):
    h = Handlers(engine, EPOCH, MasterStats(), default_sync=True)
    io.block_writes.clear()
    assert ask_batch(h, [(1, Op.PUT, 0, ["/d", pack(1), None])]) is None
    assert ask_batch(h, [(2, Op.PUT, 1, ["/e", pack(1), None])], rid=2).txid == 2
    io.block_writes.set()


def test_a_retried_batch_is_applied_once_and_answered_the_same(handlers, engine):
    subs = [(1, Op.PUT, 0, ["/r/1", pack(1), None]), (2, Op.GET, 0, ["/r/1"]),
            (3, Op.MERGE, 0, ["/r/1", pack({"x": 1}), None]),
            (4, Op.PUT, 0, ["/r/2", pack(2), None])]
    first = ask_batch(handlers, subs, rid=10)
    assert [sub[1] for sub in first.result] == [0, 0, ErrorCode.NOT_A_MAP, 0]
    state = (engine.state.txid, engine.state.digest)
    again = ask_batch(handlers, subs, rid=11)
    assert (engine.state.txid, engine.state.digest) == state
    mutations = [0, 2, 3]                        # the GET is a new read, served at txid 2
    assert [again.result[i][:3] for i in mutations] == [first.result[i][:3] for i in mutations]
    assert again.result[1][:3] == [2, 0, 2] and first.result[1][:3] == [2, 0, 1]
    assert again.result[0][3] == first.result[0][3] and again.txid == first.txid
    assert handlers.stats.retries == 2           # the refused merge is evaluated again
    # a single request with the id of a batched one is a retry too
    assert ask(handlers, Op.PUT, ["/r/2", pack(2), None], rid=4).txid == first.result[3][2]


def test_too_many_sub_requests_or_too_many_bytes_are_refused_whole(engine):
    h = Handlers(engine, EPOCH, MasterStats(), max_batch=4, max_message_bytes=4096)
    subs = [(i, Op.PUT, 0, [f"/t/{i}", pack(i), None]) for i in range(5)]
    r = ask_batch(h, subs, rid=9)
    assert (r.request_id, r.status, r.txid) == (9, ErrorCode.TOO_LARGE, 0)
    assert "at most 4 sub-requests" in r.result[1] and "got 5" in r.result[1]
    r = ask_batch(h, [(1, Op.PUT, 0, ["/t/big", pack("v" * 5000), None])], rid=10)
    assert (r.request_id, r.status) == (0, ErrorCode.TOO_LARGE)
    assert engine.state.txid == 0
    assert ask_batch(h, subs[:4], rid=11).txid == 4


def test_batch_args_of_the_wrong_shape_and_an_empty_batch(handlers, engine):
    r = decode_reply(handlers.handle(b"p", msgpack.packb([1, CID, 5, Op.BATCH, 0, "x"]),
                                     Drain(1.0)))
    assert (r.request_id, r.status) == (5, ErrorCode.BAD_REQUEST)
    r = ask_batch(handlers, [], rid=6)
    assert (r.request_id, r.status, r.txid, r.result) == (6, 0, 0, [])
    assert engine.state.txid == 0


def test_a_batch_while_stopping_applies_nothing(handlers, engine):
    handlers.stop_taking_requests()
    r = ask_batch(handlers, [(1, Op.PUT, 0, ["/late", pack(1), None])], rid=3)
    assert (r.request_id, r.status) == (3, ErrorCode.SHUTTING_DOWN)
    assert engine.state.txid == 0
