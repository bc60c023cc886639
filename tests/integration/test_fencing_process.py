"""A real master fenced by a request carrying a higher epoch: it refuses client requests with
`fenced`, says so in STATUS, and stays fenced across a restart (the fence file)."""

from __future__ import annotations

import msgpack

from mwcluster import Client, errors
from mwcluster.testing import MasterProcess, RawDealer
from mwcluster.wire.protocol import ErrorCode, Op, encode_request


def test_fenced_master_refuses_and_stays_fenced_after_restart(tmp_path):
    with MasterProcess(tmp_path / "m", durability="sync") as master:
        epoch = master.epoch
        with RawDealer(master.client_endpoint) as dealer:
            assert dealer.call(Op.PUT, ["/a", msgpack.packb(1), None]).status == 0
            dealer.send_frames(encode_request(dealer.client_id, 100, Op.PING, [], 0, epoch + 3))
            assert dealer.recv().status == 0           # PING is still answered
            r = dealer.call(Op.PUT, ["/b", msgpack.packb(2), None])
            assert r.status == ErrorCode.FENCED and r.epoch == epoch
            assert dealer.call(Op.GET, ["/a"]).status == ErrorCode.FENCED
            s = dealer.status()
            assert (s["fenced"], s["fenced_by"], s["role"]) == (True, epoch + 3, "fenced")
        assert (tmp_path / "m" / "fenced").exists()
        assert master.terminate() == 0
        master.restart()
        with RawDealer(master.client_endpoint) as dealer:
            s = dealer.status()
            # a fenced data directory claims no new epoch at a restart
            assert s["fenced"] and s["fenced_by"] == epoch + 3 and s["epoch"] == epoch
            assert dealer.call(Op.PUT, ["/c", msgpack.packb(3), None]).status == \
                ErrorCode.FENCED
        with Client(master.client_endpoint, timeout_s=5, retries=1,
                    sleep=lambda s: None) as client:
            try:
                client.put("/d", 4)
            except errors.Fenced:
                pass
            else:
                raise AssertionError("a fenced master accepted a write")
