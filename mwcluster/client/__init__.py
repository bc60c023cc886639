"""The Python client of the master, and what a client-side program needs around it.

    connection.py  Client (a DEALER with typed errors, retries and pipelining), Pipeline,
                   Future: the only module here with a socket
    calls.py       every operation's request and the decoding of its reply, defined once
    bench.py       `mwcluster bench`: pipelined client processes measuring a master
    job_spec.py    job spec files (TOML or JSON) into submit_job's arguments
    watch.py       live progress bars of jobs (rich), fed by JOB_STATUS

`from mwcluster.client import Client, op_put` (or `from mwcluster import Client`).
"""

from mwcluster.client.calls import Assignment, Stat, op_check, op_delete, op_merge, op_put
from mwcluster.client.connection import RETRY_POLICY, BatchFuture, Client, Future, Pipeline

__all__ = ["Assignment", "BatchFuture", "Client", "Future", "Pipeline", "Stat", "RETRY_POLICY",
           "op_check", "op_delete", "op_merge", "op_put"]
