"""What clients see stays linearizable while the master is killed with SIGKILL in a loop:
concurrent get / put / compare-and-set / multi on a few keys, with sync durability (the
master alone) and with replicated durability (a checkpoint node following), every history
checked by the linearizability checker (mwcluster/testing/linearizability.py). See
`linz_rig` for the load and how outcomes are recorded.

`--linz-cycles N` runs a longer loop; `--linz-consistency fast` runs the same load asking for
consistency "fast", which may show writes a crash erases (that run is expected to find
violations now and then: it shows the checker sees them in real histories).
"""

from __future__ import annotations

import pytest

from linz_rig import KillLoop
from mwcluster.testing.linearizability import check

pytestmark = pytest.mark.fault


@pytest.mark.parametrize("mode", ["sync", "replicated"])
def test_histories_stay_linearizable_under_a_kill9_loop(tmp_path, mode, request):
    cycles = request.config.getoption("--linz-cycles")
    consistency = request.config.getoption("--linz-consistency")
    seed = request.config.getoption("--linz-seed")
    with KillLoop(tmp_path, mode, seed, consistency=consistency) as loop:
        for _ in range(cycles):
            loop.cycle()
        loop.finish()
    history = loop.history
    verdict = check(history.events)
    print(f"\n{mode}: {loop.kills} kills ({loop.torn_kills} in a torn flush), "
          f"{history.completed} calls answered, "
          f"{history.unknown} mutations with an unknown outcome: "
          f"{'linearizable' if verdict.ok else 'NOT linearizable'}")
    assert loop.kills == cycles and history.completed >= 30 * cycles
    assert verdict.ok, verdict.message
