"""When a mutation is acknowledged: the one definition of the durability levels.

The wire carries the code (a request's `durability` field, 0..3); configuration files, the
command line and the Python API name the level:

    code  name        the reply to a mutation waits until
    0     default     whatever the master's own default is (a request's choice only)
    1     async       the record is applied and buffered (a crash may lose it: the loss window)
    2     sync        the fsync covering the record returned
    3     replicated  the record is durable here and the standby reported having applied it

A read, a refusal, or any other reply that depends on the state waits the same way for the
records it saw ("strong" consistency, the default): it is sent once every record applied
before it was computed is durable at the request's level. A request may ask for "fast"
consistency instead (the reply at once, from memory that may hold records a crash erases); on
the wire that is the FAST flag added to the durability code.

docs/durability.md says what each level keeps across kill -9, power loss and failover, and
what each consistency lets a client observe.
"""

from __future__ import annotations

from enum import IntEnum
from functools import lru_cache

__all__ = ["CONSISTENCIES", "Durability", "FAST", "LEVEL_MASK", "MASTER_LEVELS",
           "REQUEST_LEVELS", "wire_code"]


class Durability(IntEnum):
    DEFAULT = 0
    ASYNC = 1
    SYNC = 2
    REPLICATED = 3

    @property
    def label(self) -> str:
        """The name configs and the command line use: "async", "sync"..."""
        return self.name.lower()

    @classmethod
    def parse(cls, value: str | int | None) -> Durability:
        """A level from its name ("async"...), its code, or None (the default); ValueError
        naming what is allowed otherwise."""
        if value is None:
            return cls.DEFAULT
        if type(value) is cls:
            return value
        if type(value) is int or isinstance(value, IntEnum):
            try:
                return cls(int(value))
            except ValueError:
                pass
        elif isinstance(value, str):
            found = _BY_LABEL.get(value)
            if found is not None:
                return found
        raise ValueError(f"durability must be None, {', '.join(map(repr, REQUEST_LEVELS))} "
                         f"or a code 0..{max(cls)}, not {value!r}")


_BY_LABEL = {level.label: level for level in Durability}
# What a request may ask for, by name; and what a master may be configured to default to
# (a master's own default is never "default", and "replicated" is asked per request).
REQUEST_LEVELS = tuple(level.label for level in Durability)
MASTER_LEVELS = (Durability.ASYNC.label, Durability.SYNC.label)


# The wire's durability field: the level in the low bits, FAST (consistency "fast") as a flag.
FAST = 0x10
LEVEL_MASK = 0x0F
CONSISTENCIES = ("strong", "fast")


@lru_cache(maxsize=256, typed=True)     # every client call asks: typed, so True is not 1
def wire_code(durability: str | int | None, consistency: str | None) -> int:
    """The durability field of a request: its level's code, with FAST when `consistency` is
    "fast" (None or "strong": the reply reveals only durable state). ValueError naming what
    is allowed otherwise (an error is not cached)."""
    level = int(Durability.parse(durability))
    if consistency is None or consistency == "strong":
        return level
    if consistency == "fast":
        return level | FAST
    raise ValueError(f"consistency must be None, {' or '.join(map(repr, CONSISTENCIES))}, "
                     f"not {consistency!r}")
