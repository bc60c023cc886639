"""benchmarks/bench_watch.py in its quick mode: writes with 0, 1 and 3 watchers and lease
keepalives from 2 processes against one master, recorded into the file it is given. Its
figures are not checked: it is a benchmark."""

from __future__ import annotations

from helpers import run_quick_benchmark

HEADERS = ("| watchers | processes | writes | writes/s | / 0 watchers | events/s | received / "
           "written | latency p50 ms | latency p99 ms | events per answer | master CPU us per "
           "write |",
           "| clients | keepalives | keepalives/s | round trip p50 ms | round trip p99 ms "
           "| master CPU us per keepalive |")


def test_quick_run_records_every_row_into_the_given_file(tmp_path):
    text = run_quick_benchmark("bench_watch.py", "watches and leases", HEADERS, tmp_path)
    assert "| 0 | 0 | 300 | " in text, text
    for watchers, procs in ((1, 1), (3, 2)):
        assert f"\n| {watchers} | {procs} | 300 | " in text, text
    assert "\n| 2 | " in text.split("| clients | keepalives |", 1)[1], text
