"""Failover decisions for a primary/standby pair, with epochs as fencing tokens: pure.

No sockets, files or clock: times come in as arguments (seconds, monotonic), and each method
returns what the node must do. The I/O shells (the checkpoint node as standby, the master,
the clients) persist epochs and act.

Epochs. Every master serves under an epoch persisted in its data directory, one more at each
start; a promotion takes an epoch strictly greater than any the standby has seen: the first
of the next *generation* (`promotion_epoch`: the generation is the epoch's bits above
GENERATION_SHIFT), so that an old master that restarts without asking its peer, one epoch
higher at each start, stays below the promoted node's epoch for its next 2**20 - 1 starts
instead of tying it at the first. Every reply carries its epoch, and
every peer (client, worker, the other node) remembers the highest it has seen: a reply from a
lower epoch is refused, and a master that sees a higher epoch than its own is *fenced* for
good (it refuses writes until it rejoins as a standby).

Standby (the checkpoint node), as a table:

    state        event                                     -> action / new state
    following    master heartbeat or stream message         -> following (master seen now)
    following    client or worker asks it to serve (vote)   -> refuse, name the master
                 while the master was seen < timeout ago
    following    tick or vote: mode auto, master silent      -> PROMOTE
                 >= timeout, and a vote within vote_window
    following    operator `promote`                         -> PROMOTE (any mode)
    promoted     anything                                   -> (the node now serves as master)

A standby never promotes itself while it still sees the master, nor without a vote: a
client or worker that cannot reach the master either (the Binary Star rule), so a standby
cut off alone from the network stays a standby.

Start of a master that has a standby peer (`start_decision`): it asks the peer first; a peer
serving as master at a higher epoch means this node must rejoin as a standby; a standby (or a
master at a lower epoch, which that master's own fencing will stop) lets it serve; an
unreachable peer makes it wait, unless the operator forces the start, which is the one way
left to have two masters at once (documented in docs/failover.md).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from mwcluster.core.durability import MASTER_LEVELS, Durability


GENERATION_SHIFT = 20                  # epoch = generation << 20 | starts within it
MAX_EPOCH = (1 << 32) - 1                # epochs are u32 on disk and on the wire


def promotion_epoch(highest: int) -> int:
    """The epoch a promotion takes when `highest` is the highest seen: the first of the next
    generation, or `highest + 1` once generations run out (4,095 promotions)."""
    first_of_next = ((highest >> GENERATION_SHIFT) + 1) << GENERATION_SHIFT
    return first_of_next if first_of_next <= MAX_EPOCH else highest + 1


def promoted_durability(configured: str, old_master: str | None) -> str:
    """The promoted master's default durability: the one configured; else the old master's,
    when it answered at the promotion; else `sync` (never weaker than an unknown one)."""
    if configured:
        return configured
    return old_master if old_master in MASTER_LEVELS else Durability.SYNC.label


class Mode(enum.StrEnum):
    MANUAL = "manual"
    AUTO = "auto"


class StandbyState(enum.StrEnum):
    FOLLOWING = "following"
    PROMOTED = "promoted"


@dataclass(frozen=True, slots=True)
class FailoverConfig:
    mode: Mode = Mode.MANUAL
    silence_timeout_s: float = 3.0      # master silent this long: it may be gone
    vote_window_s: float = 3.0          # a vote counts for this long after it came


@dataclass(frozen=True, slots=True)
class Promote:
    """Become master under `epoch` (persist it before serving)."""
    epoch: int
    reason: str


@dataclass(frozen=True, slots=True)
class Refuse:
    """Do not serve; tell the asker why and where the master is believed to be."""
    reason: str


class StandbyMachine:
    def __init__(self, config: FailoverConfig, now: float, own_epoch: int = 0) -> None:
        self.config = config
        self.state = StandbyState.FOLLOWING
        self.master_seen = now          # start as if just seen: a fresh standby waits a timeout
        self.highest_epoch = own_epoch  # the highest epoch seen anywhere (own file included)
        self.last_vote: float | None = None
        self.votes = 0
        self.promoted: Promote | None = None

    # --- what the standby observes ---------------------------------------------------------

    def saw_master(self, now: float, epoch: int) -> None:
        """A heartbeat or log batch from the master under `epoch`."""
        self.master_seen = max(self.master_seen, now)
        self.saw_epoch(epoch)

    def saw_epoch(self, epoch: int) -> None:
        """Any epoch seen (a reply, a request carrying its sender's highest epoch)."""
        if epoch > self.highest_epoch:
            self.highest_epoch = epoch

    def silent_for(self, now: float) -> float:
        return max(0.0, now - self.master_seen)

    # --- decisions -------------------------------------------------------------------------

    def vote(self, now: float, epoch_seen: int = 0) -> Promote | Refuse:
        """A client or worker that cannot reach the master asks this node to serve."""
        if self.promoted is not None:
            return self.promoted
        self.saw_epoch(epoch_seen)
        self.last_vote = now
        self.votes += 1
        decision = self.tick(now)
        if decision is not None:
            return decision
        silent = self.silent_for(now)
        if self.config.mode is Mode.MANUAL:
            return Refuse(f"this node is a standby (failover is manual; the master was last "
                          f"heard {silent:.1f} s ago): ask the master, or have an operator run "
                          "`mwcluster promote`")
        return Refuse(f"this node is a standby and heard the master {silent:.1f} s ago (it "
                      f"takes over after {self.config.silence_timeout_s:g} s of silence)")

    def tick(self, now: float) -> Promote | None:
        """Called periodically: the automatic promotion, when every condition holds."""
        if self.promoted is not None:
            return None
        cfg = self.config
        if cfg.mode is not Mode.AUTO:
            return None
        silent = self.silent_for(now)
        if silent < cfg.silence_timeout_s:
            return None
        if self.last_vote is None or now - self.last_vote > cfg.vote_window_s:
            return None
        return self._promote(f"automatic: the master was silent for {silent:.1f} s and a peer "
                             "that could not reach it asked this node to serve")

    def promote(self, now: float) -> Promote:
        """The operator's manual promotion (any mode)."""
        if self.promoted is not None:
            return self.promoted
        return self._promote(f"manual: the master was last heard {self.silent_for(now):.1f} s "
                             "ago")

    def _promote(self, reason: str) -> Promote:
        self.promoted = Promote(promotion_epoch(self.highest_epoch), reason)
        self.state = StandbyState.PROMOTED
        return self.promoted


# --- fencing --------------------------------------------------------------------------------


class Fence:
    """A serving master's view of epochs: fenced once it sees a higher one, for good."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch
        self.fenced_by: int | None = None

    @property
    def fenced(self) -> bool:
        return self.fenced_by is not None

    def saw_epoch(self, epoch: int) -> bool:
        """Record an epoch seen on any message; True if this call fenced the master."""
        if epoch > self.epoch and (self.fenced_by is None or epoch > self.fenced_by):
            newly = self.fenced_by is None
            self.fenced_by = epoch
            return newly
        return False


class EpochFollower:
    """A client's or worker's view: follow the highest epoch, refuse replies below it."""

    def __init__(self, highest: int = 0) -> None:
        self.highest = highest

    def accept(self, epoch: int) -> bool:
        """True if a reply under `epoch` may be used (and remember it); False if it comes from
        a master that has been replaced."""
        if epoch < self.highest:
            return False
        self.highest = epoch
        return True


# --- the start of a master that has a standby peer -----------------------------------------


class StartAs(enum.StrEnum):
    MASTER = "master"
    STANDBY = "standby"       # rejoin: resynchronise from the peer, set the own tail aside
    WAIT = "wait"             # ask the peer again


@dataclass(frozen=True, slots=True)
class PeerView:
    """What the peer answered at start: its role and epoch, or None when unreachable."""
    role: str | None          # "master", "standby" or None (unreachable)
    epoch: int = 0


def start_decision(own_epoch: int, peer: PeerView, *, force: bool = False
                   ) -> tuple[StartAs, str]:
    if peer.role == "master":
        if peer.epoch > own_epoch:
            return StartAs.STANDBY, (f"the peer serves as master under epoch {peer.epoch}, "
                                     f"above this node's {own_epoch}: rejoining as its standby")
        return StartAs.MASTER, (f"the peer serves as master under epoch {peer.epoch}, not above "
                                f"this node's {own_epoch}: it will be fenced by this epoch")
    if peer.role == "standby":
        return StartAs.MASTER, "the peer is a standby"
    if force:
        return StartAs.MASTER, ("the peer is unreachable and the start was forced: if the peer "
                                "took over meanwhile, two masters now serve until one is fenced")
    return StartAs.WAIT, ("the peer is unreachable: it may have taken over; waiting for it "
                          "(start with --force to serve anyway)")
