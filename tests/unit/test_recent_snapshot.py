"""The table of recent requests in snapshots: the state image carries it (format 2), every
writer writes it (the engine, the checkpoint node's forked writer, the promotion's snapshot),
every loader restores it (Engine.open, the checkpoint node's local start), and a snapshot file
written before the table was carried (format 1) still loads, with an empty table."""

from __future__ import annotations

import io

import msgpack
import pytest

from mwcluster.config import load_checkpoint_config
from mwcluster.core import follower as fm
from mwcluster.core import records as r
from mwcluster.core.recent import RecentRequests
from mwcluster.core.state import IMAGE_FORMAT, State
from mwcluster.core.values import encode
from mwcluster.engine import Engine, load_snapshot
from mwcluster.errors import CorruptionError
from mwcluster.nodes.checkpoint.node import CheckpointNode
from mwcluster.nodes.checkpoint.promote import write_master_dir
from mwcluster.storage import snapshot as snapshots
from mwcluster.testing import wait_for

# A snapshot file written by mwcluster before the table was carried (state image format 1),
# byte for byte: txid 7 (two PUTs, a MULTI, a worker, a job with one task finished), epoch 3.
OLD_SNAPSHOT_HEX = (
    "4d57534e4150010007000000000000000300000000000000ad4559d3b1aba97c65010000000000000068e5cf"
    "8b0100000000000000000000000000004c726f7392a46d65746186a6666f726d617401a47478696407a66469"
    "67657374cf7ca9abb1d35945ada46b65797303a46a6f627301a7776f726b6572730192a26e7396a22f61c424"
    "01000000000000000100000000000000010000000000000066aea28a2d2e282481a17801a42f612f62c42601"
    "0000000000000002000000000000000200000000000000a8ce0ba8e9b736069201a374776fa22f63c4210100"
    "0000000000000300000000000000030000000000000071756a19026aa9fb0392a7776f726b6572739197a277"
    "31a97463703a2f2f683a3102a6616374697665cd03e8c0c093a36a6f6299a56a6f622d31a5636f756e74a277"
    "630003a772756e6e696e67cd03e9c0c0929e00a3696e3080a973756363656564656401a27731cb3ff0000000"
    "0000008081a16e07c0cd03eacd03ebcd03eb909e01a3696e3181a16b01a770656e64696e6700c0cb00000000"
    "0000000080c0c0c0c0c09092a3656e64cf7ca9abb1d35945adccf55f2f000000004d57534e454e4400"
)
OLD_DIGEST = 0x7ca9abb1d35945ad


def filled(count: int, limit: int = 100_000) -> tuple[State, RecentRequests]:
    """A state of `count` PUTs, each remembered with an origin, like the master's."""
    state, table = State(), RecentRequests(limit)
    for txid in range(1, count + 1):
        result = state.apply(txid, r.Put(f"/k{txid % 7}", encode(txid)))
        table.remember((b"client-%d" % (txid % 3), txid), txid, result)
    return state, table


def items(table: RecentRequests) -> list:
    return list(table.items())


def write(directory, state: State, recent: RecentRequests | None) -> snapshots.SnapshotHeader:
    return snapshots.write_snapshot(directory, state.txid, 1, state.digest,
                                    state.image_chunks(recent), 0)


# --- the image -------------------------------------------------------------------------------

def test_the_image_carries_the_table_and_loading_restores_it():
    state, table = filled(50)
    loaded = RecentRequests()
    again = State.from_image(state.image_chunks(table), recent=loaded)
    assert again.digest == state.digest and again.txid == 50
    assert items(loaded) == items(table) and len(loaded) == 50
    assert loaded.get((b"client-1", 7)) == (7, table.get((b"client-1", 7))[1])


def test_results_of_every_kind_come_back_as_the_wire_shows_them():
    state, table = filled(3)
    results = [None, 1, "job-4", True, [1, None], [("j", 0), ("j", 1)], "succeeded"]
    for n, result in enumerate(results):
        table.remember((b"c", 100 + n), 3, result)
    loaded = RecentRequests()
    State.from_image(state.image_chunks(table), recent=loaded)
    for n, result in enumerate(results):
        txid, got = loaded.get((b"c", 100 + n))
        assert txid == 3
        assert msgpack.packb(got) == msgpack.packb(result)   # a tuple comes back as a list


