"""`replicated` writes against a real master and checkpoint node: acknowledged only once the
node has applied them (so a promotion right after keeps them)."""

from __future__ import annotations

from mwcluster import Client
from mwcluster.testing import MasterProcess, wait_for
from mwcluster.testing.failover import StandbyProcess


def test_replicated_writes_are_on_the_standby_when_acknowledged(tmp_path):
    with MasterProcess(tmp_path / "m") as master, StandbyProcess(tmp_path / "c", master) as sb:
        with Client([master.client_endpoint], timeout_s=10) as client:
            client.put("/warm", 0, durability="sync")
            wait_for(lambda: sb.status()["replica_txid"] >= 1, what="standby following")
            for i in range(50):
                txid = client.put(f"/r/{i}", i, durability="replicated")
                # acknowledged: the standby reported having it
                assert client.status()["replica_txid"] >= txid
            status = client.status()
            assert status["parked_replicated_replies"] == 0 and status["replica_acks"] >= 1
        report = sb.promote()
        assert report["txid"] >= txid
        with Client([sb.promote_client_endpoint], timeout_s=10) as client:
            assert client.get("/r/49") == 49
        assert sb.terminate() == 0
