"""Patient histories through the door: authorize, journal the access, ask the engine, journal the outcome."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncGenerator, Sequence

from federation.access.principals import (
    HISTORY_EMERGENCY,
    HISTORY_READ,
    AccessContext,
    Principal,
    audit_patient_ids,
    clean_reason,
    patient_key,
)
from federation.audit.lists import returned_patient_ids
from federation.audit.records import AuditAction, AuditOutcome
from federation.engine.engine import HistoryUpdate
from federation.engine.request import HistoryRequest
from federation.errors import AccessError, PacsfedError
from federation.models import PatientHistory, PatientQuery
from federation.service._admission import admitted, admitted_stream
from federation.service._base import ServiceBase, code_of

_ASKED = HistoryRequest()
"""The request of a caller that asks for nothing but the patient."""


@dataclasses.dataclass(frozen=True, slots=True)
class _Grant:
    """What one history request may do, decided before any source is asked."""

    source_ids: list[str] | None
    include_candidates: bool
    reason: str | None
    emergency: bool
    studies: frozenset[str] | None

    def narrowed(self, request: HistoryRequest) -> HistoryRequest:
        """What the engine is asked: the request within this grant's sources and candidates."""
        return request.but(source_ids=self.source_ids, include_candidates=self.include_candidates)


class HistoryReads(ServiceBase):
    """Whole and progressive patient histories, authorized and audited."""

    @admitted  # past server.max_pending_queries: OVERLOADED at once, nothing asked or journaled
    async def patient_history(
        self,
        query: PatientQuery,
        access: AccessContext,
        request: HistoryRequest = _ASKED,
    ) -> PatientHistory:
        """The merged history, if the caller may see it; the access is durable before any source is asked."""
        grant = await self._authorize(query, access, request)
        await self._record_query(query, access, grant, AuditOutcome.SUCCESS, detail="access")
        try:
            history = await self.engine.patient_history(query, grant.narrowed(request))
        except PacsfedError as exc:
            await self._record_query(
                query, access, grant, AuditOutcome.FAILURE, detail=code_of(exc), soon=True
            )
            raise
        history = _restricted(history, grant.studies)
        await self._record_query(query, access, grant, AuditOutcome.SUCCESS, history=history, soon=True)
        return history

    @admitted_stream
    async def stream_history(
        self,
        query: PatientQuery,
        access: AccessContext,
        request: HistoryRequest = _ASKED,
        *,
        delta: bool = False,
    ) -> AsyncGenerator[HistoryUpdate, None]:
        """Progressive updates; audited before the first one leaves, and again with the final count.

        With ``delta``, a SOURCE update holds only the exams it added or changed (CACHE and FINAL
        hold the whole history); what was shown is audited all the same.
        """
        grant = await self._authorize(query, access, request)
        await self._record_query(query, access, grant, AuditOutcome.SUCCESS, detail="progressive-start")
        updates = self.engine.stream_history(query, grant.narrowed(request))
        shown: PatientHistory | None = None  # the last history handed out before a FINAL was recorded
        async with contextlib.aclosing(updates):
            try:
                async for update in updates:
                    history = _restricted(update.history, grant.studies)
                    shown = history
                    if update.phase.value == "FINAL":
                        await self._record_query(
                            query,
                            access,
                            grant,
                            AuditOutcome.SUCCESS,
                            history=history,
                            detail="progressive-final",
                            soon=True,
                        )
                        shown = None
                    update = dataclasses.replace(update, history=history)
                    yield update.delta() if delta else update
            finally:
                if shown is not None:  # stopped early: what it saw is audited all the same
                    await self._record_query(
                        query,
                        access,
                        grant,
                        AuditOutcome.SUCCESS,
                        history=shown,
                        detail="progressive-stopped",
                        soon=True,
                    )

    async def _authorize(self, query: PatientQuery, access: AccessContext, request: HistoryRequest) -> _Grant:
        principal = access.principal
        reason, source_ids, include_candidates = (
            request.reason,
            request.source_ids,
            request.include_candidates,
        )
        try:
            cleaned = clean_reason(reason)
            sources = self._allowed_sources(principal, source_ids)
            if principal.share is not None:
                share = principal.share
                if patient_key(query) != patient_key(share.patient):
                    raise AccessError("this share code grants another patient", code="FORBIDDEN")
                if share.emergency_reason is not None:  # shared under break-the-glass: flagged on every read
                    return _Grant(sources, False, share.emergency_reason, True, share.studies)
                return _Grant(sources, False, cleaned, False, share.studies)
            if principal.has(HISTORY_READ):
                return _Grant(sources, include_candidates, cleaned, False, None)
            if principal.has(HISTORY_EMERGENCY):
                key = patient_key(query)
                if cleaned is not None:
                    await self._windows.open(principal.subject, key, cleaned)
                else:
                    cleaned = await self._windows.reason_for(principal.subject, key)
                if cleaned is None:
                    raise AccessError(
                        "emergency access needs a reason (break-the-glass)", code="REASON_REQUIRED"
                    )
                return _Grant(sources, include_candidates, cleaned, True, None)
            raise AccessError(f"this needs the scope {HISTORY_READ} or {HISTORY_EMERGENCY}", code="FORBIDDEN")
        except AccessError as exc:
            denied = _Grant(
                list(source_ids) if source_ids else None, False, (reason or "")[:500] or None, False, None
            )
            await self._record_query(query, access, denied, AuditOutcome.DENIED, detail=exc.code)
            raise

    def _allowed_sources(self, principal: Principal, asked: Sequence[str] | None) -> list[str] | None:
        if principal.sources is None:
            return list(asked) if asked is not None else None
        allowed = [s.id for s in self.engine.sources if s.id in principal.sources]
        if asked is None:
            if not allowed:
                raise AccessError("no source is open to this caller", code="FORBIDDEN")
            return allowed
        refused = [s for s in asked if s not in principal.sources]
        if refused:
            raise AccessError(f"not allowed to query source {refused[0]}", code="FORBIDDEN")
        return list(asked)

    async def _record_query(
        self,
        query: PatientQuery,
        access: AccessContext,
        grant: _Grant,
        outcome: AuditOutcome,
        *,
        history: PatientHistory | None = None,
        detail: str | None = None,
        soon: bool = False,
    ) -> None:
        ids = audit_patient_ids(query, self._national_issuer)
        sources = grant.source_ids or [s.id for s in self.engine.sources]
        if history is not None:
            sources = [outcome_.source.id for outcome_ in history.sources]
            ids.extend(returned_patient_ids(history))  # exams and candidates: findable by any of them
        await self._record_parts(
            access,
            AuditAction.PATIENT_QUERY,
            outcome,
            ids,
            detail,
            sources=sources,
            exam_count=len(history.exams) if history is not None else None,
            reason=grant.reason,
            emergency=grant.emergency,
            soon=soon,
        )


def _restricted(history: PatientHistory, studies: frozenset[str] | None) -> PatientHistory:
    """Only the shared studies of a history (no candidates: they would name other patients)."""
    if studies is None:
        return history
    exams = tuple(exam for exam in history.exams if exam.study_instance_uid in studies)
    return history.model_copy(update={"exams": exams, "candidates": ()})
