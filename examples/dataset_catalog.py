"""Dataset metadata in the master's namespace: register datasets and their partitions, update
them safely from several writers, and query them.

From the root of a fresh clone (after `pip install .`):

    python examples/dataset_catalog.py                         # starts its own master
    python examples/dataset_catalog.py --master tcp://127.0.0.1:5550

Layout used (one key per object, values are maps):

    /datasets/<name>                          {"owner", "format", "schema": [...]}
    /datasets/<name>/partitions/<date>        {"rows", "bytes", "state", "files"}

It writes a few days of partitions for two datasets in one atomic multi per day, marks a
partition as compacted with a compare-and-set (and shows a stale writer being refused), then
answers questions from the namespace alone: the partitions of a date range, rows per dataset,
the partitions not yet compacted. Exit 0 when the answers match what it wrote.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from mwcluster import Client
from mwcluster.client import op_check, op_put
from mwcluster.errors import BadVersion
from mwcluster.testing import LocalMaster, exit_on_sigterm

DATASETS = {"weblogs": {"owner": "web-team", "format": "jsonl",
                        "schema": ["ts", "host", "path", "status", "ms"]},
            "orders": {"owner": "shop-team", "format": "parquet",
                       "schema": ["ts", "order_id", "amount", "country"]}}


def partition_key(dataset: str, day: str) -> str:
    return f"/datasets/{dataset}/partitions/{day}"


def catalog(client: Client, days: int) -> int:
    for name, meta in DATASETS.items():
        client.put(f"/datasets/{name}", meta)
    dates = [f"2026-11-{d:02d}" for d in range(1, days + 1)]
    written: dict[str, int] = {name: 0 for name in DATASETS}
    for n, day in enumerate(dates):
        # One atomic multi per day: both datasets' partitions, each only if it is new.
        ops = []
        for k, name in enumerate(DATASETS):
            rows = 1000 * (n + 1) + 17 * k
            written[name] += rows
            ops += [op_check(partition_key(name, day), 0),
                    op_put(partition_key(name, day), {"rows": rows, "bytes": rows * 120,
                                                      "state": "raw", "files": 4})]
        txid, _ = client.multi(ops, durability="sync")
        print(f"{day}: both partitions registered at txid {txid}")

    # A compaction job marks a partition compacted, but only if nobody changed it meanwhile.
    key = partition_key("weblogs", dates[0])
    value, stat = client.get_with_stat(key)
    client.put(key, {**value, "state": "compacted", "files": 1}, expected_version=stat.version)
    try:
        client.put(key, {**value, "state": "raw"}, expected_version=stat.version)
        print("a stale writer was NOT refused")
        return 1
    except BadVersion as exc:
        print(f"a stale writer is refused: {exc}")
    client.merge(partition_key("orders", dates[-1]), {"state": "compacted", "files": 1})

    # Queries, from the namespace alone.
    ok = True
    lo, hi = dates[1], dates[min(3, len(dates) - 1)]
    keys = [k for k in client.iter_keys("/datasets/weblogs/partitions/")
            if lo <= k.rsplit("/", 1)[1] <= hi]
    print(f"weblogs partitions from {lo} to {hi}: {[k.rsplit('/', 1)[1] for k in keys]}")
    ok &= len(keys) == len([d for d in dates if lo <= d <= hi])
    for name in client.children("/datasets"):
        parts = client.children(f"/datasets/{name}/partitions")
        rows = sum(client.get(f"/datasets/{name}/partitions/{p}")["rows"] for p in parts)
        owner = client.get(f"/datasets/{name}")["owner"]
        print(f"{name} ({owner}): {len(parts)} partitions, {rows:,} rows")
        ok &= rows == written[name] and len(parts) == len(dates)
    raw = [k for k in client.iter_keys("/datasets/") if "/partitions/" in k
           and client.get(k)["state"] == "raw"]
    print(f"partitions still to compact: {len(raw)} of {2 * len(dates)}")
    ok &= len(raw) == 2 * len(dates) - 2
    stat = client.stat(key)
    print(f"{key}: version {stat.version}, last changed at txid {stat.modify_txid}")
    print("answers match what was written" if ok else "MISMATCH")
    return 0 if ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--master", help="use this running master instead of starting one")
    parser.add_argument("--days", type=int, default=7)
    args = parser.parse_args()
    exit_on_sigterm()          # a terminated run still stops the processes it started
    if args.master:
        with Client(args.master, timeout_s=2.0) as client:
            return catalog(client, args.days)
    with tempfile.TemporaryDirectory(prefix="mwcluster-catalog-") as tmp, \
            LocalMaster(Path(tmp) / "master") as master:
        print(f"started a master on {master.client_endpoint}")
        with Client(master.client_endpoint, timeout_s=2.0) as client:
            return catalog(client, args.days)


if __name__ == "__main__":
    sys.exit(main())
