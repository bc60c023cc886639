"""The events the replica's decision machine (follower.py) takes and the instructions it
gives: frozen, slotted dataclasses, no behaviour. See follower.py for the rules."""

from __future__ import annotations
from dataclasses import dataclass
from enum import StrEnum

Rec = tuple[int, int, bytes]      # (txid, epoch of the master that wrote it, payload)


class Phase(StrEnum):
    JOINING = "joining"
    FETCHING = "fetching"
    FOLLOWING = "following"
    RELOADING = "reloading"


# --- events ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Start:
    now: float
    base_txid: int | None         # the local snapshot loaded into the replica, or None


@dataclass(frozen=True, slots=True)
class StreamBatch:
    epoch: int
    first: int
    last: int
    records: list                 # [(txid, epoch, payload), ...]
    now: float
    digest: int | None = None     # the master's digest at `last`, when the batch carries it


@dataclass(frozen=True, slots=True)
class Heartbeat:
    epoch: int
    durable_txid: int
    digest: int | None
    now: float


@dataclass(frozen=True, slots=True)
class Fetched:
    durable_txid: int
    records: list
    now: float
    epoch: int | None = None      # the master's epoch in the reply


@dataclass(frozen=True, slots=True)
class FetchTruncated:
    now: float


@dataclass(frozen=True, slots=True)
class FetchFailed:
    now: float
    reason: str


@dataclass(frozen=True, slots=True)
class SnapshotLoaded:
    txid: int
    now: float


@dataclass(frozen=True, slots=True)
class NoSnapshot:
    now: float


@dataclass(frozen=True, slots=True)
class SnapshotFailed:
    now: float
    reason: str


@dataclass(frozen=True, slots=True)
class ApplyFailed:
    txid: int
    reason: str
    now: float


@dataclass(frozen=True, slots=True)
class DigestResult:
    epoch: int
    txid: int
    expected: int
    actual: int
    now: float


@dataclass(frozen=True, slots=True)
class CheckpointDone:
    txid: int
    now: float


@dataclass(frozen=True, slots=True)
class CheckpointFailed:
    now: float
    reason: str


@dataclass(frozen=True, slots=True)
class CheckpointRequested:
    now: float


@dataclass(frozen=True, slots=True)
class Tick:
    now: float


Event = (Start | StreamBatch | Heartbeat | Fetched | FetchTruncated | FetchFailed
         | SnapshotLoaded | NoSnapshot | SnapshotFailed | ApplyFailed | DigestResult
         | CheckpointDone | CheckpointFailed | CheckpointRequested | Tick)


# --- instructions ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Apply:
    records: list                 # consecutive txids, the first == the replica's txid + 1


@dataclass(frozen=True, slots=True)
class Fetch:
    from_txid: int


@dataclass(frozen=True, slots=True)
class FetchSnapshot:
    reason: str


@dataclass(frozen=True, slots=True)
class ResetEmpty:
    """Replace the replica with the empty state (txid 0): the master has no snapshot."""


@dataclass(frozen=True, slots=True)
class CheckDigest:
    epoch: int
    txid: int
    digest: int


@dataclass(frozen=True, slots=True)
class DigestMismatch:
    epoch: int
    txid: int
    expected: int
    actual: int


@dataclass(frozen=True, slots=True)
class Checkpoint:
    txid: int
    epoch: int


@dataclass(frozen=True, slots=True)
class SetAsideSnapshots:
    """The replica diverged: local snapshots (and a checkpoint being written) above
    `after_txid`, the last point known good, may hold the divergence; set them aside."""
    after_txid: int               # -1: nothing of this replica was verified
    reason: str


@dataclass(frozen=True, slots=True)
class Note:
    level: str                    # "info", "warning" or "error"
    text: str


Instruction = (Apply | Fetch | FetchSnapshot | ResetEmpty | CheckDigest | DigestMismatch
               | Checkpoint | SetAsideSnapshots | Note)
