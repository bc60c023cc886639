"""The log stream and the reliable replication paths, as a replica uses them: subscribe, fill
gaps with FETCH, check the digests of heartbeats and of log batches; bootstrap from snapshot chunks when FETCH answers
`truncated`."""

from __future__ import annotations

import os
import time

import msgpack
import zmq

from mwcluster.core import records as r
from mwcluster.core.records import decode_payload
from mwcluster.core.state import State
from mwcluster.core.values import encode
from mwcluster.engine import Engine, load_snapshot
from mwcluster.storage.epoch import read_epoch
from mwcluster.testing import MasterProcess, RawDealer
from mwcluster.wire.protocol import TOPIC_HEARTBEAT, TOPIC_LOG, ErrorCode, Op, decode_pub


def pack(value) -> bytes:
    return msgpack.packb(value, use_bin_type=True)


def env(**values) -> dict[str, str]:
    return {**os.environ, **{f"MWCLUSTER_{k.upper()}": str(v) for k, v in values.items()}}


class Replica:
    """What a replica does with the stream: apply txid == last + 1, fill gaps with FETCH."""

    def __init__(self, dealer: RawDealer, state: State | None = None) -> None:
        self.dealer = dealer
        self.state = state or State()
        self.fetches = 0
        self.verified_digests = 0
        self.verified_batches = 0

    def apply(self, records) -> None:
        for txid, _epoch, payload in records:
            if txid == self.state.txid + 1:
                self.state.apply(txid, decode_payload(payload)[0])

    def fill_to(self, txid: int) -> None:
        while self.state.txid < txid:
            reply = self.dealer.call(Op.FETCH, [self.state.txid + 1, 4096])
            assert reply.status == 0, reply
            self.fetches += 1
            self.apply(reply.result[1])

    def on_message(self, topic: bytes, body: bytes) -> None:
        topic, fields = decode_pub(topic, body)
        if topic == TOPIC_LOG:
            _epoch, first, last, records, digest = fields
            if first > self.state.txid + 1:
                self.fill_to(first - 1)
            self.apply(records)
            if digest is not None and last == self.state.txid:
                assert digest == self.state.digest, "replica diverged from the master"
                self.verified_batches += 1
        else:
            _epoch, durable, digest, _now_ms = fields
            if durable > self.state.txid:
                self.fill_to(durable)
            if digest is not None and durable == self.state.txid:
                assert digest == self.state.digest, "replica diverged from the master"
                self.verified_digests += 1


def subscribe(endpoint: str) -> zmq.Socket:
    sub = zmq.Context.instance().socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(endpoint)
    return sub


def recv_pub(sub: zmq.Socket, deadline: float) -> tuple[bytes, bytes]:
    remaining_ms = int((deadline - time.monotonic()) * 1000)
    assert remaining_ms > 0 and sub.poll(remaining_ms), "no log-stream message in time"
    topic, body = sub.recv_multipart()
    return topic, body


def test_a_late_subscriber_fills_the_gap_with_fetch_and_verifies_digests(tmp_path):
    with MasterProcess(tmp_path / "data", env=env(heartbeat_interval_s=0.05)) as master, \
            RawDealer(master.client_endpoint) as dealer:
        for i in range(40):      # published before anyone listens: the replica misses them
            assert dealer.call(Op.PUT, [f"/s/{i}", pack(i), None], durability=2).status == 0
        sub = subscribe(master.pub_endpoint)
        replica = Replica(RawDealer(master.client_endpoint))
        try:
            deadline = time.monotonic() + 10
            while True:           # connected once a heartbeat arrives
                topic, body = recv_pub(sub, deadline)
                if topic == TOPIC_HEARTBEAT:
                    break
            last = 0
            for i in range(40):
                reply = dealer.call(Op.PUT, [f"/s/{i}", pack({"i": i}), None], durability=2)
                assert reply.status == 0
                last = reply.txid
            saw_batch = False
            while replica.state.txid < last or replica.verified_digests == 0 \
                    or replica.verified_batches == 0:
                topic, body = recv_pub(sub, deadline)
                saw_batch |= topic == TOPIC_LOG
                assert decode_pub(topic, body)[1][0] == master.epoch
                replica.on_message(topic, body)
            assert saw_batch and replica.fetches >= 1
            status = dealer.status()
            assert (replica.state.txid, replica.state.digest) == (status["txid"],
                                                                  status["digest"])
            assert replica.state.validate() == []
        finally:
            sub.close(0)
            replica.dealer.close()


