"""Reads served by the standby (STANDBY_READ at a checkpoint node's status endpoint) against
a real master and checkpoint node: a read waits until the replica has the txid the client has
seen, a read the replica cannot reach in time is answered `behind`, and a Client with
read_from="standby" reads its own writes through the standby, falling back to the master."""

from __future__ import annotations

import msgpack
import pytest

from mwcluster import Client
from mwcluster.testing import MasterProcess, RawDealer, wait_for
from mwcluster.testing.checkpoint import CheckpointProcess
from mwcluster.wire.protocol import ErrorCode, Op


@pytest.fixture
def cluster(tmp_path):
    with MasterProcess(tmp_path / "m", durability="sync") as master:
        node = CheckpointProcess(tmp_path / "c", master)
        node.start()
        try:
            yield master, node
        finally:
            node.stop()


def test_a_standby_read_waits_for_the_txid_and_says_where_it_was_served(cluster):
    master, node = cluster
    with Client(master.client_endpoint) as client, \
            RawDealer(node.status_endpoint) as dealer:
        txid = client.put("/sr/a", "one")
        wait_for(lambda: node.status()["replica_txid"] >= txid, what="the replica has it")
        reply = dealer.call(Op.STANDBY_READ, [txid, 1000, int(Op.GET), ["/sr/a"]])
        assert reply.status == 0 and reply.txid >= txid
        assert msgpack.unpackb(reply.result[0]) == "one" and reply.result[1] == 1
        # a read at a txid not applied yet waits for it
        rid = dealer.send(Op.STANDBY_READ, [txid + 1, 20_000, int(Op.GET), ["/sr/b"]])
        later = client.put("/sr/b", "two")
        reply = dealer.recv(timeout_s=20)
        assert reply.request_id == rid and reply.status == 0 and reply.txid >= later
        assert msgpack.unpackb(reply.result[0]) == "two"
        # one the replica does not reach in time is sent to the master
        reply = dealer.call(Op.STANDBY_READ, [later + 1000, 50, int(Op.STAT), ["/sr/a"]])
        assert reply.status == ErrorCode.BEHIND and "read from the master" in reply.result[1]
        # only namespace reads; malformed ones get a clear refusal
        reply = dealer.call(Op.STANDBY_READ, [0, 0, int(Op.PUT), ["/sr/x", b"\x01", None]])
        assert reply.status == ErrorCode.BAD_REQUEST and "ask the master" in reply.result[1]
        reply = dealer.call(Op.STANDBY_READ, ["x", 0, int(Op.GET), []])
        assert reply.status == ErrorCode.BAD_REQUEST and "min_txid" in reply.result[1]
        reads = node.status()["standby_reads"]
        assert reads["served"] >= 2 and reads["waited"] >= 1 and reads["behind"] >= 1
        # the master does not serve STANDBY_READ itself
        with RawDealer(master.client_endpoint) as to_master:
            reply = to_master.call(Op.STANDBY_READ, [0, 0, int(Op.GET), ["/sr/a"]])
            assert reply.status == ErrorCode.BAD_REQUEST


def test_a_client_reading_from_the_standby_reads_its_own_writes(cluster):
    master, node = cluster
    with Client(master.client_endpoint, read_from="standby",
                standby=node.status_endpoint) as client:
        for i in range(20):
            client.put(f"/own/{i}", i)
            assert client.get(f"/own/{i}") == i          # never older than its own write
            assert client.stat(f"/own/{i}").version == 1
        assert client.list("/own/", 100) == sorted(f"/own/{i}" for i in range(20))
        assert client.children("/own", 100) == sorted(str(i) for i in range(20))
        assert client.standby.served >= 20
    # a reader that wrote nothing still never goes back: the standby's txid counts as seen
    with Client(master.client_endpoint) as writer, \
            Client(master.client_endpoint, read_from="standby",
                   standby=node.status_endpoint) as reader:
        txid = writer.put("/own/other", "y")
        wait_for(lambda: node.status()["replica_txid"] >= txid, what="the replica has it")
        assert reader.get("/own/other") == "y" and reader.seen_txid >= txid
        assert reader.standby.served == 1
    with Client(master.client_endpoint, read_from="standby",
                standby=node.status_endpoint) as client:
        # with the standby gone, reads go to the master
        node.stop()
        client.put("/own/last", "x")
        assert client.get("/own/last") == "x" and client.standby.fallbacks >= 1


def test_read_from_needs_a_standby_endpoint():
    with pytest.raises(ValueError, match="standby=ENDPOINT"):
        Client("tcp://127.0.0.1:1", read_from="standby")
    with pytest.raises(ValueError, match="read_from must be one of"):
        Client("tcp://127.0.0.1:1", read_from="observer")
    with pytest.raises(ValueError, match="consistency must be"):
        Client("tcp://127.0.0.1:1", consistency="eventual")
