"""Kills that land exactly where a random kill rarely does: the master, under the crash
loop's mixed load, kills itself with SIGKILL at a named crash point
(`mwcluster.storage.crashpoints`): inside a segment roll, inside a flush's write, between a
write and its fsync, inside a journal purge, and just after an uploaded snapshot was renamed
into place. After the restart the crash loop's checks hold (`crash_model.check_cycle`:
every acknowledged sync write present, the state a prefix of what each stream sent, the
records all accounted for), the data directory shows the point was really reached, a
further cycle of load and kill recovers too, and the checkpoint node ends in step with the
master."""

from __future__ import annotations

from pathlib import Path

import pytest

from crash_model import MASTER_ENV, Rig
from mwcluster.storage import segments as seg
from mwcluster.storage import snapshot as snapshots
from mwcluster.storage.crashpoints import CRASH_ENV

pytestmark = pytest.mark.fault


def newest_segment(data: Path) -> Path:
    return seg.list_segments(data / "journal")[-1][1]


def was_empty_segment(rig: Rig) -> None:
    assert newest_segment(rig.data).stat().st_size == 0


def was_header_only(rig: Rig) -> None:
    assert newest_segment(rig.data).stat().st_size == seg.HEADER_SIZE


def was_torn(rig: Rig) -> None:
    """The newest segment ends inside a record."""
    scan = seg.scan_segment(newest_segment(rig.data))
    assert scan.verdict is seg.Verdict.TORN_TAIL, scan


def was_cut(rig: Rig) -> None:
    assert rig.recovered["recovery"]["journal_cut_bytes"] > 0, rig.recovered["recovery"]


def note_newest_snapshot(rig: Rig) -> None:
    rig.newest_snapshot = snapshots.list_snapshots(rig.data / "snapshots")[0][0]


def newest_snapshot_loaded(rig: Rig) -> None:
    """The restart loaded the snapshot renamed into place just before the crash."""
    assert rig.recovered["recovery"]["snapshot_txid"] == rig.newest_snapshot, \
        (rig.newest_snapshot, rig.recovered["recovery"])


CASES = [   # (point, hit at which to die, durability, check before / after the restart)
    ("segment.create", 3, "sync", was_empty_segment, None),
    ("segment.header", 3, "sync", was_header_only, None),
    ("flush.torn", 400, "sync", was_torn, was_cut),
    ("flush.torn", 400, "async", was_torn, was_cut),
    ("flush.unsynced", 400, "sync", None, None),
    ("purge.unlink", 1, "sync", None, None),
    ("install.renamed", 2, "sync", note_newest_snapshot, newest_snapshot_loaded),
]


@pytest.mark.parametrize("point, hit, durability, before, after", CASES,
                         ids=[f"{c[0]}-{c[2]}" for c in CASES])
def test_master_killed_at_crash_point(tmp_path, point, hit, durability, before, after):
    env = {**MASTER_ENV, CRASH_ENV: f"{point}:{hit}"}
    rig = Rig(tmp_path, durability, f"crash-point-{point}-{durability}", master_env=env)
    try:
        rig.start()
        died = rig.cycle(60, until_exit=True,
                         before_restart=(lambda: before(rig)) if before else None)
        assert died, f"the master did not reach crash point {point} (hit {hit}) within 60 s"
        if after is not None:
            after(rig)
        assert not rig.cycle(rig.rng.uniform(0.2, 0.5)), "the restarted master died alone"
        rig.check_node_in_step()
    finally:
        rig.stop()
