"""The failover decisions (core/failover.py), driven with explicit times: the standby's
automatic promotion needs silence AND a vote and never happens while the master is seen;
promotion epochs exceed every epoch seen and start a new generation; fencing is sticky; clients refuse lower epochs; a
restarting master with a peer serves, rejoins or waits by what the peer says."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mwcluster.core.failover import (GENERATION_SHIFT, MAX_EPOCH, EpochFollower,
                                     FailoverConfig, Fence, Mode, PeerView, Promote, Refuse,
                                     StandbyMachine, StandbyState, StartAs, promoted_durability,
                                     promotion_epoch,
                                     start_decision)

AUTO = FailoverConfig(mode=Mode.AUTO, silence_timeout_s=3.0, vote_window_s=3.0)
MANUAL = FailoverConfig()
G = 1 << GENERATION_SHIFT         # the first promotion's epoch from generation 0


def test_manual_mode_never_promotes_by_itself():
    m = StandbyMachine(MANUAL, now=0.0, own_epoch=1)
    m.saw_master(0.0, epoch=4)
    assert m.tick(100.0) is None
    decision = m.vote(100.0)
    assert isinstance(decision, Refuse) and "manual" in decision.reason
    assert m.state is StandbyState.FOLLOWING
    promoted = m.promote(101.0)
    assert promoted == Promote(G, promoted.reason) and "manual" in promoted.reason
    assert m.state is StandbyState.PROMOTED
    assert m.promote(102.0) is promoted and m.vote(103.0) is promoted


def test_auto_needs_silence_and_a_vote():
    m = StandbyMachine(AUTO, now=0.0)
    m.saw_master(1.0, epoch=2)
    assert m.tick(10.0) is None                     # silent, but nobody asked
    assert isinstance(m.vote(2.0), Refuse)          # asked, but the master is still heard
    assert m.tick(3.5) is None                      # the vote at 2.0 is kept, silence 2.5 s
    decision = m.tick(4.0)                          # silence 3.0 s, vote 2.0 s old
    assert isinstance(decision, Promote) and decision.epoch == G
    assert "automatic" in decision.reason


def test_a_stale_vote_does_not_count():
    m = StandbyMachine(AUTO, now=0.0)
    m.saw_master(0.0, epoch=1)
    assert isinstance(m.vote(1.0), Refuse)
    assert m.tick(5.0) is None                      # silent 5 s, but the vote is 4 s old
    assert isinstance(m.vote(5.0), Promote)


def test_never_while_the_master_is_seen():
    m = StandbyMachine(AUTO, now=0.0)
    for t in range(0, 100):
        m.saw_master(float(t), epoch=1)
        assert isinstance(m.vote(t + 0.5), Refuse)
        assert m.tick(t + 0.9) is None
    assert m.votes == 100 and m.state is StandbyState.FOLLOWING


def test_a_fresh_standby_waits_a_full_timeout_before_it_may_promote():
    m = StandbyMachine(AUTO, now=50.0, own_epoch=7)
    assert isinstance(m.vote(51.0), Refuse)
    assert isinstance(m.vote(53.0), Promote)
    assert m.promoted.epoch == G


@given(st.lists(st.integers(0, 1000), max_size=20), st.integers(0, 1000))
def test_the_promotion_epoch_exceeds_every_epoch_seen(seen, own):
    m = StandbyMachine(MANUAL, now=0.0, own_epoch=own)
    for i, epoch in enumerate(seen):
        if i % 2:
            m.saw_master(float(i), epoch)
        else:
            m.saw_epoch(epoch)
    highest = max([own, *seen])
    epoch = m.promote(100.0).epoch
    assert epoch > highest and epoch == promotion_epoch(highest)


@given(st.integers(0, MAX_EPOCH - 1))
def test_a_promotion_epoch_starts_a_generation_above_every_restart_of_the_last(highest):
    epoch = promotion_epoch(highest)
    assert highest < epoch <= MAX_EPOCH
    generation = highest >> GENERATION_SHIFT
    if generation + 1 < 1 << (32 - GENERATION_SHIFT):
        # an old master of that generation restarting without its peer (epoch + 1 at each
        # start) reaches the promoted epoch only after the whole generation's starts
        assert epoch == (generation + 1) << GENERATION_SHIFT
        assert epoch - highest >= 1 and (epoch - 1) >> GENERATION_SHIFT == generation
    else:                                   # generations used up: still strictly above
        assert epoch == highest + 1


def test_an_old_master_restarting_without_its_peer_stays_below_the_promoted_epoch():
    old = 3                                            # the master's epoch when it died
    promoted = StandbyMachine(MANUAL, now=0.0, own_epoch=1)
    promoted.saw_master(0.0, epoch=old)
    new = promoted.promote(10.0).epoch
    restarts = [old + n for n in range(1, 1000)]       # each start raises its epoch by one
    assert all(e < new for e in restarts)
    assert all(Fence(e).saw_epoch(new) for e in restarts)   # each is fenced on contact


def test_fencing_is_sticky_and_counts_only_higher_epochs():
    f = Fence(5)
    assert not f.saw_epoch(5) and not f.saw_epoch(3) and not f.fenced
    assert f.saw_epoch(6) and f.fenced and f.fenced_by == 6
    assert not f.saw_epoch(7) and f.fenced_by == 7       # already fenced; remembers the highest
    assert not f.saw_epoch(1) and f.fenced


def test_clients_refuse_replies_from_a_replaced_master():
    e = EpochFollower()
    assert e.accept(3) and e.accept(3) and e.accept(4)
    assert not e.accept(3)
    assert e.highest == 4


@pytest.mark.parametrize("peer, force, expected", [
    (PeerView("master", 6), False, StartAs.STANDBY),
    (PeerView("master", 6), True, StartAs.STANDBY),      # force never overrides a higher master
    (PeerView("master", 5), False, StartAs.MASTER),
    (PeerView("standby", 5), False, StartAs.MASTER),
    (PeerView(None), False, StartAs.WAIT),
    (PeerView(None), True, StartAs.MASTER),
])
def test_start_of_a_master_with_a_peer(peer, force, expected):
    decision, reason = start_decision(5, peer, force=force)
    assert decision is expected and reason


@pytest.mark.parametrize("configured, old_master, expected", [
    ("async", "sync", "async"),          # the operator's choice wins
    ("", "async", "async"),              # else the old master's, when it answered
    ("", "sync", "sync"),
    ("", None, "sync"),                  # unknown: never weaker than sync
    ("", "something-else", "sync"),
])
def test_the_promoted_durability(configured, old_master, expected):
    assert promoted_durability(configured, old_master) == expected