def test_a_table_bigger_than_one_item_and_a_smaller_loader_keep_the_newest():
    state, table = filled(10_000, limit=20_000)
    chunks = list(state.image_chunks(table))
    assert sum(msgpack.unpackb(c)[0] == "recent" for c in chunks) == 3   # 4,096 per item
    small = RecentRequests(1000)
    State.from_image(iter(chunks), recent=small)
    assert small.get((b"client-%d" % (10_000 % 3), 10_000))[0] == 10_000
    assert small.get((b"client-%d" % (9_000 % 3), 9_000)) is None
    assert 500 <= len(small) <= 1000


def test_loading_without_a_table_checks_the_entries_and_drops_them():
    state, table = filled(5)
    assert State.from_image(state.image_chunks(table)).digest == state.digest


def image_items(state: State, table: RecentRequests) -> list:
    return list(msgpack.Unpacker(io.BytesIO(b"".join(state.image_chunks(table))), raw=False,
                                 strict_map_key=False))


def repack(items_: list) -> list[bytes]:
    return [msgpack.packb(item, use_bin_type=True) for item in items_]


@pytest.mark.parametrize("damage, message", [
    (lambda items_: items_[-2][1].__setitem__(2, 99), "not within 1..5"),   # txid > image's
    (lambda items_: items_[-2][1].__setitem__(0, "text"), "bad origin"),
    (lambda items_: items_[-2][1].pop(), "4-element"),
    (lambda items_: items_[0][1].__setitem__("recent", 4), "says 4"),
    (lambda items_: items_[0][1].__setitem__("format", 1), "format 1 image"),
    (lambda items_: items_[0][1].__setitem__("format", 4), "format 4"),     # not yet known
])
def test_a_damaged_table_makes_the_image_unusable(damage, message):
    state, table = filled(5)
    items_ = image_items(state, table)
    assert items_[-2][0] == "recent" and items_[0][1]["recent"] == 5
    damage(items_)
    with pytest.raises(CorruptionError, match=message):
        State.from_image(repack(items_), recent=RecentRequests())


def test_the_body_checksum_covers_the_table(tmp_path):
    state, table = filled(20)
    header = write(tmp_path, state, table)
    data = bytearray(header.path.read_bytes())
    # the last entry's result is the last byte before the "end" item: flip it
    end = data.rindex(msgpack.packb(["end", state.digest]))
    data[end - 1] ^= 0x01
    header.path.write_bytes(bytes(data))
    with pytest.raises(CorruptionError, match="checksum"):
        load_snapshot(header.path, RecentRequests())


# --- a file of the old format ----------------------------------------------------------------

def test_a_snapshot_file_of_the_old_format_loads_with_no_table(tmp_path):
    path = tmp_path / snapshots.snapshot_name(7)
    path.write_bytes(bytes.fromhex(OLD_SNAPSHOT_HEX))
    first = msgpack.Unpacker(raw=False)
    first.feed(path.read_bytes()[snapshots.HEADER_BYTES:])
    assert next(first)[1]["format"] == 1 < IMAGE_FORMAT
    table = RecentRequests()
    state = load_snapshot(path, table)
    assert (state.txid, state.digest, len(table)) == (7, OLD_DIGEST, 0)
    assert state.validate() == []
    assert state.jobs.jobs["job-1"].tasks[0].state.value == "succeeded"
    assert state.ns.get("/a/b") == [1, "two"]


def test_an_engine_recovers_from_an_old_format_snapshot_and_snapshots_the_new_format(tmp_path):
    snap_dir = tmp_path / "data" / "snapshots"
    snap_dir.mkdir(parents=True)
    (snap_dir / snapshots.snapshot_name(7)).write_bytes(bytes.fromhex(OLD_SNAPSHOT_HEX))
    engine = Engine(tmp_path / "data", keep_snapshots=1)
    report = engine.open()
    try:
        assert (report.snapshot_txid, report.digest) == (7, OLD_DIGEST)
        assert len(engine.recent_requests) == 0
        txid, result = engine.submit(r.Put("/new", encode(1)), origin=(b"c", 1))
        assert (txid, result) == (8, 1)
        engine.snapshot()
    finally:
        engine.close()
    table = RecentRequests()
    load_snapshot(snap_dir / snapshots.snapshot_name(8), table)
    assert items(table) == [((b"c", 1), (8, 1))]


# --- the writers and loaders -----------------------------------------------------------------

