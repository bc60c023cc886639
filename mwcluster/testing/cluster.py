"""A whole cluster on this machine, as child processes on 127.0.0.1: a master, optionally a
checkpoint node, and workers. Used by `mwcluster demo`, the examples and the end-to-end tests.

    with LocalCluster(data_dir, workers=4, handlers=["mwcluster.demo.job"]) as cluster:
        client = cluster.client()
        job_id = client.submit_job(...)
        cluster.kill_worker(0)           # SIGKILL
        cluster.restart_master()         # SIGKILL, then start again on the same ports
    # every process it started is stopped (by its pid), whatever happened

The master's first start picks free ports (port 0); a restart binds the same endpoints again,
so the workers and the checkpoint node reconnect to it by themselves. Each child's stderr
goes to a file that `logs()` returns (shown when something fails).

Secured by default (`secure=True`): keys are made in DATA_DIR/keys (testing/keys.py), every
process runs with CURVE, and `client()` connects as the principal "client" (role write);
`keys.env(name)` gives a command the variables to connect as another.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from mwcluster.testing.checkpoint import CheckpointProcess
from mwcluster.testing.keys import ClusterKeys
from mwcluster.testing.processes import MasterProcess

__all__ = ["LocalCluster", "LocalMaster", "WorkerProcess", "exit_on_sigterm", "run_command"]


def exit_on_sigterm() -> None:
    """Make SIGTERM raise SystemExit in the main thread, so that `with LocalCluster(...)`
    blocks stop their children when a program using them is terminated."""
    import signal
    import threading

    def on_sigterm(signum, _frame):
        raise SystemExit(128 + signum)

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, on_sigterm)


def run_command(args: list[str], timeout_s: float, cwd: str | os.PathLike[str] | None = None
                ) -> subprocess.CompletedProcess:
    """Run a command to its end, capturing its output; past `timeout_s` it gets SIGTERM (so
    that a demo or an example stops what it started), then SIGKILL, and AssertionError."""
    proc = subprocess.Popen(args, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.terminate()
        try:
            out, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        raise AssertionError(f"{' '.join(args)} did not finish within {timeout_s} s:\n"
                             f"{out[-3000:]}\n{err[-3000:]}") from None
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


class LocalMaster(MasterProcess):
    """A master child that keeps its endpoints across restarts."""

    def __init__(self, data_dir: str | os.PathLike[str], **kwargs: Any) -> None:
        super().__init__(data_dir, **kwargs)
        self.client_bind = "tcp://127.0.0.1:0"
        self.pub_bind = "tcp://127.0.0.1:0"

    def command(self, ready_file: Path) -> list[str]:
        return [sys.executable, "-m", "mwcluster.cli", "master",
                "--data-dir", str(self.data_dir), "--durability", self.durability,
                "--client-endpoint", self.client_bind, "--pub-endpoint", self.pub_bind,
                "--ready-file", str(ready_file), *self.extra_args]

    def start(self) -> LocalMaster:
        super().start()
        self.client_bind, self.pub_bind = self.info["client"], self.info["pub"]
        return self


class WorkerProcess(MasterProcess):
    """A `mwcluster worker` child; ready once it has registered with the master."""

    def __init__(self, worker_id: str, master_endpoint: str, *, slots: int,
                 handlers: list[str], extra_args: tuple[str, ...] = (),
                 env: dict[str, str] | None = None, start_timeout_s: float = 30.0) -> None:
        super().__init__(".", extra_args=extra_args, env=env, start_timeout_s=start_timeout_s)
        self.worker_id = worker_id
        self.master_endpoint = master_endpoint
        self.slots = slots
        self.handlers = list(handlers)

    def command(self, ready_file: Path) -> list[str]:
        cmd = [sys.executable, "-m", "mwcluster.cli", "-v", "worker",
               "--master", self.master_endpoint, "--id", self.worker_id,
               "--slots", str(self.slots), "--ready-file", str(ready_file),
               "--status-endpoint", "tcp://127.0.0.1:0"]    # `mwcluster status` lists it
        for module in self.handlers:
            cmd += ["--handlers", module]
        return cmd + list(self.extra_args)


class LocalCluster:
    def __init__(self, data_dir: str | os.PathLike[str], *, workers: int = 4, slots: int = 2,
                 handlers: list[str] | tuple[str, ...] = (), checkpoint: bool = True,
                 checkpoint_period_s: float = 2.0, checkpoint_txns: int = 5000,
                 worker_timeout_s: float = 10.0, worker_heartbeat_ms: int = 500,
                 progress_interval_ms: int = 200, worker_env: dict[str, str] | None = None,
                 master_durability: str = "async", secure: bool = True) -> None:
        self.data_dir = Path(data_dir)
        self.keys = ClusterKeys(self.data_dir / "keys") if secure else None
        self.worker_count = workers
        self.slots = slots
        self.handlers = list(handlers)
        self.with_checkpoint = checkpoint
        self.checkpoint_period_s = checkpoint_period_s
        self.checkpoint_txns = checkpoint_txns
        self.progress_interval_ms = progress_interval_ms
        self.worker_env = worker_env
        env = dict(os.environ)
        env["MWCLUSTER_WORKER_TIMEOUT_S"] = str(worker_timeout_s)
        env["MWCLUSTER_WORKER_HEARTBEAT_MS"] = str(worker_heartbeat_ms)
        self.master = LocalMaster(self.data_dir / "master", durability=master_durability,
                                  env=env, keys=self.keys)
        self.checkpoint: CheckpointProcess | None = None
        self.workers: list[WorkerProcess] = []
        self._clients: list[Any] = []

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> LocalCluster:
        try:
            if self.keys is not None:      # the first workers' principals, read at start
                for n in range(self.worker_count):
                    self.keys.add(f"worker-{n + 1}", ["worker"])
            self.master.start()
            if self.with_checkpoint:
                self.checkpoint = CheckpointProcess(
                    self.data_dir / "checkpoint", self.master, period_s=self.checkpoint_period_s,
                    txns=self.checkpoint_txns, keys=self.keys)
                self.checkpoint.start()
            for n in range(self.worker_count):
                self.add_worker(f"worker-{n + 1}", wait=False)
            for worker in self.workers:
                worker.start_wait()
        except BaseException:
            self.stop()
            raise
        return self

    def add_worker(self, worker_id: str, *, wait: bool = True) -> WorkerProcess:
        if self.keys is not None and not self.keys.secret(worker_id).exists():
            self.keys.add(worker_id, ["worker"])   # a new principal: the master reads it
            with self.client(principal="admin") as admin:
                admin.reload_principals()
        worker = _StartableWorker(worker_id, self.master.client_endpoint, slots=self.slots,
                                  handlers=self.handlers, env=self.worker_env,
                                  extra_args=("--progress-interval-ms",
                                              str(self.progress_interval_ms),
                                              *(self.keys.worker_args(worker_id)
                                                if self.keys else ())))
        self.workers.append(worker)
        worker.launch()
        if wait:
            worker.start_wait()
        return worker

    def stop(self) -> None:
        """Stop every process this cluster started (by pid): workers, then the checkpoint
        node, then the master; SIGTERM first, SIGKILL if one does not exit in time."""
        for client in self._clients:
            client.close()
        self._clients.clear()
        for worker in self.workers:
            worker.stop()
        if self.checkpoint is not None:
            self.checkpoint.stop()
        self.master.stop()

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- faults ------------------------------------------------------------------------------

    def kill_worker(self, n: int) -> int:
        """SIGKILL worker n (0-based); returns its pid."""
        worker = self.workers[n]
        pid = worker.pid
        worker.kill()
        return pid

    def restart_master(self) -> None:
        """SIGKILL the master, then start it again on the same data directory and ports."""
        self.master.kill()
        self.master.restart()

    # --- reading -----------------------------------------------------------------------------

    def client(self, timeout_s: float = 2.0, retries: int = 3, principal: str = "client"):
        """A Client of the master, connected as `principal` when the cluster is secured."""
        from mwcluster.client import Client

        client = Client(self.master.client_endpoint, timeout_s=timeout_s, retries=retries,
                        credentials=self.keys.credentials(principal) if self.keys else None)
        self._clients.append(client)
        return client

    def checkpoint_status(self) -> dict | None:
        if self.checkpoint is None or self.checkpoint.returncode is not None:
            return None
        try:
            return self.checkpoint.status()
        except AssertionError:          # it did not answer in time
            return None

    def logs(self) -> str:
        parts = [f"--- master ---\n{self.master.stderr_text()[-3000:]}"]
        if self.checkpoint is not None:
            parts.append(f"--- checkpoint ---\n{self.checkpoint.stderr_text()[-2000:]}")
        for worker in self.workers:
            parts.append(f"--- {worker.worker_id} ---\n{worker.stderr_text()[-2000:]}")
        return "\n".join(parts)


class _StartableWorker(WorkerProcess):
    """Start several workers at once, then wait for each (their imports overlap)."""

    def launch(self) -> None:
        import threading

        self._error: BaseException | None = None

        def run() -> None:
            try:
                self.start()
            except BaseException as exc:  # re-raised by start_wait
                self._error = exc

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()

    def start_wait(self) -> None:
        self._thread.join(self.start_timeout_s + 5)
        if self._error is not None:
            raise self._error
