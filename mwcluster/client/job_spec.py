"""Job spec files for `mwcluster job submit SPEC`: TOML or JSON, read into submit_job's
arguments.

    name = "wordcount"                 # required
    handler = "wordcount.count"        # required: a handler name the workers register
    max_attempts = 3                   # optional (3)
    priority = 0                       # optional (0): higher runs first
    params = { top = 10 }              # optional: given to every task
    timeout_s = 600                    # optional: an attempt running longer is stopped and
                                       # failed as timed out (default: the worker's)
    executor = "process"               # optional: process or thread, on such workers

    tasks = [ { path = "/data/a" }, { path = "/data/b" } ]     # either the inputs ...

    count = 200                        # ... or N tasks made from a template: in every
    [input]                            # string, {i} is the task index and {count} N; a
    shard = "{i}"                      # string that is exactly "{i}" becomes the integer
    path = "/data/part-{i:05d}"

A file ending in .json is read as JSON (same keys), anything else as TOML.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

from mwcluster.errors import ConfigError

__all__ = ["expand_template", "load_job_spec", "parse_job_spec"]

_KNOWN = {"name", "handler", "max_attempts", "priority", "params", "tasks", "count", "input",
          "timeout_s", "executor"}
MAX_TASKS = 1_000_000


def load_job_spec(path: str | Path) -> dict[str, Any]:
    """Read and check a spec file; returns {name, handler, tasks, params, max_attempts,
    priority, timeout_s, executor}. ConfigError names the file and what is wrong."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read the job spec {path}: {exc}") from None
    try:
        data = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        kind = "JSON" if path.suffix == ".json" else "TOML"
        raise ConfigError(f"job spec {path} is not valid {kind}: {exc}") from None
    return parse_job_spec(data, str(path))


def parse_job_spec(data: Any, source: str = "the job spec") -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a table of keys, got {type(data).__name__}")
    unknown = sorted(set(data) - _KNOWN)
    if unknown:
        raise ConfigError(f"{source}: unknown keys {', '.join(unknown)}; known: "
                          f"{', '.join(sorted(_KNOWN))}")
    for key in ("name", "handler"):
        if not isinstance(data.get(key), str) or not data[key]:
            raise ConfigError(f"{source}: {key!r} is required (a non-empty string)")
    max_attempts = data.get("max_attempts", 3)
    priority = data.get("priority", 0)
    if type(max_attempts) is not int or max_attempts < 1:
        raise ConfigError(f"{source}: max_attempts must be an integer >= 1")
    if type(priority) is not int:
        raise ConfigError(f"{source}: priority must be an integer")
    params = data.get("params", {})
    if not isinstance(params, dict):
        raise ConfigError(f"{source}: params must be a table")
    timeout_s, executor = data.get("timeout_s"), data.get("executor")
    if timeout_s is not None and (type(timeout_s) not in (int, float) or timeout_s <= 0):
        raise ConfigError(f"{source}: timeout_s must be a number of seconds > 0")
    if executor is not None and executor not in ("process", "thread"):
        raise ConfigError(f"{source}: executor must be \"process\" or \"thread\", not "
                          f"{executor!r}")
    has_tasks, has_count = "tasks" in data, "count" in data
    if has_tasks == has_count:
        raise ConfigError(f"{source}: give either tasks = [...] or count = N (with an input "
                          "template), not both and not neither")
    if has_tasks:
        tasks = data["tasks"]
        if not isinstance(tasks, list) or not tasks:
            raise ConfigError(f"{source}: tasks must be a non-empty list of task inputs")
        if "input" in data:
            raise ConfigError(f"{source}: input (a template) goes with count, not with tasks")
    else:
        count = data["count"]
        if type(count) is not int or not 1 <= count <= MAX_TASKS:
            raise ConfigError(f"{source}: count must be an integer within 1..{MAX_TASKS}")
        template = data.get("input", "{i}")
        try:
            tasks = [expand_template(template, i, count) for i in range(count)]
        except (KeyError, IndexError, ValueError) as exc:
            raise ConfigError(f"{source}: the input template cannot be filled in: {exc!r} "
                              "(only {i} and {count} are known)") from None
    return {"name": data["name"], "handler": data["handler"], "tasks": tasks,
            "params": params, "max_attempts": max_attempts, "priority": priority,
            "timeout_s": timeout_s, "executor": executor}


def expand_template(template: Any, i: int, count: int) -> Any:
    """The template with {i} and {count} filled in, in every string at any depth."""
    if isinstance(template, str):
        if template == "{i}":
            return i
        return template.format(i=i, count=count)
    if isinstance(template, dict):
        return {k: expand_template(v, i, count) for k, v in template.items()}
    if isinstance(template, list):
        return [expand_template(v, i, count) for v in template]
    return template
