"""A participant of a recipe test in a process of its own (tests/integration/test_recipes.py
starts it, reads what it prints, and may kill it -9 or stop it):

    python recipe_party.py ENDPOINT lock NAME TTL_S cycle ROUNDS
        acquire, write /hist/NAME/<token>/enter and .../exit through Lock.multi (so only
        while held), release; ROUNDS times; prints "held <token>" at each acquire
    python recipe_party.py ENDPOINT lock NAME TTL_S hold
        acquire, write the enter key, print "held <token>", then wait for a line on stdin
        and try one more Lock.multi write: prints "wrote" or "refused <error>"
    python recipe_party.py ENDPOINT election NAME TTL_S VALUE
        campaign with VALUE, print "leading <token>", wait for stdin to close
"""

from __future__ import annotations

import os
import sys

from mwcluster import Client
from mwcluster.client.calls import op_put
from mwcluster.errors import RemoteMultiFailed
from mwcluster.recipes import Election, Lock


def say(*words) -> None:
    print(*words, flush=True)


def main(endpoint: str, kind: str, name: str, ttl_s: str, *rest: str) -> None:
    with Client(endpoint, timeout_s=5.0) as client:
        if kind == "election":
            election = Election(client, name, ttl_s=float(ttl_s))
            assert election.campaign(rest[0], timeout=120)
            say("leading", election.token)
            sys.stdin.read()
            election.resign()
            return
        lock = Lock(client, name, ttl_s=float(ttl_s), value=os.getpid())
        rounds = int(rest[1]) if rest[0] == "cycle" else 1
        for _ in range(rounds):
            assert lock.acquire(timeout=120), "no lock within 120 s"
            token = lock.token
            lock.multi([op_put(f"/hist/{name}/{token}/enter", os.getpid())])
            say("held", token)
            if rest[0] == "hold":
                sys.stdin.readline()
                try:
                    lock.multi([op_put(f"/hist/{name}/{token}/late", os.getpid())])
                    say("wrote")
                except RemoteMultiFailed as exc:
                    say("refused", exc)
                return
            lock.multi([op_put(f"/hist/{name}/{token}/exit", os.getpid())])
            lock.release()


if __name__ == "__main__":
    main(*sys.argv[1:])
