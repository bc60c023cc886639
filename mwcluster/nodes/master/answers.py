"""What an operation answers before it is packed into a reply frame, and the refusals every
handler of the master makes the same way: counted by error code in the master's stats, then
packed (wire/protocol.py). No sockets, no clock.
"""

from __future__ import annotations

from mwcluster.nodes.master.stats import MasterStats
from mwcluster.wire.protocol import ErrorCode, encode_error, error_result

Answer = tuple   # (status, txid, result): status 0 and the result, or an error code and
#                  [code name, message]; txid is the record's for a mutation, else 0


def refusal(stats: MasterStats, code: ErrorCode, message: str) -> Answer:
    """An error answer (nothing was applied), counted."""
    counts = stats.errors_by_code
    counts[code] = counts.get(code, 0) + 1
    return int(code), 0, error_result(code, message)


def error_frame(stats: MasterStats, request_id: int, epoch: int, code: ErrorCode,
                message: str) -> bytes:
    """An error reply frame of its own (a refusal before an operation ran), counted."""
    counts = stats.errors_by_code
    counts[code] = counts.get(code, 0) + 1
    return encode_error(request_id, epoch, code, message)
