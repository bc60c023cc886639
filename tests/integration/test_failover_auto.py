"""Automatic failover with real processes: kill -9 of the master; a client that knows both
endpoints and the standby's status endpoint votes when it times out; the standby, in `auto`
mode, takes over once the master has been silent for its timeout. The old master restarted
afterwards is fenced and rejoins as standby. The time to take over is measured and printed
(docs/benchmarks.md records it), never asserted."""

from __future__ import annotations

import time

from mwcluster import Client
from mwcluster.core.failover import promotion_epoch
from mwcluster.testing import MasterProcess, RawDealer, wait_for
from mwcluster.testing.checkpoint import write
from mwcluster.testing.failover import StandbyProcess

TIMEOUT_S = 3.0


def test_auto_failover_after_kill9_then_old_master_rejoins(tmp_path):
    old = MasterProcess(tmp_path / "m", durability="sync")
    with old, StandbyProcess(tmp_path / "c", old, failover="auto",
                             failover_timeout_s=TIMEOUT_S) as standby:
        with RawDealer(old.client_endpoint) as dealer:
            write(dealer, "/w", 200)
        wait_for(lambda: standby.status()["replica_txid"] >= 200, what="standby caught up")
        # while the master is alive, a vote is refused
        with RawDealer(standby.status_endpoint) as dealer:
            r = dealer.call(141, [])
            assert r.status == 0 and r.result["promoted"] is False
        endpoints = [old.client_endpoint, standby.promote_client_endpoint]
        with Client(endpoints, timeout_s=0.5, retries=40, sleep=lambda s: None,
                    standby_status=[standby.status_endpoint]) as client:
            assert client.put("/before-kill", 1)
            old_epoch = old.epoch
            killed_at = time.monotonic()
            old.kill()
            client.put("/after-kill", 2)        # times out, votes, moves to the standby
            wait_for(lambda: standby.master_info() is not None, 30, "the standby to serve")
            took_s = time.monotonic() - killed_at
            assert client.epochs.highest == promotion_epoch(old_epoch) and client.votes >= 1
            assert client.get("/after-kill") == 2 and client.get("/w/199") == {"i": 199}
        print(f"\nauto failover: the standby served {took_s:.2f} s after the kill -9 "
              f"(failover_timeout_s {TIMEOUT_S})")

        new = standby.promote_client_endpoint
        old.restart(("--peer-master-endpoint", new))
        with RawDealer(old.client_endpoint) as dealer:
            s = dealer.status()
            assert s["fenced"] and s["fenced_by"] == promotion_epoch(old_epoch)
        assert old.terminate() == 0
        old.restart(("--peer-master-endpoint", new, "--rejoin-as-standby"))
        with RawDealer(old.info["status"]) as dealer, Client([new], timeout_s=10) as client:
            target = client.status()["txid"]
            wait_for(lambda: dealer.status()["replica_txid"] == target, 30, "rejoined standby")
        assert old.terminate() == 0
        assert standby.terminate() == 0
