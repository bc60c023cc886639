"""`mwcluster bench`: load a running master and print throughput and latency percentiles (a
thin shell over mwcluster.client.bench). With --key and --server-key (or MWCLUSTER_KEY and
MWCLUSTER_SERVER_KEY) every client process connects with CURVE.
"""

from __future__ import annotations

import json
import os

import click

from mwcluster.cli.common import cli_credentials, master_option
from mwcluster.client.bench import DURABILITIES, OPS
from mwcluster.errors import MwclusterError
from mwcluster.wire.protocol import DEFAULT_MAX_BATCH


def parse_mix(text: str) -> dict[str, int]:
    mix: dict[str, int] = {}
    for part in text.split(","):
        name, _, weight = part.partition("=")
        name = name.strip()
        if name not in OPS or not weight.strip().isdigit():
            raise click.BadParameter(f"{part!r}: expected OP=WEIGHT with OP one of "
                                     f"{', '.join(OPS)}", param_hint="--mix")
        mix[name] = mix.get(name, 0) + int(weight)
    if sum(mix.values()) <= 0:
        raise click.BadParameter("the weights must not all be 0", param_hint="--mix")
    return mix


def key_paths() -> tuple[str, str]:
    """The --key and --server-key values (else MWCLUSTER_KEY, MWCLUSTER_SERVER_KEY) as
    plain strings for the client processes, checked here first: a bad key file is one line
    and exit status 1 before any process starts."""
    from mwcluster.security.curve import ENV_KEY, ENV_SERVER_KEY

    cli_credentials()
    meta = click.get_current_context().meta
    key_file = meta.get("mwcluster.key_file") or os.environ.get(ENV_KEY) or ""
    server_key = meta.get("mwcluster.server_key") or os.environ.get(ENV_SERVER_KEY) or ""
    return str(key_file), str(server_key)


@click.command()
@master_option
@click.option("--clients", type=click.IntRange(1, 256), default=2, show_default=True,
              help="Client processes.")
@click.option("--inflight", type=click.IntRange(1, 100_000), default=64, show_default=True,
              help="Requests each client keeps in flight.")
@click.option("--ops", type=click.IntRange(1), default=200_000, show_default=True,
              help="Requests in all (split between the clients).")
@click.option("--batch", type=click.IntRange(1, DEFAULT_MAX_BATCH), default=1, show_default=True,
              help="Requests per message: 1 sends each alone; K > 1 sends BATCH messages of "
                   "up to K (--inflight still counts requests).")
@click.option("--value-bytes", type=click.IntRange(0, 1 << 20), default=64, show_default=True)
@click.option("--mix", default="put=100", show_default=True,
              help="Weights of the operations: put, get, stat, ping (e.g. put=90,get=10).")
@click.option("--durability", type=click.Choice(DURABILITIES),
              default="async", show_default=True)
@click.option("--keys", type=click.IntRange(1), default=10_000, show_default=True,
              help="How many distinct keys the requests cycle through.")
@click.option("--max-seconds", type=click.FloatRange(0.1), default=120.0, show_default=True,
              help="Stop measuring after this long even if requests remain.")
@click.option("--timeout", "timeout_s", type=click.FloatRange(0.1), default=10.0,
              show_default=True, help="Give up on a client after this long without a reply.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object with the results.")
def bench(master: str, clients: int, inflight: int, ops: int, batch: int, value_bytes: int,
          mix: str, durability: str, keys: int, max_seconds: float, timeout_s: float,
          as_json: bool) -> None:
    """Load a running master and print throughput and latency percentiles."""
    from mwcluster.client.bench import BenchConfig, print_table, run

    key_file, server_key = key_paths()
    config = BenchConfig(master=master, clients=clients, inflight=inflight, ops=ops,
                         batch=batch, value_bytes=value_bytes, mix=parse_mix(mix),
                         durability=durability, keys=keys, max_seconds=max_seconds,
                         timeout_s=timeout_s, key_file=key_file, server_key=server_key)
    try:
        result = run(config)
    except MwclusterError as exc:
        raise click.ClickException(f"{exc.code}: {exc}") from None
    if as_json:
        click.echo(json.dumps(result, sort_keys=True))
    else:
        print_table(result)
