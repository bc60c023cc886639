"""The simulated world: one seeded scheduler with a fake clock, and the network between the
nodes, whose faults are named: drop, duplicate, delay (and so reorder) a message, cut a link.

Everything that varies comes from the scheduler's `rng`, seeded by the scenario, and from
nothing else (no wall clock, no thread, no hash order): the same seed runs the same events in
the same order. `trace` records what happened (a line per event of note), and its digest is
what "replays exactly" compares.
"""

from __future__ import annotations

import hashlib
import heapq
import random
from dataclasses import dataclass, field
from typing import Any, Callable

__all__ = ["Faults", "Network", "Scheduler", "WALL_EPOCH_MS"]

# the simulated wall clock at time 0 (records carry wall-clock milliseconds)
WALL_EPOCH_MS = 1_700_000_000_000


class Scheduler:
    """Events in time order (ties in the order they were scheduled); `now` is the fake
    monotonic clock, in seconds."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.now = 0.0
        self.events = 0
        self._queue: list[tuple[float, int, Callable[..., Any], tuple]] = []
        self._seq = 0
        self.trace: list[str] = []

    def at(self, when: float, fn: Callable[..., Any], *args: Any) -> None:
        self._seq += 1
        heapq.heappush(self._queue, (max(when, self.now), self._seq, fn, args))

    def after(self, delay_s: float, fn: Callable[..., Any], *args: Any) -> None:
        self.at(self.now + delay_s, fn, *args)

    def wall_ms(self) -> int:
        return WALL_EPOCH_MS + int(self.now * 1000)

    def clock(self) -> float:
        return self.now

    def note(self, what: str) -> None:
        self.trace.append(f"{self.now:.6f} {what}")

    def run(self, until_s: float, done: Callable[[], bool] = lambda: False,
            max_events: int = 1_000_000) -> bool:
        """Run events up to `until_s` (or until `done()`, checked after each event); True
        when `done()` became true. Bounded by `max_events` in all."""
        queue = self._queue
        while queue and queue[0][0] <= until_s:
            if self.events >= max_events:
                raise RuntimeError(f"more than {max_events} events: a loop that never settles")
            when, _seq, fn, args = heapq.heappop(queue)
            self.now = when
            self.events += 1
            fn(*args)
            if done():
                return True
        self.now = max(self.now, until_s)
        return done()

    def trace_digest(self) -> str:
        return hashlib.blake2b("\n".join(self.trace).encode(), digest_size=16).hexdigest()


@dataclass
class Faults:
    """What the network does to each message, as probabilities (0: never)."""
    drop: float = 0.0          # the message is lost
    duplicate: float = 0.0     # it arrives twice
    delay: float = 0.0         # it arrives late (so after messages sent after it)
    delay_s: float = 0.3       # how late, at most
    latency_s: float = 0.0005  # every message's base latency (up to twice this)
    cut: set[tuple[str, str]] = field(default_factory=set)   # links that carry nothing

    def calm(self) -> None:
        self.drop = self.duplicate = self.delay = 0.0
        self.cut.clear()


class Network:
    """Messages from node to node, each delivered by calling `deliver(payload)` on the
    destination after its latency, unless a fault says otherwise. A destination that is down
    when the message arrives drops it (its `deliver` decides)."""

    def __init__(self, sched: Scheduler, faults: Faults) -> None:
        self.sched = sched
        self.faults = faults
        self.sent = self.dropped = self.duplicated = self.delayed = 0

    def send(self, src: str, dst: str, payload: Any, deliver: Callable[[Any], None]) -> None:
        sched, faults, rng = self.sched, self.faults, self.sched.rng
        self.sent += 1
        if (src, dst) in faults.cut or (dst, src) in faults.cut or rng.random() < faults.drop:
            self.dropped += 1
            return
        delay = faults.latency_s * (1 + rng.random())
        if rng.random() < faults.delay:
            self.delayed += 1
            delay += rng.random() * faults.delay_s
        sched.after(delay, deliver, payload)
        if rng.random() < faults.duplicate:
            self.duplicated += 1
            sched.after(delay + rng.random() * faults.delay_s, deliver, payload)
