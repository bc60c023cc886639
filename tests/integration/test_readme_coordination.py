"""The README's "Watches, leases and locks" runs as written: its Python block is read from
README.md and run against a master on a random port, and its `mwcluster watch` line then
prints the event the block's put made."""

from __future__ import annotations

import json
import re
import shlex
import sys
from pathlib import Path

from mwcluster import Client
from mwcluster.testing import MasterProcess
from mwcluster.testing.cluster import run_command

ROOT = Path(__file__).resolve().parents[2]


def test_the_readme_coordination_example_runs(tmp_path, capsys):
    section = (ROOT / "README.md").read_text().split("## Watches, leases and locks", 1)[1]
    section = section.split("\n## ", 1)[0]
    code, = re.findall(r"```python\n(.*?)```", section, re.S)
    watch_line, = re.findall(r"`(mwcluster watch [^`]*)`", section)
    with MasterProcess(tmp_path / "data") as master:
        endpoint = master.client_endpoint
        assert '"tcp://127.0.0.1:5550"' in code
        exec(compile(code.replace('"tcp://127.0.0.1:5550"', repr(endpoint)), "README", "exec"),
             {})
        printed = capsys.readouterr().out.split()
        assert printed[1:] == ["put", "/datasets/day-1"]
        args = shlex.split(watch_line)[1:] + ["--count", "1", "--master", endpoint]
        out = run_command([sys.executable, "-m", "mwcluster.cli", *args], 60)
        assert out.returncode == 0, out.stderr
        event = json.loads(out.stdout)
        assert (event["type"], event["key"], event["value"]) == ("put", "/datasets/day-1",
                                                                 {"rows": 10})
        with Client(endpoint) as c:
            assert c.get("/compaction/last") is not None      # written under the lock
            assert c.status()["coordination"]["leased_keys"] == 1
