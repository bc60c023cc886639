"""The crash loop: a master killed with SIGKILL again and again under a mixed load (see
`crash_model` for the load and for what is checked after each restart).

`pytest tests/fault/test_crash_loop.py --cycles 200` runs a longer loop.
"""

from __future__ import annotations

import random

import pytest

from crash_model import Op, Rig, Stream, account, check_cycle, pack

pytestmark = pytest.mark.fault


@pytest.mark.parametrize("durability", ["sync", "async"])
def test_kill9_loop_under_mixed_load(tmp_path, durability, request):
    cycles = request.config.getoption("--cycles")
    rig = Rig(tmp_path, durability, f"crash-loop-{durability}")
    try:
        rig.start()
        for _ in range(cycles):
            rig.cycle(rig.rng.uniform(0.15, 0.6))
        rig.check_node_in_step()
    finally:
        rig.stop()
    totals = rig.totals
    assert totals["cycles"] == cycles
    print(f"\ncrash loop ({durability}): {totals['cycles']} cycles, {totals['acked']} "
          f"acknowledged, {totals['lost']} lost, {totals['finished']} tasks finished, "
          f"recovery max {max(totals['recovery_s']):.3f} s")


class _Keys:
    """A stand-in for a recovered master that answers GET from a fixed key state."""

    def __init__(self, state: dict) -> None:
        self.state = state

    def call(self, op, args):
        assert op == Op.GET
        found = self.state.get(args[0])
        result = None if found is None else [pack(found[0]), found[1]]
        return type("Reply", (), {"status": 0, "result": result})()


def _created_then_deleted() -> Stream:
    """A stream that sent: create A, delete A, put B (none acknowledged)."""
    s = Stream(0, random.Random(0))
    a, b = s.key(0), s.key(1)
    s.sent = [(Op.PUT, [a, pack({"n": 1}), None]), (Op.DELETE, [a, False, 1]),
              (Op.PUT, [b, pack({"n": 3}), None])]
    return s


@pytest.mark.parametrize("applied", [0, 2])
def test_checker_counts_a_create_then_delete_either_way(applied):
    """Two records applied (create A, delete A) leave the keys as zero did; the checker must
    accept either count, by the number of records the master reports."""
    s = _created_then_deleted()
    assert check_cycle(_Keys({}), [s], 10, 10 + applied, (0.0, 0.0), sync=False) == 0


def test_checker_refuses_a_record_no_prefix_accounts_for():
    s = _created_then_deleted()
    with pytest.raises(AssertionError, match="no choice of matching prefixes"):
        check_cycle(_Keys({}), [s], 10, 11, (0.0, 0.0), sync=False)


def test_account_picks_one_count_per_stream():
    assert account(5, [[0, 2], [3], [0, 1]]) == [2, 3, 0]
    assert account(4, [[0, 2], [3]]) is None
