"""What every part of the service shares: its collaborators and writing audit records."""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from federation.access.principals import AccessContext, EmergencyWindows, Principal, PrincipalKind
from federation.access.share import ShareCodes
from federation.access.state_elasticsearch import SharedEntries
from federation.audit.flood import FloodGate
from federation.audit.journal import SYSTEM_ACTOR
from federation.audit.lists import MAX_LISTED, capped, in_parts
from federation.audit.records import AuditAction, AuditOutcome, AuditRecord, AuditTrail
from federation.engine.engine import FederationEngine
from federation.errors import AccessError, AuditError, AuditUnavailable
from federation.service._admission import Admission
from federation.service._report_links import ReportLinks
from federation.settings import ReportSettings

_MAX_AUDITED_SOURCES = 1000
_AUDITED_FAILURES_PER_MINUTE = 20
ANONYMOUS = Principal(subject="anonymous", kind=PrincipalKind.SHARE, scopes=frozenset())

PACSFED = Principal(subject=SYSTEM_ACTOR, kind=PrincipalKind.SYSTEM, scopes=frozenset())
"""pacsfed itself: the author of summaries whose callers were never known (refused unread)."""

log = logging.getLogger("federation.service")


class ServiceBase:
    """The state of :class:`federation.service.HistoryService` and its one way to write audit records."""

    def __init__(
        self,
        engine: FederationEngine,
        audit: AuditTrail,
        shares: ShareCodes,
        *,
        emergency_window_s: float,
        national_issuer: str | None,
        reports: ReportSettings | None = None,
        windows: EmergencyWindows | None = None,
        shared: SharedEntries | None = None,
    ) -> None:
        self.engine = engine
        self._audit = audit
        self._shares = shares
        self._windows = windows or EmergencyWindows(emergency_window_s)
        self._national_issuer = national_issuer
        self._failures = FloodGate(_AUDITED_FAILURES_PER_MINUTE)
        self._redemptions = FloodGate(shares.max_failures)
        self._report_settings = reports or ReportSettings()
        self._report_links = ReportLinks(self._report_settings.link_ttl_s, shared)
        self._admission = Admission(engine, self._journal_refusals)

    @property
    def admission(self) -> Admission:
        """The one admission of patient queries: every front end's door asks it (OVERLOADED)."""
        return self._admission

    async def _journal_refusals(self, channel: str, count: int, since: float, until: float) -> None:
        """One record for ``count`` queries refused unread (OVERLOADED) on ``channel``: no patient, no caller known."""
        window = (
            dt.datetime.fromtimestamp(t, dt.UTC).isoformat(timespec="milliseconds") for t in (since, until)
        )
        try:
            await self.record(
                AccessContext(PACSFED, None, None, channel),
                AuditAction.PATIENT_QUERY,
                AuditOutcome.FAILURE,
                suppressed=count,
                detail=f"OVERLOADED: {count} refused from {next(window)} to {next(window)}",
            )
        except AuditError:
            log.error("audit: %d queries refused (OVERLOADED) could not be recorded", count)

    async def _record_parts(
        self,
        access: AccessContext,
        action: AuditAction,
        outcome: AuditOutcome,
        patient_ids: list[str],
        detail: str | None,
        **fields: Any,
    ) -> None:
        """Records naming every one of ``patient_ids``: one record, or parts of ``MAX_LISTED`` saying ``part i/n``."""
        parts = in_parts(patient_ids, MAX_LISTED)
        for number, part in enumerate(parts, 1):
            noted = detail
            if len(parts) > 1:
                noted = f"{detail}; part {number}/{len(parts)}" if detail else f"part {number}/{len(parts)}"
            if number == 2:
                fields.pop("exam_count", None)  # counted once, in the first part
            await self.record(access, action, outcome, patient_ids=part, detail=noted, **fields)

    async def record(
        self,
        access: AccessContext,
        action: AuditAction,
        outcome: AuditOutcome,
        *,
        soon: bool = False,
        **fields: Any,
    ) -> None:
        """Write one audit record durably; AuditUnavailable (the action must not go on) when it cannot be.

        ``soon``: queue it for the journal's next batch without waiting (an outcome whose access is durable).
        """
        principal = access.principal
        for name, cap in (("patient_ids", MAX_LISTED), ("sources", _MAX_AUDITED_SOURCES)):
            values = fields.get(name)
            if values is not None and len(values) > cap:
                fields[name], fields[f"{name}_omitted"] = capped(values, cap)
        record = AuditRecord(
            action=action,
            outcome=outcome,
            actor=principal.subject,
            actor_kind=principal.kind.value,
            client_address=access.client_address,
            request_id=access.request_id,
            channel=access.channel,
            **fields,
        )
        try:
            await (self._audit.record_soon(record) if soon else self._audit.record(record))
        except AuditUnavailable:
            raise
        except AuditError as exc:
            raise AuditUnavailable(str(exc)) from exc


def code_of(exc: Exception) -> str:
    code = getattr(exc, "code", None)
    return code if isinstance(code, str) else type(exc).__name__


def refusal(exc: Exception) -> AuditOutcome:
    return AuditOutcome.DENIED if isinstance(exc, AccessError) else AuditOutcome.FAILURE
