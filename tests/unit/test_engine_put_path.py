"""The master's put path (Engine.submit_put, records.admit_put) against the general one
(Engine.submit(Put(...))): two engines fed the same puts must answer, refuse and log alike:
the same results, the same errors word for word, the same record bytes, the same digest."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from mwcluster.core.limits import Limits
from mwcluster.core.records import Put, check_admission, encode_record
from mwcluster.core.values import encode
from mwcluster.engine import Engine

LIMITS = Limits(max_value_bytes=200)
KEYS = st.sampled_from(["/a", "/a/b", "/c", "bad", "/a/../b", "/x" * 600, "/d/\x01", "/e"])
VALUES = st.one_of(
    st.builds(encode, st.binary(max_size=300)),      # well-formed, some over the limit
    st.binary(max_size=20),                           # often not one msgpack object
)
EXPECTED = st.one_of(st.none(), st.integers(min_value=-3, max_value=4),
                     st.just(1 << 64), st.just(-(1 << 70)))
ORIGINS = st.one_of(st.none(), st.tuples(st.binary(min_size=1, max_size=16),
                                         st.integers(min_value=0, max_value=1 << 40)))
PUTS = st.lists(st.tuples(KEYS, VALUES, EXPECTED, ORIGINS), min_size=1, max_size=30)


def outcome(call):
    try:
        return ("ok", call())
    except Exception as exc:              # compared by type and message
        return (type(exc).__name__, str(exc))


def engine(directory: Path) -> Engine:
    e = Engine(directory, limits=LIMITS, background=False)
    e.open()
    return e


@settings(max_examples=60, deadline=None)
@given(puts=PUTS)
def test_submit_put_answers_refuses_and_logs_like_submit(puts):
    with tempfile.TemporaryDirectory() as tmp:
        general, fast = engine(Path(tmp) / "general"), engine(Path(tmp) / "fast")
        try:
            compare(general, fast, puts)
        finally:
            general.close()
            fast.close()


def compare(general: Engine, fast: Engine, puts) -> None:
    for key, value, expected, origin in puts:
        want = outcome(lambda: general.submit(Put(key, value, expected), durability="async",
                                              origin=origin))
        got = outcome(lambda: fast.submit_put(key, value, expected, origin))
        assert got == want, (key, value, expected, origin)
        assert fast.state.digest == general.state.digest
        if origin is not None and want[0] == "ok":
            assert fast.recent(origin) == general.recent(origin) == want[1]
    general.journal.flush()
    fast.journal.flush()
    assert fast.records(1) == general.records(1)


@settings(max_examples=200, deadline=None)
@given(key=KEYS, value=VALUES, expected=EXPECTED, origin=ORIGINS)
def test_admission_of_a_put_encodes_it_as_encode_record_does(key, value, expected, origin):
    rec = Put(key, value, expected)
    result = outcome(lambda: check_admission(rec, LIMITS, origin))
    if result[0] == "ok":
        assert result[1] == encode_record(rec, origin)
