"""The crash-point trigger: parsing of MWCLUSTER_FAULT_CRASH_AT and hit counting (the kills
themselves are exercised with real processes in tests/fault/test_crash_points.py)."""

from __future__ import annotations

import os

import pytest

from mwcluster.errors import ConfigError
from mwcluster.storage import crashpoints
from mwcluster.storage.crashpoints import CRASH_ENV, CrashingJournalIO, Trigger


def test_the_nth_hit_of_the_named_point_is_due():
    trigger = Trigger("flush.torn:3")
    hits = [trigger.due(p) for p in ("flush.torn", "segment.create", "flush.torn",
                                     "flush.torn", "flush.torn")]
    assert hits == [False, False, False, True, False]


def test_the_count_defaults_to_the_first_hit():
    assert Trigger("purge.unlink").due("purge.unlink")


@pytest.mark.parametrize("spec, says", [
    ("flush.tron", "unknown crash point 'flush.tron'"),
    ("flush.torn:x", "must be an integer"),
    ("flush.torn:0", "at least 1"),
])
def test_a_malformed_spec_says_what_is_wrong(spec, says):
    with pytest.raises(ConfigError, match=says):
        Trigger(spec)


def test_off_unless_the_environment_asks(monkeypatch):
    monkeypatch.setattr(crashpoints, "_trigger", crashpoints._UNSET)
    monkeypatch.delenv(CRASH_ENV, raising=False)
    assert crashpoints.journal_io_from_env(None) is None
    crashpoints.crash_point("install.renamed")           # no trigger: returns


def test_journal_points_wrap_the_journal_io(monkeypatch):
    monkeypatch.setattr(crashpoints, "_trigger", crashpoints._UNSET)
    monkeypatch.setenv(CRASH_ENV, "segment.header:2")
    assert isinstance(crashpoints.journal_io_from_env(None), CrashingJournalIO)
    monkeypatch.setattr(crashpoints, "_trigger", crashpoints._UNSET)
    monkeypatch.setenv(CRASH_ENV, "install.renamed")
    assert crashpoints.journal_io_from_env(None) is None  # not a journal point


def test_the_wrapped_io_writes_through_until_the_point(tmp_path, monkeypatch):
    died = []
    monkeypatch.setattr(crashpoints, "die", lambda: died.append(True))
    io = CrashingJournalIO(None, Trigger("flush.torn:2"))
    path = tmp_path / "f"
    fd = io.open(path, os.O_RDWR | os.O_CREAT)
    assert io.write(fd, memoryview(b"HEAD"), 0) == 4      # a new file's header: not a flush
    assert io.write(fd, memoryview(b"abcd"), 4) == 4 and not died
    io.write(fd, memoryview(b"efgh"), 8)                  # the 2nd flush write: torn
    io.close(fd)
    assert died and path.read_bytes() == b"HEADabcdefg"
