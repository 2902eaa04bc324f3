"""Failures recorded under flood control, and the summaries of those it left out."""

from __future__ import annotations

import asyncio
import logging

from federation.access.principals import (
    AccessContext,
)
from federation.audit.records import AuditAction, AuditOutcome
from federation.errors import AuditError
from federation.service._base import ANONYMOUS, ServiceBase

log = logging.getLogger("federation.service")

FLOOD_SUMMARY_INTERVAL_S = 60.0
"""How often failures left out by flood control are journaled as summaries (and at shutdown)."""


class FloodControl(ServiceBase):
    """Refused credentials and cross-site redemptions, journaled within a budget; summaries of the rest."""

    async def authentication_failed(self, access: AccessContext, code: str) -> None:
        """Record a refused credential (the caller is anonymous: nothing it claimed is trusted).

        A flood of bad credentials from one address is recorded in part: at most
        ``_AUDITED_FAILURES_PER_MINUTE`` records a minute; the rest are counted and journaled by
        :meth:`journal_flood_summaries` (once a minute and at shutdown).
        """
        if not self._failures.admit(
            AuditAction.AUTHENTICATION.value, access.client_address or "unknown", code
        ):
            return
        try:
            await self.record(access, AuditAction.AUTHENTICATION, AuditOutcome.DENIED, detail=code)
        except AuditError:
            log.error("audit: an authentication failure could not be recorded")

    async def cross_site_refused(self, access: AccessContext) -> None:
        """Record a share-code redemption refused because another site's page sent it (flood-controlled).

        It never reaches the share codes' lock-out: another site must not lock a hospital's address out.
        """
        kind = AuditAction.SHARE_REDEEM.value
        if not self._failures.admit(kind, access.client_address or "unknown", "CROSS_SITE"):
            return
        try:
            await self.record(access, AuditAction.SHARE_REDEEM, AuditOutcome.DENIED, detail="CROSS_SITE")
        except AuditError:
            log.error("audit: a cross-site redemption could not be recorded")

    async def journal_flood_summaries(self) -> int:
        """Journal one summary per address and kind of the failures flood control left out; how many records."""
        written = 0
        for gate in (self._failures, self._redemptions):
            entries = gate.drain()
            for index, entry in enumerate(entries):
                access = AccessContext(ANONYMOUS, entry.address, None, "flood-control")
                try:
                    await self.record(
                        access,
                        AuditAction(entry.kind),
                        AuditOutcome.DENIED,
                        suppressed=entry.count,
                        detail=f"summary: {','.join(entry.codes)}",
                    )
                except AuditError:
                    gate.restore(entries[index:])  # counted again at the next attempt
                    log.error("audit: %d flood summaries could not be recorded", len(entries) - index)
                    return written
                written += 1
        return written

    async def journal_flood_summaries_forever(self, interval_s: float = FLOOD_SUMMARY_INTERVAL_S) -> None:
        """Journal the flood summaries every ``interval_s`` (a background task of the app)."""
        while True:
            await asyncio.sleep(interval_s)
            await self.journal_flood_summaries()
