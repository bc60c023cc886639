"""Admission limits: how large a key, value or record may be.

Limits are checked when a mutation is admitted (before it is applied and logged), never on
replay: a record that was accepted under a larger limit must still replay after the limit is
lowered.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Limits:
    max_key_chars: int = 1024
    max_value_bytes: int = 1 << 20
    max_multi_ops: int = 1000
    max_tasks_per_job: int = 1_000_000
    max_name_chars: int = 256
    max_record_bytes: int = 64 << 20
