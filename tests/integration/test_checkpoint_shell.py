"""The checkpoint node's shell in-process, with a scripted machine: it executes every
instruction of one event before the next event, and after a record fails to apply it skips
what assumed that record, but still answers a checkpoint the machine counts as started."""

from __future__ import annotations

from mwcluster.config import load_checkpoint_config
from mwcluster.core import follower as fm
from mwcluster.core import records as r
from mwcluster.core.records import encode_record
from mwcluster.core.state import State
from mwcluster.core.values import encode
from mwcluster.nodes.checkpoint.node import CheckpointNode


class Script:
    """Answers each event with the next scripted list of instructions; records the events."""

    def __init__(self, *answers) -> None:
        self.answers = list(answers)
        self.events: list = []

    def handle(self, event):
        self.events.append(event)
        return self.answers.pop(0) if self.answers else []


def node_with(script: Script, tmp_path) -> CheckpointNode:
    node = CheckpointNode(load_checkpoint_config(None, env={},
                                                 flags={"data_dir": str(tmp_path)}))
    node.replica.machine = script
    return node


def put(txid: int, key: str = "/k") -> tuple[int, int, bytes]:
    return txid, 1, encode_record(r.Put(key, encode(txid)))


def test_after_a_failed_apply_the_rest_is_skipped_and_a_checkpoint_is_answered(tmp_path):
    bad = (2, 1, b"\xc1")                              # not msgpack
    script = Script([fm.Apply([put(1), bad, put(3)]), fm.CheckDigest(1, 3, 123),
                     fm.Checkpoint(3, 1), fm.Note("info", "still logged? no")])
    node = node_with(script, tmp_path)
    try:
        node.replica.feed(fm.Tick(0.0))
        assert node.state.txid == 1                     # 1 applied, 2 failed, 3 skipped
        kinds = [type(e).__name__ for e in script.events]
        assert kinds == ["Tick", "ApplyFailed", "CheckpointFailed"]
        assert script.events[1].txid == 2 and "InvalidRecord" in script.events[1].reason
        assert "record 2 did not apply" in script.events[2].reason
        assert node.child is None
    finally:
        node.close()


def test_instruction_outcomes_are_fed_after_the_whole_list(tmp_path):
    script = Script([fm.Apply([put(1)]), fm.CheckDigest(1, 1, 5), fm.Apply([put(2)])])
    node = node_with(script, tmp_path)
    try:
        node.replica.feed(fm.Tick(0.0))
        assert node.state.txid == 2
        result = script.events[1]
        assert isinstance(result, fm.DigestResult) and result.txid == 1
        at_1 = State()
        at_1.apply(1, r.Put("/k", encode(1)))
        assert (result.expected, result.actual) == (5, at_1.digest)   # at txid 1, not 2
    finally:
        node.close()


def test_set_aside_renames_the_snapshots_above_the_verified_txid(tmp_path):
    from mwcluster.storage import snapshot as snapshots

    state = State()
    snap_dir = tmp_path / "snapshots"
    for txid in range(1, 4):
        state.apply(txid, r.Put("/k", encode(txid)))
        snapshots.write_snapshot(snap_dir, txid, 1, state.digest, state.image_chunks(), 0)
    script = Script([fm.SetAsideSnapshots(1, "digest mismatch at txid 3")])
    node = node_with(script, tmp_path)
    try:
        node.replica.feed(fm.Tick(0.0))
        assert [t for t, _ in snapshots.list_snapshots(snap_dir)] == [1]
        assert sorted(p.name for p in snap_dir.glob("*.diverged")) == [
            snapshots.snapshot_name(2) + ".diverged", snapshots.snapshot_name(3) + ".diverged"]
    finally:
        node.close()


def test_a_digest_mismatch_is_logged_at_error_with_the_epoch_and_txid(tmp_path, caplog):
    at_1 = State()
    at_1.apply(1, r.Put("/k", encode(1)))
    wrong = at_1.digest ^ 0xFF
    script = Script([fm.Apply([put(1)]), fm.CheckDigest(4, 1, wrong)],
                    [fm.DigestMismatch(4, 1, wrong, at_1.digest)])
    node = node_with(script, tmp_path)
    try:
        with caplog.at_level("ERROR", logger="mwcluster.nodes.checkpoint.node"):
            node.replica.feed(fm.StreamBatch(4, 1, 1, [list(put(1))], 0.0, wrong))
        result = script.events[1]
        assert isinstance(result, fm.DigestResult)
        assert (result.expected, result.actual) == (wrong, at_1.digest)
        [line] = [rec for rec in caplog.records if rec.levelname == "ERROR"]
        assert "epoch 4: DIGEST MISMATCH at txid 1" in line.getMessage()
        assert f"{wrong:016x}" in line.getMessage()
        assert node.replica.digest_mismatches == 1
    finally:
        node.close()
