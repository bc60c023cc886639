"""The master's event loop in this process, over a journal whose I/O the test controls
(FaultyJournalIO): sync replies wait for their fsync without blocking anyone else; a failing
disk answers `unavailable` to writes while reads go on; stopping answers what it saved.
"""

from __future__ import annotations

import errno
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import msgpack
import pytest

from mwcluster.config import load_master_config
from mwcluster.engine import Engine
from mwcluster.nodes.master.node import Master
from mwcluster.storage.epoch import read_epoch
from mwcluster.storage.fsutil import FaultyJournalIO
from mwcluster.testing import RawDealer, wait_for
from mwcluster.wire.protocol import ErrorCode, Op

pytestmark = pytest.mark.fault


def pack(value) -> bytes:
    return msgpack.packb(value, use_bin_type=True)


@contextmanager
def running_master(data_dir, io: FaultyJournalIO, **flags) -> Iterator[tuple[Master, list]]:
    config = load_master_config(None, env={}, flags={
        "data_dir": str(data_dir), "client_endpoint": "tcp://127.0.0.1:0",
        "pub_endpoint": "tcp://127.0.0.1:0", **flags})
    master = Master(config, journal_io=io).open()
    exit_codes: list[int] = []
    loop = threading.Thread(target=lambda: exit_codes.append(master.run()), name="master-loop")
    loop.start()
    try:
        yield master, exit_codes
    finally:
        io.heal()
        io.block_writes.set()
        master.request_stop()
        loop.join(timeout=30)
        assert not loop.is_alive(), "the master loop did not stop"


def test_sync_reply_waits_for_its_fsync_without_blocking_async_requests(tmp_path):
    io = FaultyJournalIO()
    with running_master(tmp_path / "data", io) as (master, _), \
            RawDealer(master.client_endpoint) as dealer:
        io.block_writes.clear()                 # the flusher's next write hangs
        sync_rid = dealer.send(Op.PUT, ["/s", pack(1), None], durability=2)
        fast = dealer.call(Op.PUT, ["/a", pack(1), None], durability=1)
        assert (fast.status, fast.txid) == (0, 2)
        assert dealer.call(Op.GET, ["/s"]).result[0] == pack(1)    # applied, not yet durable
        status = dealer.status()
        assert status["parked_sync_replies"] == 1 and status["durable_txid"] == 0
        assert dealer.recv(timeout_s=0.05) is None                # still parked
        io.block_writes.set()
        reply = dealer.recv()
        assert (reply.request_id, reply.status, reply.txid) == (sync_rid, 0, 1)
        assert dealer.status()["durable_txid"] >= 1


def test_a_full_disk_refuses_writes_with_unavailable_and_reads_go_on(tmp_path):
    io = FaultyJournalIO()
    data = tmp_path / "data"
    with running_master(data, io) as (master, exit_codes), \
            RawDealer(master.client_endpoint) as dealer:
        assert dealer.call(Op.PUT, ["/ok", pack(1), None], durability=2).status == 0
        io.fail_write_errno = errno.ENOSPC
        accepted = dealer.call(Op.PUT, ["/buffered", pack(2), None])   # its write will fail
        assert accepted.status == 0
        wait_for(lambda: dealer.status()["journal_failed"], what="the journal to fail")
        refused = dealer.call(Op.PUT, ["/refused", pack(3), None])
        assert refused.status == ErrorCode.UNAVAILABLE and "No space" in refused.result[1]
        status = dealer.status()
        assert status["txid"] == accepted.txid and "injected" in status["last_error"]
        assert dealer.call(Op.GET, ["/ok"]).result[0] == pack(1)
        assert dealer.call(Op.PING).status == 0
        io.heal()
        wait_for(lambda: not dealer.status()["journal_failed"], what="the journal to heal")
        after = dealer.call(Op.PUT, ["/after", pack(4), None], durability=2)
        assert after.status == 0 and after.txid == accepted.txid + 1
    assert exit_codes == [0]
    engine = Engine(data, epoch=read_epoch(data))
    engine.open()
    try:
        assert engine.state.ns.list_prefix("/") == ["/after", "/buffered", "/ok"]
    finally:
        engine.close()


def test_stop_answers_parked_sync_requests_once_the_journal_saved_them(tmp_path):
    io = FaultyJournalIO()
    with running_master(tmp_path / "data", io) as (master, exit_codes), \
            RawDealer(master.client_endpoint) as dealer:
        io.block_writes.clear()
        rid = dealer.send(Op.PUT, ["/parked", pack(1), None], durability=2)
        wait_for(lambda: io.writes_waiting > 0, what="the flusher to start its write")
        master.request_stop()
        assert dealer.recv(timeout_s=0.05) is None
        io.block_writes.set()                   # the stop's final fsync can now complete
        reply = dealer.recv()
        assert (reply.request_id, reply.status, reply.txid) == (rid, 0, 1)
    assert exit_codes == [0]


def test_a_sync_reply_parked_when_the_disk_fails_is_answered_unavailable_then_a_retry_learns(
        tmp_path):
    io = FaultyJournalIO()
    with running_master(tmp_path / "data", io) as (master, _), \
            RawDealer(master.client_endpoint) as dealer:
        assert dealer.call(Op.PUT, ["/ok", pack(1), None], durability=2).status == 0
        io.fail_write_errno = errno.ENOSPC
        rid = dealer.send(Op.PUT, ["/limbo", pack(2), None], durability=2)
        reply = dealer.recv()            # not silence: an answer within a tick of the failure
        assert reply.request_id == rid and reply.status == ErrorCode.UNAVAILABLE, reply
        assert "not durable" in reply.result[1] and "same request id" in reply.result[1]
        # while failing, a retry of the same request is answered at once, still unavailable
        again = dealer.call(Op.PUT, ["/limbo", pack(2), None], durability=2, request_id=rid)
        assert again.status == ErrorCode.UNAVAILABLE and dealer.status()["parked_sync_replies"] == 0
        io.heal()
        wait_for(lambda: not dealer.status()["journal_failed"], what="the journal to heal")
        # the record did become durable: the retry now gets the original success
        learned = dealer.call(Op.PUT, ["/limbo", pack(2), None], durability=2, request_id=rid)
        assert learned.status == 0 and learned.txid == 2, learned
        assert dealer.status()["txid"] == 2
