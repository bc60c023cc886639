"""The isolated old master (real processes): its stream and link to the standby are cut by a
fault seam (master.CUT_STANDBY_ENV) while both keep running. The standby is promoted without
being able to fence it, so for a moment both believe they are master and the old one still
acknowledges writes from a client that has not seen the new epoch. Every peer that has seen
the higher epoch rejects the stale master (its request fences it on arrival), and the writes
the stale master acknowledged do not survive its rejoin: they are only in the journal it
moved aside."""

from __future__ import annotations

import os

import pytest

from mwcluster import Client, errors
from mwcluster.core.failover import promotion_epoch
from mwcluster.engine import replay_all
from mwcluster.nodes.master.node import CUT_STANDBY_ENV
from mwcluster.testing import MasterProcess, RawDealer, wait_for
from mwcluster.testing.failover import StandbyProcess


def test_the_new_master_fences_the_old_one_once_the_cut_heals(tmp_path):
    cut = tmp_path / "cut-standby"
    old = MasterProcess(tmp_path / "m", env=dict(os.environ, **{CUT_STANDBY_ENV: str(cut)}))
    with old, StandbyProcess(tmp_path / "c", old) as standby:
        cut.touch()
        wait_for(lambda: standby.status()["master_silent_s"] >= 1.0, 30, "the cut to bite")
        report = standby.promote()
        assert report["old_master_fenced"] is False
        with RawDealer(old.client_endpoint) as dealer:
            assert dealer.status()["fenced"] is False       # two masters for now
            cut.unlink()                                     # no client involved
            wait_for(lambda: dealer.status()["fenced"], 30, "the new master's PING to fence it")
            assert dealer.status()["fenced_by"] == report["epoch"]
        assert standby.terminate() == 0


def test_isolated_old_master_is_fenced_and_its_writes_do_not_survive(tmp_path):
    cut = tmp_path / "cut-standby"
    old = MasterProcess(tmp_path / "m", durability="sync",
                        env=dict(os.environ, **{CUT_STANDBY_ENV: str(cut)}))
    with old, StandbyProcess(tmp_path / "c", old) as standby, \
            Client([old.client_endpoint], timeout_s=2, retries=1,
                   sleep=lambda s: None) as c_old:
        base = c_old.put("/base", 0)
        wait_for(lambda: standby.status()["replica_txid"] >= base, what="standby caught up")
        cut.touch()
        wait_for(lambda: standby.status()["master_silent_s"] >= 1.0, 30, "the cut to bite")
        c_old.put("/stale/1", 1)                  # acknowledged by the soon-stale master
        old_epoch = old.epoch
        report = standby.promote()
        assert report["old_master_fenced"] is False and report["old_master_txid"] is None
        epoch = report["epoch"]
        assert epoch == promotion_epoch(old_epoch)
        new = standby.promote_client_endpoint

        # both believe they are master
        with RawDealer(old.client_endpoint) as dealer:
            s = dealer.status()
            assert (s["role"], s["fenced"], s["epoch"]) == ("master", False, old_epoch)
        with Client([new], timeout_s=10) as c_new:
            s = c_new.status()
            assert (s["role"], s["epoch"]) == ("master", epoch)
        c_old.put("/stale/2", 2)                  # a client that never saw the new epoch

        # a peer that has seen the higher epoch rejects the stale master
        with Client([new, old.client_endpoint], timeout_s=5, sleep=lambda s: None) as c_both:
            c_both.put("/new/1", 1)
            assert c_both.epochs.highest == epoch
            c_both._reconnect()                   # as after a timeout: on the stale master
            assert c_both.get("/stale/1") is None  # fenced there, answered by the new one
            # its answer (fenced, under the lower epoch) was not used
            assert c_both.stale_epoch_replies == 1 and c_both.epochs.highest == epoch
        with RawDealer(old.client_endpoint) as dealer:
            s = dealer.status()
            assert (s["role"], s["fenced"], s["fenced_by"]) == ("fenced", True, epoch)
        with pytest.raises(errors.Fenced):
            c_old.put("/stale/3", 3)

        # the stale master rejoins as standby: its acknowledged writes are not in the cluster
        cut.unlink()
        assert old.terminate() == 0
        old.restart(("--peer-master-endpoint", new, "--rejoin-as-standby"))
        with RawDealer(old.info["status"]) as dealer, Client([new], timeout_s=10) as c_new:
            target = c_new.status()["txid"]
            wait_for(lambda: dealer.status()["replica_txid"] == target, 30, "rejoined standby")
            assert c_new.get("/stale/1") is None and c_new.get("/stale/2") is None
            assert c_new.get("/new/1") == 1 and c_new.get("/base") == 0
        aside = [p for p in (tmp_path / "m").iterdir() if p.name.startswith("diverged-epoch-")]
        assert len(aside) == 1
        kept = replay_all(aside[0] / "journal")    # kept for inspection, never replayed
        assert kept.ns.get_encoded("/stale/2") is not None
        assert old.terminate() == 0
        assert standby.terminate() == 0
