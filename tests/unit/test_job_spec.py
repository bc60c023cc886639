"""Job spec files (TOML and JSON) and the `job status` text."""

from __future__ import annotations

import json

import pytest

from mwcluster.cli.jobs import format_status
from mwcluster.errors import ConfigError
from mwcluster.client.job_spec import expand_template, load_job_spec, parse_job_spec


def test_a_toml_spec_with_a_count_and_a_template(tmp_path):
    spec = tmp_path / "job.toml"
    spec.write_text('name = "wc"\nhandler = "wc.count"\npriority = 2\ncount = 3\n'
                    'params = { top = 5 }\n[input]\nshard = "{i}"\n'
                    'path = "/data/part-{i:03d}-of-{count}"\n')
    parsed = load_job_spec(spec)
    assert parsed == {"name": "wc", "handler": "wc.count", "priority": 2, "max_attempts": 3,
                      "params": {"top": 5}, "timeout_s": None, "executor": None,
                      "tasks": [{"shard": i, "path": f"/data/part-{i:03d}-of-3"}
                                for i in range(3)]}


def test_a_json_spec_with_explicit_tasks(tmp_path):
    spec = tmp_path / "job.json"
    spec.write_text(json.dumps({"name": "x", "handler": "h", "tasks": [1, [2], {"a": 3}],
                                "max_attempts": 1}))
    parsed = load_job_spec(spec)
    assert parsed["tasks"] == [1, [2], {"a": 3}] and parsed["max_attempts"] == 1


def test_a_spec_may_set_the_jobs_timeout_and_executor(tmp_path):
    spec = tmp_path / "job.toml"
    spec.write_text('name = "x"\nhandler = "h"\ncount = 1\ntimeout_s = 90\n'
                    'executor = "thread"\n')
    parsed = load_job_spec(spec)
    assert (parsed["timeout_s"], parsed["executor"]) == (90, "thread")


@pytest.mark.parametrize("data, words", [
    ({"handler": "h", "count": 1}, ["'name' is required"]),
    ({"name": "n", "handler": "h"}, ["either tasks", "or count"]),
    ({"name": "n", "handler": "h", "tasks": [1], "count": 2}, ["not both"]),
    ({"name": "n", "handler": "h", "count": 0}, ["count must be"]),
    ({"name": "n", "handler": "h", "count": 2, "input": "{j}"}, ["only {i} and {count}"]),
    ({"name": "n", "handler": "h", "tasks": [1], "colour": "red"}, ["unknown keys colour"]),
    ({"name": "n", "handler": "h", "tasks": [1], "max_attempts": 0}, ["max_attempts"]),
    ({"name": "n", "handler": "h", "tasks": [1], "timeout_s": 0}, ["timeout_s", "> 0"]),
    ({"name": "n", "handler": "h", "tasks": [1], "timeout_s": "1m"}, ["timeout_s"]),
    ({"name": "n", "handler": "h", "tasks": [1], "executor": "gpu"},
     ["executor must be", "'gpu'"]),
])
def test_bad_specs_say_what_is_wrong(data, words):
    with pytest.raises(ConfigError) as info:
        parse_job_spec(data, "spec.toml")
    assert all(w in str(info.value) for w in words), str(info.value)


def test_a_file_that_does_not_parse_names_the_format(tmp_path):
    spec = tmp_path / "job.toml"
    spec.write_text("name = ")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_job_spec(spec)


def test_templates_fill_nested_strings_and_keep_other_values():
    assert expand_template({"a": ["{i}", "p{i}"], "n": 1.5, "b": True}, 7, 9) == \
        {"a": [7, "p7"], "n": 1.5, "b": True}


def test_status_text_has_counts_progress_throughput_eta_and_failures():
    info = {"id": "job-3", "name": "wc", "handler": "h", "priority": 0, "max_attempts": 3,
            "state": "running", "reason": None, "tasks": 10,
            "counts": {"pending": 4, "running": 2, "succeeded": 4},
            "progress": 0.5, "rate_per_s": 2.0, "eta_s": 3.0, "started_ms": 1000,
            "finished_ms": None, "counters": {"records": 40},
            "failures": [[3, 1, "w1", "OSError: boom", 1500]]}
    text = "\n".join(format_status(info))
    for words in ("job job-3 'wc'", "running", "2 running, 4 pending, 4 succeeded",
                  "50.0%", "2.00 tasks/s", "eta:        3 s", "records=40",
                  "task 3 attempt 1 on w1: OSError: boom"):
        assert words in text, (words, text)


def test_the_readme_job_spec_parses_and_names_the_demo_handler():
    import re
    from pathlib import Path

    from mwcluster.demo import job as demo_job

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    block = re.search(r"```toml\n(name = .*?)```", readme, re.S).group(1)
    parsed = parse_job_spec(__import__("tomllib").loads(block), "README.md")
    assert parsed["handler"] == demo_job.HANDLER and len(parsed["tasks"]) == 100
    assert parsed["tasks"][7] == {"seed": 1, "shard": 7, "records": 1000}
