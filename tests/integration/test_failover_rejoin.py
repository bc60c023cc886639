"""The old master coming back after a promotion (real processes): kill -9 of the master, the
standby promoted; the old master restarted with its peer configured asks the peer first and
starts fenced; with --rejoin-as-standby it moves its journal aside (kept) and follows the new
master as its standby; given promote endpoints, it can then be promoted back (a fail-back),
which fences the node that replaced it."""

from __future__ import annotations

import pytest

from mwcluster import Client, errors
from mwcluster.core.failover import promotion_epoch
from mwcluster.testing import MasterProcess, RawDealer, wait_for
from mwcluster.testing.checkpoint import write
from mwcluster.client.connection import promote_standby
from mwcluster.testing.failover import StandbyProcess, free_endpoint


def test_old_master_restarts_fenced_then_rejoins_as_standby(tmp_path):
    old = MasterProcess(tmp_path / "m", durability="sync")
    with old, StandbyProcess(tmp_path / "c", old) as standby:
        with RawDealer(old.client_endpoint) as dealer:
            write(dealer, "/w", 300)
        wait_for(lambda: standby.status()["replica_txid"] >= 300, what="standby caught up")
        old_epoch = old.epoch
        old.kill()
        report = standby.promote()
        assert report["epoch"] == promotion_epoch(old_epoch) and report["old_master_fenced"] is False
        assert report["txid"] == 300 and report["records_missing"] == 0
        assert report["durability"] == "sync"       # the old master could not be asked
        new = standby.promote_client_endpoint
        # nobody follows the promoted master yet: a replicated write is refused at once,
        # saying why, and applies nothing (no wait, no misleading answer from elsewhere)
        with Client([new], timeout_s=10, retries=0) as client:
            assert client.status()["standby_follows"] is False
            with pytest.raises(errors.JournalUnavailable, match="no standby follows"):
                client.put("/r0", 1, durability="replicated")
            assert client.get("/r0") is None

        # restarted with its peer configured: it asks first, and starts fenced
        old.restart(("--peer-master-endpoint", new))
        with RawDealer(old.client_endpoint) as dealer:
            s = dealer.status()
            assert (s["fenced"], s["fenced_by"], s["epoch"]) == (True, report["epoch"],
                                                                old_epoch)
            assert dealer.call(1, ["/x", b"\x01", None]).status == 25      # PUT: fenced
        assert old.terminate() == 0

        # rejoin as the new master's standby
        with Client([new], timeout_s=10) as client:
            client.put("/after", 1)
        back, back_pub = free_endpoint(), free_endpoint()
        old.restart(("--peer-master-endpoint", new, "--rejoin-as-standby",
                     "--promote-client-endpoint", back, "--promote-pub-endpoint", back_pub))
        node_status = old.info["status"]
        with RawDealer(node_status) as dealer, Client([new], timeout_s=10) as client:
            target = client.status()["txid"]
            wait_for(lambda: dealer.status()["replica_txid"] == target and
                     dealer.status()["state"] == "following", 30, "the rejoined standby")
            s = dealer.status()
            assert s["role"] == "checkpoint" and s["epoch_seen"] == report["epoch"]
            # the rejoined old master is the new master's standby: replicated writes again
            wait_for(lambda: client.status()["standby_follows"], 30, "the standby is heard")
            txid = client.put("/r1", 1, durability="replicated")
            assert client.status()["replica_txid"] >= txid
        aside = [p for p in (tmp_path / "m").iterdir() if p.name.startswith("diverged-epoch-")]
        assert len(aside) == 1 and any((aside[0] / "journal").iterdir())
        assert not (tmp_path / "m" / "journal").exists() or \
            not any((tmp_path / "m" / "journal").iterdir())

        # fail back: the rejoined standby is promoted in turn and fences the node it followed
        again = promote_standby(node_status, 60)
        assert again["epoch"] == promotion_epoch(report["epoch"]) and again["client"] == back
        assert again["old_master_fenced"] is True and again["records_missing"] == 0
        assert again["durability"] == "sync"
        with Client([new, back], timeout_s=10) as client:
            client.put("/failed-back", 1)
            s = client.status()
            assert s["epoch"] == again["epoch"] and s["durability"] == "sync"
            assert client.get("/after") == 1 and client.get("/w/299") == {"i": 299}
        with RawDealer(new) as dealer:
            s = dealer.status()
            assert s["fenced"] and s["fenced_by"] == again["epoch"]
        assert old.terminate() == 0
        assert standby.terminate() == 0
