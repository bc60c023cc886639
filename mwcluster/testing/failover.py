"""Test helpers for failover: a standby (a checkpoint node with promote endpoints) in a child
process, free endpoints fixed before the start (clients must know the standby's master
endpoint in advance), and a bounded sync writer that records what was acknowledged.

    with MasterProcess(m, durability="sync") as master, \\
            StandbyProcess(c, master) as standby:
        report = standby.promote()
        with Client([master.client_endpoint, standby.promote_client_endpoint]) as client: ...
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

from mwcluster.testing.processes import MasterProcess
from mwcluster.testing.checkpoint import CheckpointProcess

__all__ = ["StandbyProcess", "SyncWriter", "free_endpoint"]


def free_endpoint() -> str:
    """A tcp endpoint on 127.0.0.1 whose port was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{sock.getsockname()[1]}"


class StandbyProcess(CheckpointProcess):
    """A checkpoint node that can be promoted: its promote endpoints are chosen now."""

    def __init__(self, data_dir: str | os.PathLike[str], master: MasterProcess, *,
                 failover: str = "manual", failover_timeout_s: float = 3.0,
                 extra_args: tuple[str, ...] = (), **kwargs: Any) -> None:
        self.promote_client_endpoint = free_endpoint()
        self.promote_pub_endpoint = free_endpoint()
        super().__init__(data_dir, master, extra_args=(
            "--promote-client-endpoint", self.promote_client_endpoint,
            "--promote-pub-endpoint", self.promote_pub_endpoint,
            "--failover", failover, "--failover-timeout-s", str(failover_timeout_s),
            *extra_args), **kwargs)
        self._ready_path: Path | None = None

    def command(self, ready_file: Path) -> list[str]:
        self._ready_path = ready_file
        return super().command(ready_file)

    def promote(self, timeout_s: float = 60.0) -> dict:
        """PROMOTE through the status endpoint; the node's report."""
        from mwcluster.client.connection import promote_standby

        return promote_standby(self.status_endpoint, timeout_s,
                               self.keys.credentials("admin") if self.keys else None)

    def master_info(self) -> dict | None:
        """The promoted master's ready file ({client, pub, pid, epoch}), None before."""
        try:
            info = json.loads(self._ready_path.read_text())
        except (OSError, ValueError, AttributeError):
            return None
        return info if "client" in info else None


class SyncWriter:
    """PUT `prefix/i` with sync durability, one at a time, on its own thread and Client, for
    at most `count` keys and `max_s` seconds; `acked` holds every key acknowledged with its
    version. Errors other than the client's own retries end it (kept in `error`)."""

    def __init__(self, endpoints: list[str], prefix: str, *, count: int = 5000,
                 max_s: float = 60.0, durability: str = "sync") -> None:
        self.endpoints = endpoints
        self.prefix = prefix
        self.count = count
        self.max_s = max_s
        self.durability = durability
        self.acked: dict[str, int] = {}
        self.error: BaseException | None = None
        self.highest_epoch = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> SyncWriter:
        self._thread.start()
        return self

    def _run(self) -> None:
        from mwcluster.client import Client

        deadline = time.monotonic() + self.max_s
        try:
            with Client(self.endpoints, timeout_s=2.0, retries=8) as client:
                for i in range(self.count):
                    if self._stop.is_set() or time.monotonic() > deadline:
                        break
                    key = f"{self.prefix}/{i}"
                    client.put(key, {"i": i}, durability=self.durability)
                    self.acked[key] = i
                    self.highest_epoch = client.epochs.highest
        except BaseException as exc:  # noqa: BLE001  reported to the test
            self.error = exc

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=60)
        assert not self._thread.is_alive(), "the writer did not stop"
