"""Watches and leases across a failover (docs/coordination.md): a watcher that knows both
endpoints resumes on the promoted standby from the txid it had reached, without a Resync
(the standby hands its replica's change log to the master it becomes), and a lease whose
holder keeps it alive survives the master change with a whole TTL."""

from __future__ import annotations

from mwcluster import Client
from mwcluster.testing import MasterProcess, wait_for
from mwcluster.testing.failover import StandbyProcess


def test_a_watch_and_a_kept_lease_carry_over_a_promotion(tmp_path):
    with MasterProcess(tmp_path / "m", durability="sync") as master, \
            StandbyProcess(tmp_path / "c", master) as standby:
        endpoints = [master.client_endpoint, standby.promote_client_endpoint]
        with Client(endpoints, timeout_s=2.0) as c, Client(endpoints, timeout_s=2.0) as w:
            lease = w.grant_lease(5.0)
            w.put("/f/holder", "me", lease=lease)
            keeper = w.keepalive(lease, interval_s=0.3)
            watch = c.watch("/f/", from_txid=1, give_up_s=60)
            written = [w.put(f"/f/{i}", i) for i in range(10)]
            seen = []
            while len(seen) < 11:
                seen.extend(watch.poll())
            wait_for(lambda: standby.status()["replica_txid"] >= written[-1], 20,
                     "the standby to have every record")
            report = standby.promote()
            assert report["watch_changes_adopted"] is True
            master.kill()
            more = [w.put(f"/f/{i}", -i) for i in range(3)]
            while len(seen) < 14:
                seen.extend(watch.poll())
            assert not watch.resyncs, "the watch had to re-read after the promotion"
            # the holder's lease lives on: the keepalives reach the new master
            sent = keeper.sent
            wait_for(lambda: keeper.sent >= sent + 3, 20, "keepalives on the new master")
            assert not keeper.lost.is_set() and w.get("/f/holder") == "me"
            keeper.stop()
            assert w.revoke_lease(lease) == 1
        assert [e.txid for e in seen[1:]] == written + more
        assert seen[0].key == "/f/holder"
        assert standby.terminate() == 0
