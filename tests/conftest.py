"""Shared helpers for tests of the pure core: apply with invariant checks, and refusals.

Every test that changes a State goes through `checked_apply`, which applies at the next txid
and asserts that `validate()` finds nothing wrong, so each test also checks the invariants of
every state it passes through. `assert_refused` checks the other half of the apply contract: a
refused record raises and changes nothing (txid, digest and the whole state image).

The helpers are plain functions, also served as session fixtures so that hypothesis tests can
use them without function-scoped fixtures.
"""

from __future__ import annotations

from typing import Any

import pytest

from mwcluster.core.records import Record
from mwcluster.core.state import State


def checked_apply(state: State, rec: Record) -> Any:
    """Apply `rec` at state.txid + 1, assert the invariants hold, return the record's result."""
    txid = state.txid + 1
    result = state.apply(txid, rec)
    assert state.txid == txid
    problems = state.validate()
    assert problems == [], f"after {rec!r} at txid {txid}: {problems}"
    return result


def apply_all(state: State, records: list[Record]) -> State:
    for rec in records:
        checked_apply(state, rec)
    return state


def fingerprint(state: State) -> tuple[int, int, bytes]:
    """Everything a refused record must leave as it was."""
    return state.txid, state.digest, state.image_bytes()


def assert_refused(state: State, rec: Record, error: type[BaseException],
                   match: str | None = None) -> BaseException:
    """Assert that applying `rec` raises `error` and leaves `state` exactly as it was."""
    before = fingerprint(state)
    with pytest.raises(error, match=match) as info:
        state.apply(state.txid + 1, rec)
    assert fingerprint(state) == before, f"{rec!r} was refused but changed the state"
    assert state.validate() == []
    return info.value


def pytest_addoption(parser) -> None:
    parser.addoption("--cycles", type=int, default=20,
                     help="kill -9 cycles of the crash-loop fault test (default 20)")
    parser.addoption("--sim-seeds", type=int, default=200,
                     help="seeded scenarios of the cluster simulation (default 200)")
    parser.addoption("--sim-seed", type=int, default=None,
                     help="run the cluster simulation's scenario of this one seed only")
    parser.addoption("--linz-cycles", type=int, default=6,
                     help="kill -9 cycles of the linearizability fault test (default 6)")
    parser.addoption("--linz-seed", type=int, default=1,
                     help="the seed of the linearizability fault test's load (default 1)")
    parser.addoption("--linz-consistency", default=None, choices=("strong", "fast"),
                     help="the consistency its clients ask for (default: the Client's, "
                          "strong)")


def pytest_generate_tests(metafunc) -> None:
    """`sim_seed`: each seed of the cluster simulation's scenarios (tests/simulation)."""
    if "sim_seed" in metafunc.fixturenames:
        from mwcluster.testing.simulation import seeds

        one = metafunc.config.getoption("--sim-seed")
        chosen = [one] if one is not None else seeds(metafunc.config.getoption("--sim-seeds"))
        metafunc.parametrize("sim_seed", chosen, ids=str)


def pytest_collection_modifyitems(config, items) -> None:
    """The crash loop's time limit grows with --cycles (10 s a cycle, at least the default)."""
    cycles = config.getoption("--cycles")
    for item in items:
        if item.nodeid.startswith("tests/fault/test_crash_loop.py"):
            item.add_marker(pytest.mark.timeout(max(120, 10 * cycles)))


@pytest.fixture
def state() -> State:
    return State()


@pytest.fixture(scope="session", name="checked_apply")
def checked_apply_fixture():
    return checked_apply


@pytest.fixture(scope="session", name="assert_refused")
def assert_refused_fixture():
    return assert_refused


@pytest.fixture(scope="session", name="apply_all")
def apply_all_fixture():
    return apply_all


@pytest.fixture(scope="session", name="fingerprint")
def fingerprint_fixture():
    return fingerprint
