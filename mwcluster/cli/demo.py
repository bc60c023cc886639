"""`mwcluster demo` (a whole cluster on this machine running a word-count job) and `mwcluster
demo-crash` (the engine alone, killed and recovered): thin shells over mwcluster.demo.
"""

from __future__ import annotations

import sys

import click


@click.command()
@click.option("--data-dir", type=click.Path(file_okay=False), default=None,
              help="Where to keep the cluster's files (default: a temporary directory, "
                   "removed when the demo passes).")
@click.option("--shards", type=click.IntRange(1, 100_000), default=100, show_default=True,
              help="Tasks of the job (one shard of the dataset each).")
@click.option("--records", type=click.IntRange(1, 1_000_000), default=5000, show_default=True,
              help="Log records per shard (each task generates and counts them: CPU work).")
@click.option("--workers", type=click.IntRange(2, 64), default=4, show_default=True)
@click.option("--slots", type=click.IntRange(1, 64), default=2, show_default=True,
              help="Tasks each worker runs at once.")
@click.option("--executor", type=click.Choice(["process", "thread"]), default="process",
              show_default=True, help="Where the workers run the handler: a process per slot "
                                      "(every core) or the worker's threads (one GIL).")
@click.option("--read-delay-ms", type=click.IntRange(0, 10_000), default=0,
              show_default=True, help="Simulated storage latency per chunk of a shard.")
@click.option("--chaos", is_flag=True,
              help="Kill a worker (SIGKILL) and restart the master (SIGKILL, start again) "
                   "in the middle of the job.")
def demo(data_dir: str | None, shards: int, records: int, workers: int, slots: int,
         executor: str, read_delay_ms: int, chaos: bool) -> None:
    """Start a master, a checkpoint node and workers here, run a word-count job, check it."""
    from mwcluster.demo.cluster import run_demo

    sys.exit(run_demo(data_dir=data_dir, shards=shards, records=records, workers=workers,
                      slots=slots, chaos=chaos, read_delay_ms=read_delay_ms,
                      executor=executor))


@click.command("demo-crash")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None,
              help="Where to keep the demo's files (default: a temporary directory, removed "
                   "when the demo passes).")
@click.option("--records", type=click.IntRange(1000, 10_000_000), default=60000,
              show_default=True, help="How many updates the writer makes.")
def demo_crash(data_dir: str | None, records: int) -> None:
    """The engine alone: write, crash with SIGKILL, recover, stop gracefully."""
    from mwcluster.demo.crash import run_crash_demo

    sys.exit(run_crash_demo(data_dir, records))
