"""A short tour of the Python client. Start a master first, then run this file:

    mwcluster master --data-dir /tmp/mwcluster-demo &
    python examples/quickstart_client.py [tcp://127.0.0.1:5550]
"""

from __future__ import annotations

import os
import sys

from mwcluster import Client
from mwcluster.client import op_check, op_put
from mwcluster.errors import BadVersion, MwclusterError


def main(endpoint: str) -> None:
    with Client(endpoint, timeout_s=2.0) as client:
        # A put returns the txid it was logged at; get returns the value (None if missing).
        txid = client.put("/datasets/logs/2026-11-26", {"parts": 17, "owner": "etl"})
        print("put at txid", txid, "->", client.get("/datasets/logs/2026-11-26"))

        # Compare-and-set: pass the version you read; a concurrent writer makes it fail.
        value, stat = client.get_with_stat("/datasets/logs/2026-11-26")
        client.put("/datasets/logs/2026-11-26", {**value, "parts": 18},
                   expected_version=stat.version)
        try:
            client.put("/datasets/logs/2026-11-26", {"parts": 0}, expected_version=stat.version)
        except BadVersion as exc:
            print("stale write refused:", exc)

        # Merge a map (RFC 7386: None removes a field), wait for the fsync with "sync".
        client.merge("/datasets/logs/2026-11-26", {"owner": None, "done": True},
                     durability="sync")
        print("after merge:", client.get("/datasets/logs/2026-11-26"))

        # Several changes at once, all or none.
        txid, results = client.multi([op_check("/datasets/logs/2026-11-27", 0),
                                      op_put("/datasets/logs/2026-11-27", {"parts": 3})])
        print("multi at txid", txid, "results", results)

        # Many requests in flight: the pipeline returns futures, results come in order.
        with client.pipeline(window=128) as pipe:
            for i in range(1000):
                pipe.put(f"/scratch/item-{i:04d}", i)
        print("pipelined", len(pipe.results()), "puts")
        print("children of /datasets/logs:", client.children("/datasets/logs"))
        print("first keys under /scratch/:", client.list("/scratch/", limit=3))
        client.delete("/scratch", recursive=True)     # implicit parents: deletes the 1000

        status = client.status()
        print("master epoch", status.get("epoch"), "txid", status.get("txid"),
              "durable", status.get("durable_txid"))


if __name__ == "__main__":
    target = sys.argv[1] if len(sys.argv) > 1 else os.environ.get(
        "MWCLUSTER_MASTER", "tcp://127.0.0.1:5550")
    try:
        main(target)
    except MwclusterError as exc:
        sys.exit(f"error: {exc}")
