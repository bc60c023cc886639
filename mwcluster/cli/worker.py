"""`mwcluster worker`: run a worker (a thin shell over nodes/worker/node.py).

Options override MWCLUSTER_WORKER_* environment variables, which override the TOML config
file, which overrides the built-in defaults (mwcluster/config.py, conf/worker.toml).
With `status_endpoint` it answers STATUS and PING there (`mwcluster status --worker
ENDPOINT`), with `metrics_port` it serves Prometheus metrics (nodes/worker/observe.py).
SIGTERM and SIGINT stop it gracefully: no new tasks, running ones get `stop_timeout_s` to
finish, then WORKER_LEAVE (the master requeues what is left), exit 0.
"""

from __future__ import annotations

import logging
import signal
import sys

import click

from mwcluster.cli.common import (config_file_option, key_option, key_options,
                                  print_config_option, resolve_config)
from mwcluster.config import WORKER_BY_NAME, load_worker_config
from mwcluster.errors import MwclusterError
from mwcluster.worker import REGISTRY, load_handler_modules

log = logging.getLogger(__name__)


@click.command()
@config_file_option("conf/worker.toml", "MWCLUSTER_WORKER_CONFIG")
@key_options(WORKER_BY_NAME, "master", "standby_status")
@key_option(WORKER_BY_NAME["worker_id"], "--id")
@key_options(WORKER_BY_NAME, "slots", "executor", "dask_scheduler", "task_timeout_s",
             "task_memory_mb")
@key_option(WORKER_BY_NAME["handlers"], multiple=True,
            note="Repeatable: ")
@key_options(WORKER_BY_NAME, "heartbeat_ms", "progress_interval_ms", "ready_file",
             "status_endpoint", "metrics_port", "key_file", "server_key", "principals_dir",
             "insecure")
@print_config_option
def worker(config_file, handlers, print_config, **flags) -> None:
    """Run a worker: take tasks from the master, run their handlers, report progress."""
    flags["handlers"] = ",".join(handlers) if handlers else None
    config = resolve_config(load_worker_config, config_file, flags, print_config)
    if config is None:
        return
    try:
        if "" not in sys.path:
            sys.path.insert(0, "")         # handler modules in the current directory
        load_handler_modules(config.handler_modules())
    except MwclusterError as exc:
        raise click.ClickException(str(exc)) from None
    if not len(REGISTRY):
        log.warning("no task handlers are registered (use --handlers MODULE): every task "
                    "given to this worker will fail")
    from mwcluster.nodes.worker.node import WorkerNode

    try:
        node = WorkerNode(config, REGISTRY)
    except MwclusterError as exc:      # a bad key file
        raise click.ClickException(str(exc)) from None

    def on_signal(signum, _frame):
        node.request_stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, lambda _signum, _frame: node.observed.reload_principals())
    try:
        code = node.run()
    except MwclusterError as exc:      # e.g. the status endpoint or metrics port cannot bind
        raise click.ClickException(str(exc)) from None
    sys.exit(code)
