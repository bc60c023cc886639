"""The replication reads a standby or a new master makes of this master: FETCH (durable
records from a txid), SNAPSHOT_INFO and SNAPSHOT_CHUNK (the newest snapshot, byte ranges of
it). No sockets, no clock; each answers an Answer (answers.py)."""

from __future__ import annotations

import logging
import os

from mwcluster import errors
from mwcluster.engine import Engine
from mwcluster.nodes.master.answers import Answer, refusal
from mwcluster.nodes.master.stats import MasterStats
from mwcluster.storage import snapshot as snapshots
from mwcluster.wire.protocol import ErrorCode, ProtocolError, Request, args_check

log = logging.getLogger(__name__)

MAX_CHUNK_BYTES = 1 << 20    # bytes per SNAPSHOT_CHUNK reply


class ReplicationReads:
    def __init__(self, engine: Engine, stats: MasterStats, epoch: int,
                 fetch_max_bytes: int) -> None:
        self.engine = engine
        self.stats = stats
        self.epoch = epoch
        self.fetch_max_bytes = fetch_max_bytes

    def fetch(self, req: Request) -> Answer:
        from_txid, max_bytes = args_check(req, (int, int), ("from_txid", "max_bytes"))
        if from_txid < 0 or max_bytes < 0:
            raise ProtocolError(ErrorCode.BAD_REQUEST,
                                "FETCH: from_txid and max_bytes must be non-negative",
                                req.request_id)
        engine = self.engine
        try:
            records = engine.records(max(from_txid, 1),
                                     max(1, min(max_bytes, self.fetch_max_bytes)))
        except errors.Truncated as exc:
            return refusal(self.stats, ErrorCode.TRUNCATED, str(exc))
        return 0, 0, (engine.journal.durable_txid, records)

    def _newest_snapshot(self) -> snapshots.SnapshotHeader | None:
        for _txid, path in snapshots.list_snapshots(self.engine.snapshot_dir):
            try:
                return snapshots.read_header(path)
            except errors.MwclusterError as exc:   # damaged: offer the next older one
                log.warning("epoch %d: snapshot %s is not offered: %s", self.epoch, path, exc)
        return None

    def snapshot_info(self, req: Request) -> Answer:
        args_check(req, (), ())
        header = self._newest_snapshot()
        if header is None:
            return refusal(self.stats, ErrorCode.NO_SNAPSHOT, "there is no snapshot")
        size = snapshots.HEADER_BYTES + header.body_bytes + snapshots.TRAILER_BYTES
        return 0, 0, (header.txid, header.epoch, header.digest, size, header.created_ms)

    def snapshot_chunk(self, req: Request) -> Answer:
        txid, offset, length = args_check(req, (int, int, int), ("txid", "offset", "length"))
        if txid < 0 or offset < 0 or length < 0:
            raise ProtocolError(ErrorCode.BAD_REQUEST, "SNAPSHOT_CHUNK: txid, offset and "
                                "length must be non-negative", req.request_id)
        path = self.engine.snapshot_dir / snapshots.snapshot_name(txid)
        try:
            fd = os.open(path, os.O_RDONLY)
        except (FileNotFoundError, ValueError, OverflowError):
            return refusal(self.stats, ErrorCode.NO_SNAPSHOT,
                           f"the snapshot at txid {txid} is not kept (any more); ask "
                           "SNAPSHOT_INFO for the newest")
        try:
            data = os.pread(fd, min(length, MAX_CHUNK_BYTES), offset)
        except OverflowError:
            data = b""
        finally:
            os.close(fd)
        return 0, 0, data
