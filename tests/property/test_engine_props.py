"""Property tests of the engine on real files: random histories survive a graceful stop, a
snapshot at a random point, and a torn journal tail at random byte offsets.

Each accepted record's resulting digest is kept, so "the recovered state is the state after a
prefix of the history" is checked exactly: after recovery at txid t the digest must equal
the digest the live engine had right after record t.
"""

from __future__ import annotations

import shutil

from helpers import deletes, merges, multis, puts
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from mwcluster.engine import Engine
from mwcluster.errors import ApplyError
from mwcluster.storage.segments import list_segments

histories = st.lists(st.one_of(puts, puts, merges, deletes, multis), min_size=4, max_size=40)


def _run_history(data_dir, ops, snapshot_at):
    engine = Engine(data_dir, durability="async")
    engine.open()
    digests = [engine.state.digest]
    snapshot_txid = 0
    for i, op in enumerate(ops):
        try:
            engine.submit(op)
            digests.append(engine.state.digest)
        except ApplyError:
            pass
        if i == snapshot_at:
            snapshot_txid = engine.snapshot().txid
    image = engine.state.image_bytes()
    engine.close()
    return digests, image, snapshot_txid


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(ops=histories, snapshot_at=st.integers(-1, 40), data=st.data())
def test_recovery_gives_the_live_state_or_an_exact_prefix(tmp_path_factory, ops, snapshot_at,
                                                          data):
    base = tmp_path_factory.mktemp("engine")
    digests, image, snapshot_txid = _run_history(base / "live", ops, snapshot_at)
    engine = Engine(base / "live")
    engine.open()
    assert engine.state.image_bytes() == image         # graceful stop: everything
    engine.close()

    segments = list_segments(base / "live" / "journal")
    # A crash can tear only what was not yet fsynced, and a snapshot is taken only of
    # fsynced records, which then roll to a new segment: so cut only a segment that starts
    # after the snapshot (cutting below a snapshot is damage, refused elsewhere).
    if not segments or segments[-1][0] <= snapshot_txid:
        event("no segment after the snapshot to cut")
        return
    event("cut the newest segment")
    newest = segments[-1][1]
    size = newest.stat().st_size
    cuts = data.draw(st.lists(st.integers(0, size), min_size=1, max_size=6, unique=True))
    for n, cut in enumerate(cuts):
        copy = base / f"cut{n}"
        shutil.copytree(base / "live", copy)
        target = copy / "journal" / newest.name
        with open(target, "r+b") as f:
            f.truncate(cut)
        engine = Engine(copy)
        engine.open()
        t = engine.state.txid
        assert t < len(digests)
        assert engine.state.digest == digests[t], f"cut at byte {cut} of {size}"
        assert engine.state.validate() == []
        engine.close()
