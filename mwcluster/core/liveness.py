"""Which workers have gone silent: a pure tracker, the time passed in by the caller.

The master tells it when it last heard from each active worker (a heartbeat or any request);
`expired(now)` names the workers silent for longer than the timeout, which the master then
marks lost with a logged WorkerLost record (their tasks go back to pending). This is soft
state, never logged: after a restart the master calls `grace(worker_ids, now)` for the workers
the recovered state lists as active, so each gets a whole timeout from the restart to be heard
from again (a master that was down must not count its own downtime against them).
"""

from __future__ import annotations

from typing import Iterable


class Liveness:
    __slots__ = ("timeout_s", "last_seen")

    def __init__(self, timeout_s: float) -> None:
        if timeout_s <= 0:
            raise ValueError("timeout_s must be positive")
        self.timeout_s = timeout_s
        self.last_seen: dict[str, float] = {}

    def seen(self, worker_id: str, now: float) -> None:
        self.last_seen[worker_id] = now

    def forget(self, worker_id: str) -> None:
        self.last_seen.pop(worker_id, None)

    def grace(self, worker_ids: Iterable[str], now: float) -> None:
        """Start (or restart) the timeout of each worker at `now`."""
        for worker_id in worker_ids:
            self.last_seen[worker_id] = now

    def expired(self, now: float) -> list[str]:
        """The workers not heard from for more than timeout_s, oldest first (then by id);
        they stay tracked until forgotten."""
        horizon = now - self.timeout_s
        late = [(t, w) for w, t in self.last_seen.items() if t < horizon]
        late.sort()
        return [w for _t, w in late]

    def silent_for(self, worker_id: str, now: float) -> float | None:
        last = self.last_seen.get(worker_id)
        return None if last is None else now - last
