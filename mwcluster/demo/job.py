"""The demo's job: count words in a generated dataset of web-server log records, split into
shards. Workers import this module (`mwcluster worker --handlers mwcluster.demo.job`).

A shard is `records` log records generated from a seed, so any process can produce the same
shard again: the workers read theirs, the demo recomputes the whole dataset directly to check
the job's result. Each record looks like

    2026-11-26T10:04:17 host-07 GET /api/orders 200 34ms user=eu-1842 cache=hit

The handler reads its shard in chunks, pausing `read_delay_ms` per chunk (what fetching the
chunk from storage would cost), counts the words of every record, and reports progress and
counters (records, words) after each chunk. Its result is the shard's totals and the count of
each word; the job's result is the sum over the shards.
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from typing import Any, Callable

from mwcluster.worker import Task, handler

HANDLER = "demo.wordcount"

HOSTS = [f"host-{n:02d}" for n in range(12)]
METHODS = ["GET"] * 8 + ["POST"] * 3 + ["PUT", "DELETE"]
PATHS = ["/", "/login", "/api/orders", "/api/users", "/api/search", "/static/app.js",
         "/static/site.css", "/health", "/api/cart", "/checkout"]
STATUSES = ["200"] * 20 + ["304"] * 3 + ["404", "404", "500", "302"]
USERS = [f"user=eu-{n}" for n in range(40)] + [f"user=us-{n}" for n in range(40)]
CACHE = ["cache=hit"] * 3 + ["cache=miss"]
CHUNKS = 8


def shard_records(seed: int, shard: int, records: int) -> list[str]:
    """The records of one shard (deterministic in seed and shard)."""
    rng = random.Random(seed * 1_000_003 + shard)
    choice = rng.choice
    out = []
    minute = shard % 1440
    for n in range(records):
        second = (minute * 60 + n) % 86400
        out.append(f"2026-11-26T{second // 3600:02d}:{second // 60 % 60:02d}:{second % 60:02d} "
                   f"{choice(HOSTS)} {choice(METHODS)} {choice(PATHS)} {choice(STATUSES)} "
                   f"{rng.randrange(2, 400)}ms {choice(USERS)} {choice(CACHE)}")
    return out


def count_words(lines: list[str], counts: Counter) -> int:
    words = 0
    for line in lines:
        parts = line.split()[1:]        # the timestamp is not a word worth counting
        words += len(parts)
        counts.update(p for p in parts if not p.endswith("ms"))
    return words


@handler(HANDLER)
def wordcount(task: Task, report: Callable[..., bool]) -> dict[str, Any]:
    seed, shard, records = task.input["seed"], task.input["shard"], task.input["records"]
    delay_s = task.params.get("read_delay_ms", 0) / 1000
    fail_shard = task.params.get("fail_shard")
    lines = shard_records(seed, shard, records)
    counts: Counter = Counter()
    words = 0
    pause = threading.Event()
    step = max(1, -(-len(lines) // CHUNKS))
    for start in range(0, len(lines), step):
        if delay_s:
            pause.wait(delay_s)          # reading the chunk
        chunk = lines[start:start + step]
        words += count_words(chunk, counts)
        done = start + len(chunk)
        if not report(done / len(lines), records=done, words=words):
            break                        # the attempt is no longer ours: stop early
        if fail_shard == shard and task.attempt == 1 and done >= len(lines) // 2:
            raise OSError(f"shard {shard}: read error at record {done} (simulated)")
    return {"records": len(lines), "words": words, "counts": dict(counts)}


def job_inputs(seed: int, shards: int, records: int) -> list[dict]:
    return [{"seed": seed, "shard": n, "records": records} for n in range(shards)]


def combine(results: list[dict]) -> dict[str, Any]:
    """The job's result from the shards' results."""
    counts: Counter = Counter()
    records = words = 0
    for result in results:
        counts.update(result["counts"])
        records += result["records"]
        words += result["words"]
    return {"records": records, "words": words, "counts": dict(counts)}


def direct(seed: int, shards: int, records: int) -> dict[str, Any]:
    """The same result computed here, in one process, without the cluster."""
    counts: Counter = Counter()
    words = 0
    for shard in range(shards):
        words += count_words(shard_records(seed, shard, records), counts)
    return {"records": shards * records, "words": words, "counts": dict(counts)}
