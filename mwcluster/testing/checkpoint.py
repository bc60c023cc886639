"""Test helper shipped with the package: a real checkpoint node in a child process.

    with MasterProcess(tmp_path / "m") as master, \\
            CheckpointProcess(tmp_path / "c", master, period_s=0.5) as node:
        wait_for(lambda: node.status()["replica_txid"] == ..., what="caught up")
        assert node.terminate() == 0

It starts `python -m mwcluster.cli -v checkpoint` against the master's endpoints with a status
endpoint on a random port, waits for its ready file, and always stops it (context manager);
its stderr (the node's log) is shown when it fails. `checkpoint_once()` runs `--once` to
completion.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from mwcluster.testing.processes import MasterProcess, RawDealer, child_env, wait_for

__all__ = ["CheckpointProcess", "checkpoint_once", "idle_master_status", "in_step", "write"]


def _env(env: dict[str, str] | None, heartbeat_interval_s: float) -> dict[str, str]:
    out = child_env(env)
    out.setdefault("MWCLUSTER_CHECKPOINT_HEARTBEAT_INTERVAL_S", str(heartbeat_interval_s))
    out.setdefault("MWCLUSTER_CHECKPOINT_REQUEST_TIMEOUT_S", "2")
    return out


class CheckpointProcess(MasterProcess):
    """A checkpoint node in a child process, following `master` (a started MasterProcess)."""

    def __init__(self, data_dir: str | os.PathLike[str], master: MasterProcess, *,
                 period_s: float = 60.0, txns: int = 100_000,
                 heartbeat_interval_s: float = 1.0, extra_args: tuple[str, ...] = (),
                 env: dict[str, str] | None = None, start_timeout_s: float = 30.0,
                 keys=None) -> None:
        super().__init__(data_dir, extra_args=extra_args,
                         env=_env(env, heartbeat_interval_s), start_timeout_s=start_timeout_s,
                         keys=keys)
        self.master_endpoint = master.client_endpoint
        self.pub_endpoint_followed = master.pub_endpoint
        self.period_s = period_s
        self.txns = txns
        self._dealer: RawDealer | None = None

    def follow(self, master: MasterProcess) -> None:
        """Follow another master (e.g. one restarted on new ports) at the next start."""
        self.master_endpoint = master.client_endpoint
        self.pub_endpoint_followed = master.pub_endpoint

    def command(self, ready_file: Path) -> list[str]:
        return [sys.executable, "-m", "mwcluster.cli", "-v", "checkpoint",
                "--data-dir", str(self.data_dir), "--master", self.master_endpoint,
                "--subscribe", self.pub_endpoint_followed,
                "--status-endpoint", "tcp://127.0.0.1:0", "--ready-file", str(ready_file),
                "--period-s", str(self.period_s), "--txns", str(self.txns),
                *self.extra_args]

    @property
    def status_endpoint(self) -> str:
        return self.info["status"]

    @property
    def metrics_port(self) -> int | None:
        return self.info.get("metrics_port")

    def status(self) -> dict[str, Any]:
        if self._dealer is None:
            self._dealer = RawDealer(self.status_endpoint, timeout_s=10.0,
                                     credentials=self.keys.credentials("admin")
                                     if self.keys else None)
        return self._dealer.status()

    def _cleanup(self) -> None:
        if self._dealer is not None:
            self._dealer.close()
            self._dealer = None
        super()._cleanup()


def checkpoint_once(data_dir: str | os.PathLike[str], master: MasterProcess, *,
                    heartbeat_interval_s: float = 1.0, timeout_s: float = 60.0,
                    env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run `mwcluster checkpoint --once` to completion; the result has its exit code and
    stderr (text)."""
    return subprocess.run(
        [sys.executable, "-m", "mwcluster.cli", "-v", "checkpoint", "--once",
         "--data-dir", str(data_dir), "--master", master.client_endpoint,
         "--subscribe", master.pub_endpoint],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        env=_env(env, heartbeat_interval_s), timeout=timeout_s, text=True)


def write(dealer: RawDealer, prefix: str, count: int, window: int = 256,
          durability: int = 0, value_bytes: int | None = None) -> int:
    """PUT `prefix/i` for i < count with up to `window` requests in flight; the last txid.
    The value is {"i": i}, or `value_bytes` bytes of payload when given."""
    import msgpack

    from mwcluster.wire.protocol import Op

    last = sent = waiting = 0
    while sent < count or waiting:
        while sent < count and waiting < window:
            value = {"i": sent} if value_bytes is None else "v" * value_bytes
            dealer.send(Op.PUT, [f"{prefix}/{sent}", msgpack.packb(value), None], durability)
            sent += 1
            waiting += 1
        reply = dealer.recv()
        assert reply is not None and reply.status == 0, reply
        last = max(last, reply.txid)
        waiting -= 1
    return last


def idle_master_status(dealer: RawDealer) -> dict:
    """The master's status once everything it applied is durable (its digest is then the
    digest at its durable txid, the one its heartbeats carry)."""
    holder: dict = {}

    def settled() -> bool:
        holder["s"] = status = dealer.status()
        return status["durable_txid"] == status["txid"]

    wait_for(settled, what="the master's journal to be durable")
    return holder["s"]


def in_step(node: CheckpointProcess, master_status: dict) -> bool:
    """The node follows, at the master's txid, with the master's digest."""
    s = node.status()
    return (s["state"] == "following" and s["replica_txid"] == master_status["txid"]
            and s["replica_digest"] == master_status["digest"])
