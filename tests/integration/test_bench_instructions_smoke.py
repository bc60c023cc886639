"""benchmarks/bench_instructions.py in its quick mode: callgrind counts the instructions of
the put path, recorded into the file it is given. Its figures are not checked: it is a
benchmark. .ci/run installs valgrind."""

from __future__ import annotations

import re
import shutil

import pytest
from helpers import run_quick_benchmark

HEADERS = ("| tree | put | get | put / get | floor (unpack + pack) |",)


@pytest.mark.skipif(shutil.which("valgrind") is None,
                    reason="valgrind is not installed (apt-get install valgrind; .ci/run does)")
def test_quick_run_counts_the_put_path_into_the_given_file(tmp_path):
    text = run_quick_benchmark("bench_instructions.py", "instructions per request", HEADERS,
                               tmp_path)
    row = re.search(r"^\| this tree \| ([\d,]+) \| - \| - \| - \|$", text, re.M)
    assert row and int(row.group(1).replace(",", "")) > 1000, text
