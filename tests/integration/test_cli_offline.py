"""The offline tools (`log verify`, `log dump`, `snapshot inspect`) and the demo, run as a user
would run them."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from mwcluster.cli import main
from mwcluster.core import records as r
from mwcluster.core.values import encode
from mwcluster.engine import Engine


@pytest.fixture
def data_dir(tmp_path):
    engine = Engine(tmp_path, durability="sync")
    engine.open()
    for i in range(30):
        engine.submit(r.Put(f"/k/{i:02d}", encode({"i": i})), origin=(b"\x01\x02", i))
    engine.submit(r.Multi((r.Put("/m", encode(1)), r.Check("/k/01", 1))))
    engine.snapshot()
    engine.submit(r.JobSubmit("j1", "etl", "h", 0, 2, [[1, {}], [2, {}]], 5))
    engine.close()
    return tmp_path


def test_log_verify_ok_then_refuses_mid_log_damage(data_dir):
    runner = CliRunner()
    ok = runner.invoke(main, ["log", "verify", str(data_dir)])
    assert ok.exit_code == 0, ok.output
    assert "ok" in ok.output
    first = sorted((data_dir / "journal").glob("*.wal"))[0]
    raw = bytearray(first.read_bytes())
    raw[40] ^= 0xFF            # inside the first record, with valid records after it
    first.write_bytes(bytes(raw))
    bad = runner.invoke(main, ["log", "verify", str(data_dir), "--json"])
    assert bad.exit_code == 1
    report = json.loads(bad.output)
    assert report["problem"] and str(first.name) in json.dumps(report)


def test_log_dump_text_and_json(data_dir):
    runner = CliRunner()
    text = runner.invoke(main, ["log", "dump", str(data_dir), "--from-txid", "30"])
    assert text.exit_code == 0, text.output
    lines = text.output.splitlines()
    assert lines[0].split()[0] == "30" and "Put" in lines[0] and "0102#29" in lines[0]
    assert "Multi" in lines[1] and "JobSubmit" in lines[2]
    js = runner.invoke(main, ["log", "dump", str(data_dir / "journal"), "--json", "--limit", "2"])
    rows = [json.loads(line) for line in js.output.splitlines()]
    assert [row["txid"] for row in rows] == [1, 2]
    assert rows[0]["record"]["value"] == {"msgpack": {"i": 0}}
    assert rows[0]["origin"] == {"client_id": "0102", "request_id": 0}


def test_snapshot_inspect_and_a_damaged_snapshot(data_dir):
    runner = CliRunner()
    snap = next((data_dir / "snapshots").glob("snap-*.mws"))
    out = runner.invoke(main, ["snapshot", "inspect", str(snap), "--json"])
    assert out.exit_code == 0, out.output
    info = json.loads(out.output)
    assert info["txid"] == 31 and info["counts"]["keys"] == 31
    assert info["digest"] == info["verified_digest"]
    raw = bytearray(snap.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    snap.write_bytes(bytes(raw))
    bad = runner.invoke(main, ["snapshot", "inspect", str(snap), "--json"])
    assert bad.exit_code == 1
    assert json.loads(bad.output)["ok"] is False


def test_demo_runs_end_to_end(tmp_path):
    """The README's first command, with a smaller history so the suite stays fast."""
    proc = subprocess.run([sys.executable, "-m", "mwcluster.cli", "demo-crash", "--records", "6000",
                           "--data-dir", str(tmp_path / "demo")], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "nothing lost" in proc.stdout and "demo finished" in proc.stdout
