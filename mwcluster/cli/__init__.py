"""The `mwcluster` command line: a thin shell over the library (click), one module per
command group:

    data.py        put, get, rm, ls, stat           status.py      status
    jobs.py        job submit/list/status/wait/...  bench.py       bench
    master.py      master                           checkpoint.py  checkpoint
    worker.py      worker                           failover.py    promote
    keys.py        keys new/list/reload             watch.py       watch
    offline.py     log dump/verify, snapshot inspect
    demo.py        demo, demo-crash                 common.py      what they share

Logging is configured here and only here.
"""

from __future__ import annotations

import logging

import click



def _setup_logging(verbose: int) -> None:
    level = logging.WARNING - 10 * verbose
    logging.basicConfig(level=max(level, logging.DEBUG),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@click.group()
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
@click.version_option(package_name="mwcluster")
def main(verbose: int) -> None:
    """mwcluster: an in-memory metadata master with a journal, snapshots and checkpoints."""
    _setup_logging(verbose)


def _register() -> None:
    from mwcluster.cli import (bench, checkpoint, data, demo, failover, jobs, keys, master,
                               offline, status, watch, worker)

    for command in (data.put, data.get, data.rm, data.ls, data.stat, status.status,
                    bench.bench, master.master, checkpoint.checkpoint, failover.promote,
                    worker.worker, jobs.job, offline.log, offline.snapshot, demo.demo,
                    demo.demo_crash, keys.keys, watch.watch):
        main.add_command(command)


_register()
