"""A lossy log stream: a proxy between the master's PUB and the checkpoint node drops,
duplicates and reorders published messages (log batches and heartbeats alike); the replica
must still end exact (the master's txid and digest), having told the faults apart: gaps
filled by FETCH, duplicates discarded."""

from __future__ import annotations

import os
import random
import threading

import pytest
import zmq

from mwcluster.testing import MasterProcess, RawDealer, wait_for
from mwcluster.testing.checkpoint import CheckpointProcess, idle_master_status, in_step, write

pytestmark = pytest.mark.fault

MASTER_ENV = {**os.environ, "MWCLUSTER_HEARTBEAT_INTERVAL_S": "0.05",
              "MWCLUSTER_PUBLISH_BATCH_BYTES": "2048"}


class LossyProxy:
    """SUB from the master's PUB, PUB to the node, losing in between: each message is
    dropped, sent twice, or held back and sent after the next one, each with probability
    `p` (seeded, so a failure repeats)."""

    def __init__(self, upstream: str, p: float, seed: int) -> None:
        self.ctx = zmq.Context()
        self.sub = self.ctx.socket(zmq.SUB)
        self.sub.setsockopt(zmq.LINGER, 0)
        self.sub.setsockopt(zmq.SUBSCRIBE, b"")
        self.sub.connect(upstream)
        self.pub = self.ctx.socket(zmq.PUB)
        self.pub.setsockopt(zmq.LINGER, 0)
        self.pub.bind("tcp://127.0.0.1:0")
        self.endpoint = self.pub.getsockopt_string(zmq.LAST_ENDPOINT)
        self.p = p
        self.rng = random.Random(seed)
        self.counts = {"forwarded": 0, "dropped": 0, "duplicated": 0, "reordered": 0}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        held = None
        while not self.stop.is_set():
            if not self.sub.poll(20):
                if held is not None:            # nothing came after it: let it go
                    self.pub.send_multipart(held)
                    held = None
                continue
            frames = self.sub.recv_multipart()
            roll = self.rng.random()
            if roll < self.p:
                self.counts["dropped"] += 1
                continue
            if held is None and roll < 2 * self.p:
                held = frames
                self.counts["reordered"] += 1
                continue
            self.pub.send_multipart(frames)
            self.counts["forwarded"] += 1
            if roll > 1 - self.p:
                self.pub.send_multipart(frames)
                self.counts["duplicated"] += 1
            if held is not None:
                self.pub.send_multipart(held)
                held = None

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=10)
        self.sub.close(0)
        self.pub.close(0)
        self.ctx.term()


class Via(MasterProcess):
    """What CheckpointProcess needs of a master: its ROUTER, and the proxy's PUB."""

    def __init__(self, master: MasterProcess, pub: str) -> None:
        super().__init__(master.data_dir)
        self.info = {"client": master.client_endpoint, "pub": pub}


@pytest.mark.parametrize("p", [0.05, 0.2])
def test_dropped_duplicated_and_reordered_stream_messages_leave_the_replica_exact(tmp_path, p):
    with MasterProcess(tmp_path / "m", env=MASTER_ENV) as master, \
            RawDealer(master.client_endpoint) as dealer:
        proxy = LossyProxy(master.pub_endpoint, p, seed=int(p * 100))
        try:
            with CheckpointProcess(tmp_path / "c", Via(master, proxy.endpoint),
                                   heartbeat_interval_s=0.05, txns=1000) as node:
                for round_ in range(5):
                    write(dealer, f"/r{round_}", 1500, window=128)
                    status = idle_master_status(dealer)
                    wait_for(lambda: in_step(node, status), timeout_s=30,
                             what=f"the replica to reach txid {status['txid']} through the "
                                  f"lossy stream ({proxy.counts})")
                wait_for(lambda: node.status()["checks_passed"] >= 1,
                         what="a digest check against a heartbeat that came through")
                s = node.status()
        finally:
            proxy.close()
    counts = proxy.counts
    assert counts["dropped"] and counts["duplicated"] and counts["reordered"], counts
    assert s["gaps"] >= 1 and s["duplicates"] >= 1, s
    assert s["checks_failed"] == 0 and s["apply_failures"] == 0 and s["reloads"] == 0, s
