"""`mwcluster worker`: run a worker (a thin shell over nodes/worker/node.py).

Options override MWCLUSTER_WORKER_* environment variables, which override the TOML config
file, which overrides the built-in defaults (mwcluster/config.py, conf/worker.toml).
With `status_endpoint` it answers STATUS and PING there (`mwcluster status --worker
ENDPOINT`), with `metrics_port` it serves Prometheus metrics (nodes/worker/observe.py).
SIGTERM and SIGINT stop it gracefully: no new tasks, running ones get `stop_timeout_s` to
finish, then WORKER_LEAVE (the master requeues what is left), exit 0.
"""

from __future__ import annotations

import json
import logging
import signal
import sys

import click

from mwcluster.errors import MwclusterError

log = logging.getLogger(__name__)


@click.command()
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False),
              default=None, help="TOML config file (see conf/worker.toml); default: "
                                 "$MWCLUSTER_WORKER_CONFIG if set.")
@click.option("--master", default=None,
              help="The master's endpoint, or several separated by commas (the master and the "
                   "standby's promote endpoint) [tcp://127.0.0.1:5550].")
@click.option("--standby-status", default=None,
              help="The standby's status endpoint: unanswered requests vote for it to serve "
                   "(auto failover) [none].")
@click.option("--id", "worker_id", default=None, help="Worker id [host name and pid].")
@click.option("--slots", type=int, default=None, help="Tasks at once [the CPU count].")
@click.option("--handlers", multiple=True,
              help="Python module whose @handler functions this worker runs (repeatable, or "
                   "comma-separated), e.g. mwcluster.demo.job.")
@click.option("--heartbeat-ms", type=int, default=None,
              help="Heartbeat interval [the master's, 1000].")
@click.option("--progress-interval-ms", type=int, default=None,
              help="At most one progress report per task this often [500].")
@click.option("--ready-file", default=None,
              help="Write {worker_id, pid, slots, master} as JSON here once registered.")
@click.option("--status-endpoint", default=None,
              help="ROUTER answering STATUS and PING with this worker's status, e.g. "
                   "tcp://127.0.0.1:5560 (port 0: a free one) [none].")
@click.option("--metrics-port", type=int, default=None,
              help="Prometheus metrics on this port (0: none) [0].")
@click.option("--print-config", is_flag=True,
              help="Print the resolved configuration with the source of each value, and exit.")
def worker(config_file, master, standby_status, worker_id, slots, handlers, heartbeat_ms,
           progress_interval_ms, ready_file, status_endpoint, metrics_port,
           print_config) -> None:
    """Run a worker: take tasks from the master, run their handlers, report progress."""
    from mwcluster.worker import REGISTRY, load_handler_modules
    from mwcluster.config import load_worker_config

    flags = {"master": master, "standby_status": standby_status, "worker_id": worker_id,
             "slots": slots,
             "handlers": ",".join(handlers) if handlers else None,
             "heartbeat_ms": heartbeat_ms, "progress_interval_ms": progress_interval_ms,
             "ready_file": ready_file, "status_endpoint": status_endpoint,
             "metrics_port": metrics_port}
    try:
        config = load_worker_config(config_file, flags=flags)
        if print_config:
            for key, value in config.to_dict().items():
                click.echo(f"{key} = {json.dumps(value)}    # {config.sources[key]}")
            return
        if "" not in sys.path:
            sys.path.insert(0, "")         # handler modules in the current directory
        load_handler_modules(config.handler_modules())
    except MwclusterError as exc:
        raise click.ClickException(str(exc)) from None
    if not len(REGISTRY):
        log.warning("no task handlers are registered (use --handlers MODULE): every task "
                    "given to this worker will fail")
    from mwcluster.nodes.worker.node import WorkerNode

    node = WorkerNode(config, REGISTRY)

    def on_signal(signum, _frame):
        node.request_stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        code = node.run()
    except MwclusterError as exc:      # e.g. the status endpoint or metrics port cannot bind
        raise click.ClickException(str(exc)) from None
    sys.exit(code)
