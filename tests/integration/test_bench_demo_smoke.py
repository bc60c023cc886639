"""benchmarks/bench_demo.py in its quick mode: the script runs the demo's job on a local
cluster with each executor, checks the result against the direct count and records its
section into the file it is given, leaving docs/benchmarks.md alone. Its figures are not
checked: it is a benchmark."""

from __future__ import annotations

from helpers import run_quick_benchmark

HEADERS = ("| round | executor | tasks | job s | direct s | direct / job | result |",)


def test_quick_run_records_its_section_into_the_given_file(tmp_path):
    text = run_quick_benchmark("bench_demo.py", "demo job", HEADERS, tmp_path)
    for executor in ("process", "thread"):
        assert f"| 1 | {executor} | 8 | " in text, text
    assert text.count("| identical |") == 2, text
