"""The access check and the audit of the master's requests, as the handlers call them: the
check of a request against its connection's principal (security/access.py), the counted
`unauthorized` refusal, and the audit line (audit.py). No sockets, no clock.
"""

from __future__ import annotations

import logging
from typing import Any

from mwcluster.nodes.master.answers import Answer, refusal
from mwcluster.nodes.master.audit import AuditLog
from mwcluster.nodes.master.stats import MasterStats
from mwcluster.security.access import Access
from mwcluster.wire.protocol import ErrorCode

log = logging.getLogger(__name__)


class Guard:
    def __init__(self, access: Access | None, audit: AuditLog | None, stats: MasterStats,
                 epoch: int) -> None:
        self.access = access
        self.audit_log = audit
        self.stats = stats
        self.epoch = epoch

    def check(self, user: str | None, op: int, args: Any) -> str | None:
        """None when the request may go on, else why not (a bug in the check refuses)."""
        try:
            return self.access.check(user, op, args)
        except Exception as exc:
            log.exception("epoch %d: the access check of op %d failed", self.epoch, op)
            return f"the request could not be checked ({type(exc).__name__}); nothing was applied"

    def refuse(self, user: str | None, peer: str, op: int, args: Any, why: str) -> Answer:
        """The `unauthorized` answer, counted, audited and logged."""
        if self.audit_log is not None:
            self.audit(user, peer, op, args, ErrorCode.UNAUTHORIZED, 0)
        log.info("epoch %d: unauthorized: %s", self.epoch, why)
        return refusal(self.stats, ErrorCode.UNAUTHORIZED, why)

    def audit(self, user: str | None, peer: str, op: int, args: Any, status: int,
              txid: int) -> None:
        who = self.access.name(user) if self.access is not None else "-"
        self.audit_log.write(who, peer, op, args, status, txid)
