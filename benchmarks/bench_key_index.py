"""What creating and deleting keys costs the namespace, on its own (no journal, no records):
deletes in random order, a create followed by a delete of an old key (so every delete finds a
new key waiting to be ordered), and creates in random order followed by one ordered read.
Prints JSON; run it in a checkout of each version to compare (figures in docs/benchmarks.md,
"core engine").

    python benchmarks/bench_key_index.py [--keys N]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mwcluster.core.namespace import Namespace  # noqa: E402

VALUE = b"\xc4\x40" + b"v" * 64          # msgpack bin 8 of 64 bytes
PARENT = "/datasets/logs/2026-11-26"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--keys", type=int, default=300_000)
    n = parser.parse_args().keys
    keys = [f"{PARENT}/part-{i:07d}" for i in range(n)]
    shuffled = keys[:]
    random.Random(1).shuffle(shuffled)
    out = {"keys": n}

    ns = Namespace()
    for txid, key in enumerate(keys, 1):
        ns.put(txid, key, VALUE, None)
    ns.children(PARENT, 1)
    t0 = time.perf_counter()
    for key in shuffled:
        ns.delete(key, False, None)
    out["deletes_random_order_per_s"] = n / (time.perf_counter() - t0)

    half = n // 2
    ns = Namespace()
    txid = 0
    for key in keys[:half]:
        txid += 1
        ns.put(txid, key, VALUE, None)
    ns.children(PARENT, 1)
    t0 = time.perf_counter()
    for i, key in enumerate(keys[half:]):       # a queue: create the next, delete the oldest
        txid += 1
        ns.put(txid, key, VALUE, None)
        ns.delete(keys[i], False, None)
    out["create_then_delete_pairs_per_s"] = (n - half) / (time.perf_counter() - t0)

    ns = Namespace()
    t0 = time.perf_counter()
    for txid, key in enumerate(shuffled, 1):
        ns.put(txid, key, VALUE, None)
    ns.children(PARENT, 1)                       # pays for any ordering left to do
    out["creates_random_order_then_one_read_per_s"] = n / (time.perf_counter() - t0)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
