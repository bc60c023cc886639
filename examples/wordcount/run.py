"""Word count over a directory of text files, with a custom handler module.

From the root of a fresh clone (after `pip install .`):

    python examples/wordcount/run.py                      # starts a master and 3 workers itself
    python examples/wordcount/run.py --files 12 --workers 2

It writes a small corpus of text files (or counts the files of --corpus DIR), starts a master
and workers that import examples/wordcount/wordcount_handlers.py, submits one task per file,
shows the job's progress, merges the per-file results and checks them against a count made
here. Every process it started is stopped at the end.

To run the same against a cluster you start yourself:

    mwcluster master --data-dir /tmp/wc-master &
    PYTHONPATH=examples/wordcount mwcluster worker --handlers wordcount_handlers --slots 2 &
    python examples/wordcount/run.py --master tcp://127.0.0.1:5550
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
from collections import Counter
from pathlib import Path

from rich.console import Console

from mwcluster.client import Client
from mwcluster.client.watch import watch_jobs
from mwcluster.testing import LocalCluster, exit_on_sigterm

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import wordcount_handlers  # noqa: E402  (the same counting rule, to check the result)

WORDS = ("the data master worker task job shard record journal snapshot checkpoint replica "
         "epoch txid progress counter failure retry heartbeat slot queue thread socket "
         "metadata namespace version lease cluster node").split()


def write_corpus(directory: Path, files: int, lines: int, seed: int = 5) -> list[Path]:
    rng = random.Random(seed)
    paths = []
    for n in range(files):
        path = directory / f"part-{n:04d}.txt"
        text = "\n".join(" ".join(rng.choices(WORDS, k=rng.randrange(4, 16)))
                         for _ in range(lines))
        path.write_text(text + "\n", encoding="utf-8")
        paths.append(path)
    return paths


def count_here(paths: list[Path]) -> Counter:
    counts: Counter = Counter()
    for path in paths:
        counts.update(wordcount_handlers.WORD.findall(path.read_text(encoding="utf-8").lower()))
    return counts


def run_job(client, paths: list[Path], console: Console) -> int:
    job_id = client.submit_job("wordcount", "wordcount.count",
                               [{"path": str(p)} for p in paths],
                               params={"top": len(WORDS), "report_every": 100},
                               durability="sync")
    console.print(f"submitted {job_id}: {len(paths)} files")
    status = watch_jobs(client, [job_id], console=console)[job_id]
    if status["state"] != "succeeded":
        console.print(f"[red]the job {status['state']}: {status.get('reason')}")
        return 1
    total: Counter = Counter()
    for task in client.job_tasks(job_id, 0, len(paths)):
        total.update(task["result"]["top"])
    expected = count_here(paths)
    console.print("most frequent: " + ", ".join(f"{w} {n}" for w, n in total.most_common(5)))
    same = total == expected
    console.print(f"{sum(total.values()):,} words; checked against a count made here: "
                  + ("[green]identical" if same else "[red]DIFFERENT"))
    return 0 if same else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--master", help="use this running master instead of starting one")
    parser.add_argument("--corpus", type=Path, help="count the *.txt files of this directory")
    parser.add_argument("--files", type=int, default=30)
    parser.add_argument("--lines", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=3)
    args = parser.parse_args()
    exit_on_sigterm()          # a terminated run still stops the processes it started
    console = Console()
    with tempfile.TemporaryDirectory(prefix="mwcluster-wordcount-") as tmp:
        if args.corpus:
            paths = sorted(args.corpus.resolve().glob("*.txt"))
        else:
            paths = write_corpus(Path(tmp), args.files, args.lines)
        if args.master:
            with Client(args.master, timeout_s=2.0) as client:
                return run_job(client, paths, console)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(HERE), env.get("PYTHONPATH")) if p)
        with LocalCluster(Path(tmp) / "cluster", workers=args.workers, slots=2,
                          handlers=["wordcount_handlers"], checkpoint=False,
                          worker_env=env) as cluster:
            console.print(f"master {cluster.master.client_endpoint}, {args.workers} workers")
            return run_job(cluster.client(), paths, console)


if __name__ == "__main__":
    sys.exit(main())