def test_engine_snapshot_and_open_keep_the_requests_the_snapshot_covers(tmp_path):
    engine = Engine(tmp_path, keep_snapshots=1, segment_bytes=4096)
    engine.open()
    answers = {}
    try:
        for n in range(300):
            answers[(b"c", n)] = engine.submit(r.Put(f"/k{n % 5}", encode(n)),
                                               origin=(b"c", n))
        engine.snapshot()
        answers[(b"c", 300)] = engine.submit(r.Delete("/k1"), origin=(b"c", 300))
    finally:
        engine.close()
    again = Engine(tmp_path, keep_snapshots=1)
    report = again.open()
    try:
        # the first 300 records were not replayed: their requests came from the snapshot
        assert (report.snapshot_txid, report.replayed_records) == (300, 1)
        for origin, answer in answers.items():
            assert again.recent(origin) == answer, origin
    finally:
        again.close()


def test_a_snapshot_that_fails_half_way_leaves_no_requests_behind(tmp_path):
    state, table = filled(10)
    older_state, older_table = filled(4)
    write(tmp_path / "snapshots", older_state, older_table)
    header = write(tmp_path / "snapshots", state, table)
    data = bytearray(header.path.read_bytes())
    data[-20] ^= 0xFF                               # the body crc fails at the end
    header.path.write_bytes(bytes(data))
    engine = Engine(tmp_path, keep_snapshots=3)
    report = engine.open()
    try:
        assert report.snapshot_txid == 4 and report.skipped_snapshots
        assert items(engine.recent_requests) == items(older_table)
    finally:
        engine.close()


def checkpoint_node(tmp_path) -> CheckpointNode:
    return CheckpointNode(load_checkpoint_config(None, env={}, flags={
        "data_dir": str(tmp_path), "promote_data_dir": str(tmp_path / "promoted")}))


class Script:
    def __init__(self, *answers) -> None:
        self.answers = list(answers)

    def handle(self, event):
        return self.answers.pop(0) if self.answers else []


def test_the_checkpoint_writer_writes_the_replicas_table_and_a_restart_loads_it(tmp_path):
    records = [(txid, 1, r.encode_record(r.Put("/k", encode(txid)), (b"c", 50 + txid)))
               for txid in range(1, 6)]
    node = checkpoint_node(tmp_path)
    try:
        node.replica.machine = Script([fm.Apply(records), fm.Checkpoint(5, 1)])
        node.replica.feed(fm.Tick(0.0))
        assert len(node.recent) == 5 and node.child is not None
        wait_for(lambda: node.child.poll() is not None, what="the checkpoint written")
        assert node.child.outcome.ok, node.child.outcome
        node.child = None
        table = RecentRequests()
        load_snapshot(tmp_path / "snapshots" / snapshots.snapshot_name(5), table)
        assert items(table) == items(node.recent)
        assert table.get((b"c", 53)) == (3, 3)
    finally:
        node.close()
    restarted = checkpoint_node(tmp_path)
    try:
        assert restarted._load_local() == 5
        assert items(restarted.recent) == items(table)
    finally:
        restarted.close()


def test_the_promotion_snapshot_carries_the_replicas_table(tmp_path):
    state, table = filled(30)
    config = load_checkpoint_config(None, env={}, flags={"data_dir": str(tmp_path)})
    directory = write_master_dir(config, state, table, 2)
    engine = Engine(directory)
    report = engine.open()
    try:
        assert report.snapshot_txid == 30 and report.replayed_records == 0
        assert items(engine.recent_requests) == items(table)
    finally:
        engine.close()


def test_the_documented_example_item_is_what_the_writer_writes():
    state = State()
    for txid in range(1, 6):
        state.apply(txid, r.Put(f"/k{txid}", encode(txid)))
    table = RecentRequests()
    table.remember((b"\x01\x02", 7), 5, 1)
    item = list(state.image_chunks(table))[-2]
    assert item == bytes.fromhex("92 a6 72 65 63 65 6e 74 94 c4 02 01 02 07 05 01")


def test_the_nodes_table_limit_is_its_configured_recent_requests(tmp_path):
    """A replica that remembers 4 requests keeps (as any table) between 2 and 4 of the
    newest, so its snapshots carry no more; the default stays the master's 100,000."""
    assert load_checkpoint_config(None, env={}, flags={}).recent_requests == 100_000
    records = [(txid, 1, r.encode_record(r.Put("/k", encode(txid)), (b"c", txid)))
               for txid in range(1, 11)]
    node = CheckpointNode(load_checkpoint_config(None, env={
        "MWCLUSTER_CHECKPOINT_RECENT_REQUESTS": "4"}, flags={"data_dir": str(tmp_path)}))
    try:
        node.replica.machine = Script([fm.Apply(records)])
        node.replica.feed(fm.Tick(0.0))
        assert 2 <= len(node.recent) <= 4 and node.recent.get((b"c", 10))[0] == 10
        assert node.recent.get((b"c", 1)) is None
    finally:
        node.close()
