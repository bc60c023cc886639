"""The checkpoint node's status endpoint: a ROUTER answering STATUS and PING (and, for
failover, PROMOTE and VOTE, which the node passes as `ops`), owned by the node's loop. The
class is shared with the worker's: see nodes/status_endpoint.py.
"""

from __future__ import annotations

from mwcluster.nodes.status_endpoint import MAX_PER_CALL, MAX_REQUEST_BYTES, StatusEndpoint

__all__ = ["MAX_PER_CALL", "MAX_REQUEST_BYTES", "StatusEndpoint"]
