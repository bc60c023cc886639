"""Snapshot uploads driven in memory: Handlers + SnapshotUploads on an Engine in tmp_path,
with the worker's outcomes (chunk writes, installs) collected through `finished()` (no
sockets)."""

from __future__ import annotations

import time
import zlib

import msgpack
import pytest

from mwcluster.core.records import from_wire
from mwcluster.engine import Engine
from mwcluster.nodes.master.handlers import Drain, Handlers
from mwcluster.nodes.master.stats import MasterStats
from mwcluster.storage import snapshot as snapshots
from mwcluster.testing import wait_for
from mwcluster.wire.protocol import ErrorCode, Op, decode_reply, encode_request

EPOCH = 3


@pytest.fixture
def engine(tmp_path):
    eng = Engine(tmp_path / "data", epoch=EPOCH, segment_bytes=4096)
    eng.open()
    yield eng
    eng.close()


@pytest.fixture
def handlers(engine):
    h = Handlers(engine, EPOCH, MasterStats())
    yield h
    h.uploads.close()


def ask(h, op, args, rid=1, cid=b"node"):
    """The reply; for a CHUNK or END the worker answers, the reply is awaited."""
    out = h.handle(b"peer", encode_request(cid, rid, op, list(args)), Drain(0.0))
    if out is None and op == Op.SNAPSHOT_UPLOAD_CHUNK:
        return parked_reply(h, rid)
    return None if out is None else decode_reply(out)


def parked_reply(h, rid):
    """The reply to request `rid` once the upload worker finished it."""
    got: dict = {}

    def done() -> bool:
        for _ident, frame in h.uploads.finished():
            reply = decode_reply(frame)
            got[reply.request_id] = reply
        return rid in got

    wait_for(done, what=f"the worker's reply to request {rid}")
    return got[rid]


