"""`mwcluster job submit/list/status/wait/cancel`: jobs on a running master (a thin shell over
the Client's job calls, client/job_spec.py and client/watch.py).

Errors are one line on stderr and exit status 1. `job wait` exits 0 when every job it waits
for succeeded, 2 when one failed or was cancelled.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import click

from mwcluster.cli.common import connect, master_option, timeout_option, to_json
from mwcluster.errors import MwclusterError

EXIT_JOB_FAILED = 2


@click.group()
def job() -> None:
    """Submit, list, inspect, wait for and cancel jobs."""


@job.command("submit")
@click.argument("spec", type=click.Path(exists=True, dir_okay=False))
@click.option("--name", default=None, help="Override the spec's name.")
@click.option("--priority", type=int, default=None, help="Override the spec's priority.")
@click.option("--sync", "sync", is_flag=True, help="Reply only once the job is on disk.")
@master_option
@timeout_option
def job_submit(spec: str, name: str | None, priority: int | None, sync: bool, master: str,
               timeout_s: float) -> None:
    """Submit the job described by SPEC (a TOML or JSON file); print its id."""
    from mwcluster.client.job_spec import load_job_spec

    try:
        parsed = load_job_spec(spec)
    except MwclusterError as exc:
        raise click.ClickException(str(exc)) from None
    with connect(master, timeout_s) as client:
        job_id = client.submit_job(name or parsed["name"], parsed["handler"], parsed["tasks"],
                                   params=parsed["params"] or None,
                                   max_attempts=parsed["max_attempts"],
                                   priority=(parsed["priority"] if priority is None
                                             else priority),
                                   timeout_s=parsed["timeout_s"], executor=parsed["executor"],
                                   durability="sync" if sync else None)
    click.echo(job_id)


@job.command("list")
@click.option("--active", is_flag=True, help="Only jobs that have not finished.")
@click.option("--json", "as_json", is_flag=True)
@master_option
@timeout_option
def job_list(active: bool, as_json: bool, master: str, timeout_s: float) -> None:
    """The jobs the master holds, in submit order."""
    from mwcluster.client.watch import describe_counts

    with connect(master, timeout_s) as client:
        jobs = client.jobs(include_finished=not active)
    if as_json:
        click.echo(json.dumps(to_json(jobs), indent=2, sort_keys=True))
        return
    if not jobs:
        click.echo("no jobs")
        return
    for info in jobs:
        click.echo(f"{info['id']:<16} {info['state']:<10} {info['progress'] * 100:5.1f}%  "
                   f"{info['tasks']:>7} tasks  {info['name']} ({info['handler']})  "
                   f"[{describe_counts(info)}]")


def format_status(info: dict[str, Any]) -> list[str]:
    """The lines `job status` prints."""
    from mwcluster.client.watch import describe_counts

    lines = [f"job {info['id']} '{info['name']}' (handler {info['handler']}, priority "
             f"{info['priority']}, max attempts {info['max_attempts']})",
             f"state:      {info['state']}" + (f" ({info['reason']})" if info.get("reason")
                                                else ""),
             f"tasks:      {info['tasks']} [{describe_counts(info)}]",
             *(["options:    " + ", ".join(f"{k}={v}" for k, v in
                                             sorted(info["options"].items()))]
               if info.get("options") else []),
             f"progress:   {info['progress'] * 100:.1f}%"]
    rate = info.get("rate_per_s") or 0.0
    lines.append(f"throughput: {rate:.2f} tasks/s")
    eta = info.get("eta_s")
    if info["state"] not in ("succeeded", "failed", "cancelled"):
        lines.append("eta:        " + ("unknown" if eta is None else f"{eta:.0f} s"))
    started, finished = info.get("started_ms"), info.get("finished_ms")
    if started is not None:
        end = finished if finished is not None else time.time() * 1000
        lines.append(f"elapsed:    {max(0.0, (end - started) / 1000):.1f} s")
    if info.get("counters"):
        lines.append("counters:   " + ", ".join(f"{k}={v}" for k, v in
                                                sorted(info["counters"].items())))
    failures = info.get("failures") or []
    if failures:
        lines.append(f"failures (last {len(failures)}):")
        for index, attempt, worker, error, _at_ms in failures:
            lines.append(f"  task {index} attempt {attempt} on {worker}: {error}")
    return lines


@job.command("status")
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True, help="The master's status map as JSON.")
@master_option
@timeout_option
def job_status(job_id: str, as_json: bool, master: str, timeout_s: float) -> None:
    """Counts per state, progress, throughput, ETA and the last failures of one job."""
    with connect(master, timeout_s) as client:
        info = client.job_status(job_id)
    if as_json:
        click.echo(json.dumps(to_json(info), indent=2, sort_keys=True))
        return
    for line in format_status(info):
        click.echo(line)


@job.command("wait")
@click.argument("job_ids", nargs=-1, required=True)
@click.option("--max-wait-s", "wait_s", type=click.FloatRange(0.1), default=None,
              help="Give up after this many seconds (exit 1) [wait until they finish].")
@click.option("--poll-s", type=click.FloatRange(0.05), default=0.25, show_default=True)
@master_option
@timeout_option
def job_wait(job_ids: tuple[str, ...], wait_s: float | None, poll_s: float, master: str,
             timeout_s: float) -> None:
    """Show live progress until the jobs finish: exit 0 if all succeeded, 2 if any failed
    or was cancelled, 1 on an error (or --max-wait-s)."""
    from rich.console import Console

    from mwcluster.client.watch import watch_jobs

    console = Console(stderr=False)
    with connect(master, timeout_s) as client:
        statuses = watch_jobs(client, list(job_ids), console=console, poll_s=poll_s,
                              timeout_s=wait_s)
    bad = {j: s for j, s in statuses.items() if s["state"] != "succeeded"}
    for job_id, info in statuses.items():
        line = f"{job_id}: {info['state']}"
        if info.get("reason"):
            line += f" ({info['reason']})"
        click.echo(line)
    sys.exit(EXIT_JOB_FAILED if bad else 0)


@job.command("cancel")
@click.argument("job_id")
@click.option("--reason", default="cancelled from the command line", show_default=True)
@master_option
@timeout_option
def job_cancel(job_id: str, reason: str, master: str, timeout_s: float) -> None:
    """Cancel a job's unfinished tasks; print how many were cancelled."""
    with connect(master, timeout_s) as client:
        count = client.cancel_job(job_id, reason)
    click.echo(f"{job_id}: {count} tasks cancelled")
