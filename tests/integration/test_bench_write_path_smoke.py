"""benchmarks/bench_write_path.py in its quick mode: the floor, the master at two flush
intervals, the pipeline and a standby's sync and replicated puts, recorded into the file it is
given (Redis only where it is installed). Its figures are not checked: it is a benchmark."""

from __future__ import annotations

import re

from helpers import run_quick_benchmark

HEADERS = ("| round | run | requests/s | server CPU us | client CPU us | p50 ms | p99 ms | ",
           "| round | interval | async puts / Redis c50 P1 (>= 1.0) |")


def test_quick_run_records_every_run_into_the_given_file(tmp_path):
    text = run_quick_benchmark("bench_write_path.py", "write path", HEADERS, tmp_path)
    assert "| 1 | floor: bare pyzmq, unbatched 2 x 256 | " in text, text
    for interval in ("0", "2"):
        for run in ("async puts", "async puts, 2 x 1024, 64 per message", "gets",
                    "sync puts", "one async put in flight",
                    "pipeline, no batch size"):
            assert f"| 1 | {run}, interval {interval} ms | " in text, text
        assert f"| 1 | {interval} ms | " in text, text
    assert "| 1 | replicated puts, standby following | " in text, text
    assert "replicated / sync, standby following (>= 0.8): " in text, text
    assert "The request handler in-process (`--profile`, 2,000 puts" in text, text
    shares = re.findall(r"^- (.+): (\d+\.\d)%$", text, re.M)
    assert len(shares) == 14 and any("submit" in name for name, _ in shares), text
