"""A real full filesystem: a master process whose data directory is on a small tmpfs that the
test mounts (and always unmounts). When the disk fills, the master stops acknowledging writes
with `unavailable` and says so in status, keeps serving reads, never acknowledges what it could
not write; when space returns it resumes by itself; and nothing acknowledged is lost, across a
restart too. Skipped, with the reason, where mounting is not permitted."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import msgpack
import pytest

from mwcluster.testing import MasterProcess, RawDealer, wait_for
from mwcluster.wire.protocol import ErrorCode, Op

pytestmark = pytest.mark.fault

SIZE_BYTES = 8 << 20
MASTER_ENV = {**os.environ, "MWCLUSTER_SEGMENT_BYTES": str(256 << 10)}
VALUE = msgpack.packb("v" * 2000)


@pytest.fixture
def small_fs(tmp_path) -> Path:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root and mount(8)")
    mnt = tmp_path / "fs"
    mnt.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={SIZE_BYTES}", "tmpfs",
                           str(mnt)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"mounting a tmpfs is not permitted here: {done.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(directory: Path, leave_bytes: int) -> Path:
    """A filler file that leaves about `leave_bytes` free."""
    free = shutil.disk_usage(directory).free
    filler = directory / "filler"
    with open(filler, "wb") as f:
        f.write(b"\0" * max(0, free - leave_bytes))
    return filler


def test_a_full_filesystem_stops_acknowledgements_then_resumes_losing_nothing(small_fs):
    data = small_fs / "data"
    with MasterProcess(data, env=MASTER_ENV) as master, \
            RawDealer(master.client_endpoint) as dealer:
        assert dealer.call(Op.PUT, ["/before", msgpack.packb(1), None], 2).status == 0
        filler = fill(small_fs, 300 << 10)
        acked: list[str] = []
        refused = None
        for i in range(2000):          # bounded: ~4 MB of values against ~300 KiB free
            reply = dealer.call(Op.PUT, [f"/k/{i:05d}", VALUE, None], durability=2)
            if reply.status == 0:
                acked.append(f"/k/{i:05d}")
                continue
            refused = reply
            break
        assert refused is not None, "the filesystem never filled"
        assert refused.status == ErrorCode.UNAVAILABLE, refused
        status = dealer.status()
        assert status["journal_failed"] and "space" in status["last_error"].lower(), status
        # a write now is refused at once, with what to do
        again = dealer.call(Op.PUT, ["/during", msgpack.packb(2), None], durability=1)
        assert again.status == ErrorCode.UNAVAILABLE and again.result[1], again
        # reads go on
        assert dealer.call(Op.GET, ["/before"]).result[0] == msgpack.packb(1)
        assert len(dealer.call(Op.LIST, ["/k/", 10_000, None]).result) >= len(acked)
        filler.unlink()
        wait_for(lambda: not dealer.status()["journal_failed"], timeout_s=30,
                 what="the journal to resume once space returned")
        after = dealer.call(Op.PUT, ["/after", msgpack.packb(3), None], durability=2)
        assert after.status == 0, after
        present = set(dealer.call(Op.LIST, ["/k/", 10_000, None]).result)
        assert set(acked) <= present
        assert master.terminate() == 0
    with MasterProcess(data, env=MASTER_ENV) as master, \
            RawDealer(master.client_endpoint) as dealer:
        present = set(dealer.call(Op.LIST, ["/k/", 10_000, None]).result)
        assert set(acked) <= present, sorted(set(acked) - present)[:5]
        assert dealer.call(Op.GET, ["/after"]).result[0] == msgpack.packb(3)
        assert dealer.call(Op.GET, ["/during"]).result is None
