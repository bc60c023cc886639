"""What the commands that talk to a running master share: the --master and --timeout options,
`connect` (a Client whose errors become one line and exit status 1), and values to and from
JSON. Values go in as JSON (or, when VALUE is not JSON, as a string) and come out as JSON;
byte strings, which JSON lacks, are written `{"$bytes": "<hex>"}` both ways.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from typing import Any, Iterator

import click

from mwcluster.errors import MwclusterError

DEFAULT_MASTER = "tcp://127.0.0.1:5550"

master_option = click.option(
    "--master", default=DEFAULT_MASTER, show_default=True, envvar="MWCLUSTER_MASTER",
    metavar="ENDPOINT", help="The master's client endpoint (env MWCLUSTER_MASTER); several "
                             "separated by commas are tried in turn.")
timeout_option = click.option(
    "--timeout", "timeout_s", type=click.FloatRange(0.01), default=3.0, show_default=True,
    help="Seconds to wait for each reply before retrying once on a new connection.")


@contextmanager
def connect(master: str, timeout_s: float) -> Iterator[Any]:
    """A Client for one command; errors become a one-line message and exit status 1."""
    from mwcluster.client import Client

    try:
        with Client(master.split(",") if "," in master else master, timeout_s=timeout_s,
                    retries=1) as client:
            yield client
    except MwclusterError as exc:
        raise click.ClickException(f"{exc.code}: {exc}") from None
    except ValueError as exc:      # a malformed endpoint (zmq reports it as a ValueError)
        raise click.ClickException(f"bad --master {master!r}: {exc}") from None


# --- JSON <-> values ----------------------------------------------------------------------


def parse_value(text: str) -> Any:
    """VALUE as JSON when it parses, else the string itself."""
    try:
        return from_json(json.loads(text))
    except ValueError:
        return text


def from_json(value: Any) -> Any:
    if isinstance(value, dict):
        if len(value) == 1 and isinstance(value.get("$bytes"), str):
            try:
                return bytes.fromhex(value["$bytes"])
            except ValueError:
                pass
        return {k: from_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [from_json(v) for v in value]
    return value


def to_json(value: Any) -> Any:
    """A value as JSON can carry it: bytes as {"$bytes": hex}, map keys as strings."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"$bytes": bytes(value).hex()}
    if isinstance(value, dict):
        return {(k.hex() if isinstance(k, bytes) else k if isinstance(k, str)
                 else json.dumps(k)): to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    return value


def dumps(value: Any, **kw: Any) -> str:
    return json.dumps(to_json(value), ensure_ascii=False, **kw)
