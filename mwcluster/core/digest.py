"""The state digest: an order-independent 64-bit hash over the whole metadata state.

The digest is the sum, modulo 2**64, of one 64-bit BLAKE2b hash per entry (a namespace key, a
job, a task, a worker). A change to an entry subtracts the entry's old hash and adds its new
one, so the digest is kept current in O(1) per record and two replicas at the same txid hold
the same state exactly when (up to a 2**-64 chance) their digests are equal.
"""

from __future__ import annotations

from hashlib import blake2b

MASK = (1 << 64) - 1


def entry_hash(tag: bytes, body: bytes) -> int:
    """The hash of one entry; `tag` tells entry kinds apart (b"k", b"j", b"t", b"w")."""
    return int.from_bytes(blake2b(tag + body, digest_size=8).digest(), "little")
