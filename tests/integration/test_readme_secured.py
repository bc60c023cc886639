"""The README's "Secured setup on three machines" runs as written: its commands are read from
README.md and run here, each machine (m1, c1, w1) a directory of its own, host names mapped to
127.0.0.1 with free ports, `scp` to a copy between those directories. Background commands are
started by PID and stopped by PID; the master's status must then show the worker registered
over CURVE and the etl principal's key under /teams/etl/.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

from mwcluster.testing import wait_for
from mwcluster.testing.failover import free_endpoint

ROOT = Path(__file__).resolve().parents[2]
HOSTS = ("m1", "c1", "w1")
MWCLUSTER = f"{shlex.quote(sys.executable)} -m mwcluster.cli"


def section_commands() -> list[tuple[str, str]]:
    """(machine, command) of every line of the section's bash blocks, continuations joined."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Secured setup on three machines", 1)[1].split("\n## ", 1)[0]
    out, host = [], None
    for block in re.findall(r"```bash\n(.*?)```", section, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.strip()
            found = re.match(r"#\s*(m1|c1|w1)\b", line)
            if found:
                host = found.group(1)
            elif line and not line.startswith("#"):
                assert host is not None, f"a command before any '# HOST' line: {line}"
                out.append((host, line))
    return out


def localize(command: str, base: Path, ports: dict[str, str]) -> str:
    def endpoint(m: re.Match) -> str:
        key = f"{m.group(1)}:{m.group(2)}"
        ports.setdefault(key, free_endpoint().rsplit(":", 1)[1])
        return f"tcp://127.0.0.1:{ports[key]}"
    command = re.sub(r"tcp://(m1|c1|w1):(\d+)", endpoint, command)

    def scp(m: re.Match) -> str:
        flags, src, host, dst = m.group(1) or "", m.group(2), m.group(3), m.group(4)
        return f"cp {flags}{src} {shlex.quote(str(base / host))}/{dst}"
    command = re.sub(r"scp (-\w+ )?(\S+) (m1|c1|w1):(\S*)", scp, command)
    return re.sub(r"(^|&& |\| )mwcluster ", lambda m: f"{m.group(1)}{MWCLUSTER} ", command)


def test_the_readme_secured_setup_runs_as_written(tmp_path):
    commands = section_commands()
    assert any("keys new" in c for _, c in commands) and any("worker" in c for _, c in commands)
    for host in HOSTS:
        (tmp_path / host).mkdir()
    ports: dict[str, str] = {}
    background: list[subprocess.Popen] = []
    outputs = []
    try:
        for host, command in commands:
            command = localize(command, tmp_path, ports)
            cwd = tmp_path / host
            if command.endswith("&"):
                log = open(cwd / f"bg-{len(background)}.log", "w")
                background.append(subprocess.Popen(["bash", "-c", "exec " + command[:-1]],
                                                   cwd=cwd, stdout=log, stderr=log))
                continue
            done = subprocess.run(["bash", "-c", command], cwd=cwd, capture_output=True,
                                  text=True, timeout=60)
            assert done.returncode == 0, f"{host}$ {command}\n{done.stdout}\n{done.stderr}"
            outputs.append(done.stdout)
        master = next(f"tcp://127.0.0.1:{p}" for k, p in ports.items() if k.startswith("m1"))
        ops = ["--master", master, "--key", "keys/ops.secret", "--server-key",
               "keys/server.toml"]

        def worker_registered() -> bool:
            done = subprocess.run([sys.executable, "-m", "mwcluster.cli", "status", "--json",
                                   *ops], cwd=tmp_path / "m1", capture_output=True,
                                  text=True, timeout=60)
            status = json.loads(done.stdout)
            return [n["worker_id"] for n in status.get("worker_nodes", [])] == ["w1"] and \
                status["security"]["curve"]
        wait_for(worker_registered, 30, "the worker to register with the secured master")
        assert '{"n": 1}' in "".join(outputs)
        for proc in background:
            assert proc.poll() is None, f"{proc.args} exited with {proc.returncode}"
    finally:
        for proc in background:
            if proc.poll() is None:
                proc.terminate()
        for proc in background:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=20)
