"""The liveness tracker with the time passed in: silence past the timeout, grace, forgetting."""

from __future__ import annotations

import pytest

from mwcluster.core.liveness import Liveness


def test_a_worker_silent_past_the_timeout_expires_and_one_heard_from_does_not():
    live = Liveness(2.0)
    live.seen("a", 10.0)
    live.seen("b", 10.5)
    assert live.expired(12.0) == []
    assert live.expired(12.1) == ["a"]
    live.seen("a", 12.2)
    assert live.expired(12.6) == ["b"]
    assert live.expired(20.0) == ["b", "a"]          # the longest silent first
    assert live.silent_for("a", 20.0) == pytest.approx(7.8)


def test_expired_workers_stay_until_forgotten():
    live = Liveness(1.0)
    live.seen("a", 0.0)
    assert live.expired(5.0) == ["a"]
    assert live.expired(6.0) == ["a"]
    live.forget("a")
    live.forget("never-seen")
    assert live.expired(7.0) == [] and live.silent_for("a", 7.0) is None


def test_grace_restarts_the_timeout_of_recovered_workers():
    live = Liveness(3.0)
    live.seen("a", 0.0)
    live.grace(["a", "b"], 100.0)       # a master restart at t=100
    assert live.expired(102.9) == []
    assert live.expired(103.5) == ["a", "b"]


def test_ties_are_ordered_by_id():
    live = Liveness(1.0)
    live.grace(["c", "a", "b"], 0.0)
    assert live.expired(2.0) == ["a", "b", "c"]


def test_the_timeout_must_be_positive():
    with pytest.raises(ValueError):
        Liveness(0)
