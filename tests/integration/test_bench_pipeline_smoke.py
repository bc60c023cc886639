"""benchmarks/bench_pipeline.py in its quick mode: the Client's pipeline with no batch size,
batch=1 and batch=64 against a master, each completing its puts, recorded into the file it
is given (Redis only where it is installed). Its figures are not checked: it is a benchmark."""

from __future__ import annotations

from helpers import run_quick_benchmark

HEADERS = ("| round | mode | puts | puts/s | client CPU per put |",)


def test_quick_run_records_every_mode_into_the_given_file(tmp_path):
    text = run_quick_benchmark("bench_pipeline.py", "client pipeline", HEADERS, tmp_path)
    for mode in ("auto", "batch=1", "batch=64"):
        assert f"| 1 | {mode} | 10,000 | " in text, text
    assert "no batch size / batch=1 = " in text, text