def test_fetch_below_the_oldest_record_is_truncated_and_the_snapshot_fills_it(tmp_path):
    data = tmp_path / "data"
    with MasterProcess(data, env=env(segment_bytes=4096)) as master, \
            RawDealer(master.client_endpoint) as dealer:
        for i in range(300):     # one fsync each, so the records spread over segments
            assert dealer.call(Op.PUT, [f"/t/{i:03d}", pack("x" * 40), None],
                               durability=2).status == 0
        assert master.terminate() == 0
    # a snapshot taken offline (the checkpoint node's job later) lets the journal be purged
    engine = Engine(data, epoch=read_epoch(data), segment_bytes=4096)
    engine.open()
    header = engine.snapshot(created_ms=int(time.time() * 1000))
    for i in range(5):
        engine.submit(r.Put(f"/after/{i}", encode(i)))
    engine.close()
    with MasterProcess(data) as master, RawDealer(master.client_endpoint) as dealer:
        assert master.epoch == 2
        reply = dealer.call(Op.FETCH, [1, 1 << 20])
        assert reply.status == ErrorCode.TRUNCATED and "snapshot" in reply.result[1]
        info = dealer.call(Op.SNAPSHOT_INFO)
        txid, epoch, digest, size, _created_ms = info.result
        assert (txid, digest) == (header.txid, header.digest) == (300, header.digest)
        # credit-based transfer: keep at most 4 chunk requests in flight
        chunk, credit, offset = 1000, 4, 0
        pieces: dict[int, bytes] = {}
        in_flight: dict[int, int] = {}
        while offset < size or in_flight:
            while offset < size and len(in_flight) < credit:
                rid = dealer.send(Op.SNAPSHOT_CHUNK, [txid, offset, chunk])
                in_flight[rid] = offset
                offset += chunk
            reply = dealer.recv()
            assert reply.status == 0
            pieces[in_flight.pop(reply.request_id)] = reply.result
        path = tmp_path / "fetched.mws"
        path.write_bytes(b"".join(pieces[k] for k in sorted(pieces)))
        replica = Replica(dealer, load_snapshot(path))
        assert replica.state.txid == 300
        status = dealer.status()
        replica.fill_to(status["durable_txid"])
        assert (replica.state.txid, replica.state.digest) == (305, status["digest"])
        assert status["last_snapshot_txid"] == 300 and status["last_snapshot_age_s"] < 600
        assert status["recovery"]["snapshot_txid"] == 300


def test_records_the_tick_logs_are_published_without_another_request(tmp_path):
    """A WorkerLost logged by the master's tick (no request applied it) goes out on the
    stream by itself, in a batch that carries the master's digest at its last txid."""
    with MasterProcess(tmp_path / "data", env=env(heartbeat_interval_s=0.05,
                                                  worker_timeout_s=0.5,
                                                  worker_heartbeat_ms=100)) as master, \
            RawDealer(master.client_endpoint) as dealer:
        sub = subscribe(master.pub_endpoint)
        try:
            deadline = time.monotonic() + 10
            while recv_pub(sub, deadline)[0] != TOPIC_HEARTBEAT:   # connected
                pass
            reply = dealer.call(Op.WORKER_REGISTER, ["w1", "", 1], durability=2)
            assert reply.status == 0
            lost = reply.txid + 1           # the tick logs it; nothing else is sent
            while True:
                topic, body = recv_pub(sub, deadline)
                if topic != TOPIC_LOG:
                    continue
                _epoch, _first, last, records, digest = decode_pub(topic, body)[1]
                if last >= lost:
                    break
            assert records[-1][0] == last == lost
            status = dealer.status()
            assert status["txid"] == lost and digest == status["digest"]
            assert status["published_txid"] == lost
        finally:
            sub.close(0)