def fill(engine, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        engine.submit(from_wire([int(Op.PUT), f"/k/{i}",
                                 msgpack.packb({"i": i, "pad": "x" * 200}), None]))
        if i % 10 == 9:          # one flush per 10 records: several segments
            engine.journal.wait_durable(engine.state.txid)
    engine.journal.wait_durable(engine.state.txid)


def node_snapshot(engine, directory):
    """A snapshot file of the engine's state, as the checkpoint node would write it."""
    st = engine.state
    header = snapshots.write_snapshot(directory, st.txid, EPOCH, st.digest, st.image_chunks(),
                                      int(time.time() * 1000))
    data = header.path.read_bytes()
    return header, data


def upload(h, header, data, crc=None, rid=10, chunk=1000):
    r = ask(h, Op.SNAPSHOT_UPLOAD_BEGIN, [header.txid, header.epoch, header.digest, len(data),
                                          zlib.crc32(data) if crc is None else crc], rid=rid)
    if r.status or r.result[1] == "have":
        return r
    uid = r.result[0]
    for off in range(0, len(data), chunk):
        rid += 1
        c = ask(h, Op.SNAPSHOT_UPLOAD_CHUNK, [uid, off, data[off:off + chunk]], rid=rid)
        assert c.status == 0 and c.result == [min(off + chunk, len(data))], c
    r = ask(h, Op.SNAPSHOT_UPLOAD_END, [uid], rid=rid + 1)
    if r is not None:
        return r
    return parked_reply(h, rid + 1)


def test_upload_installs_the_snapshot_and_purges_the_journal(handlers, engine, tmp_path):
    fill(engine, 200)
    handlers.uploads.record(engine.state.txid, engine.state.digest)
    segments_before = engine.journal.stats().segments
    assert segments_before > 3
    header, data = node_snapshot(engine, tmp_path / "node")
    engine.journal.roll()
    r = upload(handlers, header, data)
    assert r.status == 0, r
    kept, purged = r.result
    assert kept == [header.txid] and purged >= segments_before - 1
    installed = engine.snapshot_dir / snapshots.snapshot_name(header.txid)
    assert installed.read_bytes() == data
    assert not list(engine.snapshot_dir.glob(".snap-*"))
    st = handlers.uploads.status()
    assert st["uploads_ok"] == 1 and st["digest_unverified_uploads"] == 0
    # the same snapshot again: "have"
    r = upload(handlers, header, data, rid=100)
    assert r.status == 0 and r.result[1] == "have"


def test_wrong_checksum_is_rejected_and_nothing_is_installed(handlers, engine, tmp_path):
    fill(engine, 20)
    header, data = node_snapshot(engine, tmp_path / "node")
    r = upload(handlers, header, data, crc=(zlib.crc32(data) + 1) & 0xFFFFFFFF)
    assert r.status == ErrorCode.INVALID and "crc32" in r.result[1]
    assert snapshots.list_snapshots(engine.snapshot_dir) == []
    assert not list(engine.snapshot_dir.glob(".snap-*"))
    assert handlers.uploads.status()["uploads_rejected"] == 1
    assert handlers.uploads.current is None


def test_damaged_body_is_rejected_by_verify(handlers, engine, tmp_path):
    fill(engine, 20)
    header, data = node_snapshot(engine, tmp_path / "node")
    bad = bytearray(data)
    bad[snapshots.HEADER_BYTES + 3] ^= 0xFF
    r = upload(handlers, header, bytes(bad))
    assert r.status == ErrorCode.INVALID and "verify" in r.result[1]
    assert snapshots.list_snapshots(engine.snapshot_dir) == []


def test_digest_differing_from_the_ring_is_rejected(handlers, engine, tmp_path):
    fill(engine, 20)
    handlers.uploads.record(engine.state.txid, engine.state.digest ^ 1)
    header, data = node_snapshot(engine, tmp_path / "node")
    r = upload(handlers, header, data)
    assert r.status == ErrorCode.INVALID and "digest" in r.result[1]


def test_unknown_digest_is_accepted_and_counted(handlers, engine, tmp_path):
    fill(engine, 20)
    header, data = node_snapshot(engine, tmp_path / "node")
    r = upload(handlers, header, data)
    assert r.status == 0
    assert handlers.uploads.status()["digest_unverified_uploads"] == 1


def test_one_upload_at_a_time_and_txid_bounds(handlers, engine, tmp_path):
    fill(engine, 20)
    st = engine.state
    header, data = node_snapshot(engine, tmp_path / "node")
    args = [header.txid, EPOCH, header.digest, len(data), zlib.crc32(data)]
    r = ask(handlers, Op.SNAPSHOT_UPLOAD_BEGIN, args, rid=1, cid=b"a")
    assert r.status == 0 and r.result[1] == "accepted"
    r = ask(handlers, Op.SNAPSHOT_UPLOAD_BEGIN, args, rid=2, cid=b"b")
    assert r.status == ErrorCode.BAD_STATE
    # the owner may start again (it gave up on the first one)
    r2 = ask(handlers, Op.SNAPSHOT_UPLOAD_BEGIN, args, rid=3, cid=b"a")
    assert r2.status == 0 and r2.result[0] != r.result[0] if r.status == 0 else True
    uid = r2.result[0]
    r = ask(handlers, Op.SNAPSHOT_UPLOAD_CHUNK, [uid, 5, b"x"], rid=4, cid=b"a")
    assert r.status == ErrorCode.BAD_STATE and "contiguous" in r.result[1]
    assert ask(handlers, Op.SNAPSHOT_UPLOAD_ABORT, [uid], rid=5, cid=b"a").status == 0
    assert handlers.uploads.current is None
    r = ask(handlers, Op.SNAPSHOT_UPLOAD_BEGIN,
            [st.txid + 5, EPOCH, 0, len(data), 0], rid=6)
    assert r.status == ErrorCode.INVALID and "durable" in r.result[1]
    assert upload(handlers, header, data, rid=20).status == 0
    r = ask(handlers, Op.SNAPSHOT_UPLOAD_BEGIN, [header.txid - 1, EPOCH, 0, len(data), 0],
            rid=40)
    assert r.status == ErrorCode.INVALID and "older" in r.result[1]
    r = ask(handlers, Op.SNAPSHOT_UPLOAD_CHUNK, [12345, 0, b"x"], rid=41)
    assert r.status == ErrorCode.BAD_STATE


def test_an_idle_upload_is_replaced_by_another_clients_begin(engine, tmp_path):
    now = [100.0]
    from mwcluster.nodes.master.upload import SnapshotUploads

    h = Handlers(engine, EPOCH, MasterStats(),
                 uploads=SnapshotUploads(engine, EPOCH, idle_s=30.0, clock=lambda: now[0]))
    try:
        fill(engine, 20)
        header, data = node_snapshot(engine, tmp_path / "node")
        args = [header.txid, EPOCH, header.digest, len(data), zlib.crc32(data)]
        first = ask(h, Op.SNAPSHOT_UPLOAD_BEGIN, args, rid=1, cid=b"a").result[0]
        assert ask(h, Op.SNAPSHOT_UPLOAD_CHUNK, [first, 0, data[:10]], rid=2,
                   cid=b"a").status == 0
        now[0] += 29.0
        assert ask(h, Op.SNAPSHOT_UPLOAD_BEGIN, args, rid=3, cid=b"b").status == \
            ErrorCode.BAD_STATE
        now[0] += 1.0
        r = ask(h, Op.SNAPSHOT_UPLOAD_BEGIN, args, rid=4, cid=b"b")
        assert r.status == 0 and r.result[1] == "accepted"
        assert ask(h, Op.SNAPSHOT_UPLOAD_CHUNK, [first, 10, data[10:20]], rid=5,
                   cid=b"a").status == ErrorCode.BAD_STATE
        assert ask(h, Op.SNAPSHOT_UPLOAD_ABORT, [r.result[0]], rid=6, cid=b"b").status == 0
        assert upload(h, header, data, rid=10).status == 0
    finally:
        h.uploads.close()


def test_a_restarted_node_replaces_its_own_upload_and_an_idle_one_expires(engine, tmp_path):
    now = [100.0]
    from mwcluster.nodes.master.upload import SnapshotUploads

    h = Handlers(engine, EPOCH, MasterStats(),
                 uploads=SnapshotUploads(engine, EPOCH, idle_s=30.0, clock=lambda: now[0]))
    try:
        fill(engine, 20)
        header, data = node_snapshot(engine, tmp_path / "node")
        args = [header.txid, EPOCH, header.digest, len(data), zlib.crc32(data)]
        ep = "tcp://127.0.0.1:7001"
        first = ask(h, Op.SNAPSHOT_UPLOAD_BEGIN, [*args, ep], rid=1, cid=b"a").result[0]
        assert ask(h, Op.SNAPSHOT_UPLOAD_CHUNK, [first, 0, data[:10]], rid=2,
                   cid=b"a").status == 0
        temp = h.uploads.current.path
        assert temp.exists()
        assert h.uploads.status()["upload_in_progress"]["endpoint"] == ep
        # another node: refused; the same node (a new connection after a restart): replaces
        assert ask(h, Op.SNAPSHOT_UPLOAD_BEGIN, [*args, "tcp://127.0.0.1:7002"], rid=3,
                   cid=b"b").status == ErrorCode.BAD_STATE
        r = ask(h, Op.SNAPSHOT_UPLOAD_BEGIN, [*args, ep], rid=4, cid=b"c")
        assert r.status == 0 and r.result[1] == "accepted" and r.result[0] != first
        # a malformed endpoint is refused
        assert ask(h, Op.SNAPSHOT_UPLOAD_BEGIN, [*args, 5], rid=5, cid=b"c").status == \
            ErrorCode.BAD_REQUEST
        # silent for idle_s: expire() drops it and its temporary file
        h.uploads.expire()
        assert h.uploads.current is not None
        now[0] += 30.0
        h.uploads.expire()
        assert h.uploads.current is None and h.uploads.status()["upload_in_progress"] is None
        # the worker closes and removes the files of the dropped uploads
        wait_for(lambda: not list(engine.snapshot_dir.glob(".snap-*")),
                 what="the temporary files to be removed")
    finally:
        h.uploads.close()


def test_hellos_and_uploads_list_the_checkpoint_nodes(engine, tmp_path):
    now = [100.0]
    from mwcluster.nodes.master.checkpoints import FORGET_S
    from mwcluster.nodes.master.upload import SnapshotUploads

    h = Handlers(engine, EPOCH, MasterStats(),
                 uploads=SnapshotUploads(engine, EPOCH, clock=lambda: now[0]))
    try:
        ep = "tcp://127.0.0.1:7001"
        assert h.uploads.status()["checkpoint_nodes"] == []
        assert ask(h, Op.CHECKPOINT_HELLO, [ep, 5, None], rid=1).status == 0
        assert ask(h, Op.CHECKPOINT_HELLO, [None, 2, 1], rid=2, cid=b"anon").status == 0
        for bad in ([ep, 5], ["no-scheme", 5, None], [ep, -1, None], [ep, 5, "x"]):
            assert ask(h, Op.CHECKPOINT_HELLO, bad, rid=3).status == ErrorCode.BAD_REQUEST
        now[0] += 2.0
        fill(engine, 20)
        header, data = node_snapshot(engine, tmp_path / "node")
        args = [header.txid, EPOCH, header.digest, len(data), zlib.crc32(data), ep]
        uid = ask(h, Op.SNAPSHOT_UPLOAD_BEGIN, args, rid=10, cid=b"up").result[0]
        assert ask(h, Op.SNAPSHOT_UPLOAD_CHUNK, [uid, 0, data], rid=11, cid=b"up").status == 0
        assert ask(h, Op.SNAPSHOT_UPLOAD_END, [uid], rid=12, cid=b"up") is None
        assert parked_reply(h, 12).status == 0
        nodes = h.uploads.status()["checkpoint_nodes"]
        assert nodes[0] == {"endpoint": ep, "last_seen_age_s": 0.0, "replica_txid": 5,
                            "checkpoint_txid": None, "last_upload_txid": header.txid,
                            "last_upload_age_s": 0.0}
        assert nodes[1]["endpoint"] is None and nodes[1]["last_seen_age_s"] == 2.0
        now[0] += FORGET_S + 1
        assert h.uploads.status()["checkpoint_nodes"] == []
    finally:
        h.uploads.close()


def test_chunks_are_written_off_the_loop_and_a_dropped_upload_skips_its_queued_writes(
        handlers, engine, tmp_path):
    fill(engine, 20)
    header, data = node_snapshot(engine, tmp_path / "node")
    args = [header.txid, EPOCH, header.digest, len(data), zlib.crc32(data)]
    uid = ask(handlers, Op.SNAPSHOT_UPLOAD_BEGIN, args, rid=1).result[0]
    # the handler answers nothing at once: the worker writes, then finished() replies
    frame = encode_request(b"node", 2, Op.SNAPSHOT_UPLOAD_CHUNK, [uid, 0, data[:100]])
    assert handlers.handle(b"peer", frame, Drain(0.0)) is None
    assert parked_reply(handlers, 2).result == [100]
    temp = handlers.uploads.current.path
    assert temp.name.startswith(".snap-") and temp.name.endswith(".mws.tmp")
    # a chunk queued, then the upload aborted: the write is skipped, the file removed
    frame = encode_request(b"node", 3, Op.SNAPSHOT_UPLOAD_CHUNK, [uid, 100, data[100:200]])
    assert handlers.handle(b"peer", frame, Drain(0.0)) is None
    assert ask(handlers, Op.SNAPSHOT_UPLOAD_ABORT, [uid], rid=4).status == 0
    late = parked_reply(handlers, 3)
    assert late.status in (0, ErrorCode.BAD_STATE)      # written before the abort, or not
    wait_for(lambda: not temp.exists(), what="the worker to remove the file")
    # CHUNK and END inside a BATCH are refused
    from mwcluster.wire.protocol import sub_request
    batch = encode_request(b"node", 5, Op.BATCH,
                           [sub_request(6, Op.SNAPSHOT_UPLOAD_CHUNK, [uid, 0, b"x"])])
    reply = decode_reply(handlers.handle(b"peer", batch, Drain(0.0)))
    assert reply.result[0][1] == ErrorCode.BAD_REQUEST
    # a wrong crc32 is found by the worker after the writes, at END
    r = upload(handlers, header, data, crc=(zlib.crc32(data) + 1) & 0xFFFFFFFF, rid=20)
    assert r.status == ErrorCode.INVALID and "crc32" in r.result[1]
    assert not list(engine.snapshot_dir.glob(".snap-*"))
