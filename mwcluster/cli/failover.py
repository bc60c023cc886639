"""`mwcluster promote`: make the standby (a checkpoint node) the master (docs/failover.md).

Sends PROMOTE to the node's status endpoint once (never retried: a promotion is not a request
to repeat blindly) and prints the node's report: the new epoch, the txid it serves from,
whether the old master was fenced, and how many records the old master had that the node did
not receive.
"""

from __future__ import annotations

import json
import sys

import click

from mwcluster.cli.common import cli_credentials, credentials_options
from mwcluster.client.connection import promote_standby


@click.command()
@click.option("--checkpoint", "endpoint", required=True,
              help="The checkpoint node's status endpoint (its status_endpoint).")
@click.option("--timeout-s", type=float, default=60.0, show_default=True,
              help="How long to wait for the promotion to complete.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@credentials_options
def promote(endpoint, timeout_s, as_json) -> None:
    """Promote the standby (a checkpoint node) to master: it fences the old master, takes
    its last records if it can, and serves on its promote endpoints under a higher epoch."""
    from mwcluster.errors import MwclusterError

    try:
        report = promote_standby(endpoint, timeout_s, cli_credentials())
    except MwclusterError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps(report, indent=2, sort_keys=True))
        return
    click.echo(f"promoted: epoch {report['epoch']}, serving on {report['client']} (log stream "
               f"{report['pub']}) from txid {report['txid']}")
    click.echo(f"old master fenced: {report['old_master_fenced']}; records it had that were "
               f"not received: {report['records_missing']}")
    if report["records_missing"]:
        click.echo("those records are lost (async writes acknowledged before the failover)",
                   err=True)
    sys.stdout.flush()
