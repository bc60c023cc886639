"""A client reading from the standby with a key the standby does not allow: every read still
comes from the master, and the reader names the refusal (a warning once, `refused`) instead of
falling back in silence. Real CURVE sockets on 127.0.0.1."""

from __future__ import annotations

import logging

import zmq

from mwcluster.client.standby import StandbyReader
from mwcluster.nodes.status_endpoint import StatusEndpoint
from mwcluster.security.curve import Credentials, ServerSecurity
from mwcluster.security.keys import new_keys, read_secret
from mwcluster.wire.protocol import Op


def test_a_refused_key_at_the_standby_is_named_and_reads_fall_back(tmp_path, caplog):
    principals, other = tmp_path / "principals", tmp_path / "other"
    principals.mkdir()
    other.mkdir()
    server_secret, server_public = new_keys(principals, "server", ["replica"])
    stranger_secret, _ = new_keys(other, "stranger", ["read"])   # not among the principals
    security = ServerSecurity(read_secret(server_secret), str(principals))
    ctx = zmq.Context()
    endpoint = StatusEndpoint(ctx, "tcp://127.0.0.1:0", security=security)
    reader = StandbyReader(endpoint.endpoint, 1.0, ctx,
                           credentials=Credentials.load(str(stranger_secret),
                                                        str(server_public), env={}))
    try:
        with caplog.at_level(logging.WARNING, logger="mwcluster.client.standby"):
            reads = 0
            while reader.refused is None and reads < 20:     # a loaded machine: bounded
                assert reader.read(Op.GET, ["/a"], 0, 0) is None     # ask the master
                reads += 1
            assert reader.read(Op.GET, ["/a"], 0, 0) is None          # once more: no warning
        assert reader.fallbacks == reads + 1 and reader.served == 0
        assert reader.refused is not None and "refused the key of stranger" in reader.refused
        warnings = [r for r in caplog.records if "reads go to the master" in r.getMessage()]
        assert len(warnings) == 1, caplog.records
    finally:
        reader.close()
        endpoint.close()
        security.stop()
        ctx.term()
