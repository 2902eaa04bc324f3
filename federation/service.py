"""The one door every front end uses: authorization, break-the-glass and the audit trail around the engine."""

from __future__ import annotations

import base64
import binascii
import contextlib
import dataclasses
import logging
import time
from collections.abc import AsyncGenerator, Sequence
from typing import Any

from federation.access import (
    AUDIT_READ,
    HISTORY_EMERGENCY,
    HISTORY_READ,
    IDENTITY_ADMIN,
    SHARE_CREATE,
    AccessContext,
    EmergencyWindows,
    Principal,
    audit_patient_ids,
    clean_reason,
    patient_key,
)
from federation.audit import AuditAction, AuditOutcome, AuditRecord, AuditTrail, PageKey, page_key
from federation.engine import FederationEngine, HistoryUpdate
from federation.errors import AccessError, AuditError, AuditUnavailable, PacsfedError, QueryError
from federation.identity import IdentityLink
from federation.models import PatientHistory, PatientQuery
from federation.share import CreatedShare, RedeemedShare, ShareCodes, ShareRecord

log = logging.getLogger(__name__)

_MAX_AUDITED_IDS = 50
_MAX_AUDIT_PAGE = 500


@dataclasses.dataclass(frozen=True, slots=True)
class _Grant:
    """What one history request may do, decided before any source is asked."""

    source_ids: list[str] | None
    include_candidates: bool
    reason: str | None
    emergency: bool
    studies: frozenset[str] | None


@dataclasses.dataclass(frozen=True, slots=True)
class AuditPage:
    """One page of audit records, newest first, and where the next one starts."""

    events: list[AuditRecord]
    end_cursor: str | None
    has_next_page: bool
    partial: bool
    """Only this server's journal could be read (the searchable sink was down)."""


class HistoryService:
    """Checks who may see what, records it durably, then asks the engine.

    The access (who, which patient, which sources, why) is fsync'd in the journal before the
    engine is called: if it cannot be, no source is asked and the caller gets AUDIT_UNAVAILABLE.
    The outcome (exam count, identifiers found) follows as a second record that rides the
    journal's next batch, so the answer waits for one fsync only.
    """

    def __init__(
        self,
        engine: FederationEngine,
        audit: AuditTrail,
        shares: ShareCodes,
        *,
        emergency_window_s: float,
        national_issuer: str | None,
    ) -> None:
        self.engine = engine
        self._audit = audit
        self._shares = shares
        self._windows = EmergencyWindows(emergency_window_s)
        self._national_issuer = national_issuer
        self._failures = _FailureThrottle(_AUDITED_FAILURES_PER_MINUTE)

    # --- patient history -------------------------------------------------------------------

    async def patient_history(
        self,
        query: PatientQuery,
        access: AccessContext,
        *,
        reason: str | None = None,
        source_ids: Sequence[str] | None = None,
        include_candidates: bool = False,
        **options: Any,
    ) -> PatientHistory:
        """The merged history, if the caller may see it; the access is durable before any source is asked."""
        grant = await self._authorize(query, access, reason, source_ids, include_candidates)
        await self._record_query(query, access, grant, AuditOutcome.SUCCESS, detail="access")
        try:
            history = await self.engine.patient_history(
                query,
                source_ids=grant.source_ids,
                include_candidates=grant.include_candidates,
                **options,
            )
        except PacsfedError as exc:
            await self._record_query(
                query, access, grant, AuditOutcome.FAILURE, detail=_code_of(exc), soon=True
            )
            raise
        history = _restricted(history, grant.studies)
        await self._record_query(query, access, grant, AuditOutcome.SUCCESS, history=history, soon=True)
        return history

    async def stream_history(
        self,
        query: PatientQuery,
        access: AccessContext,
        *,
        reason: str | None = None,
        source_ids: Sequence[str] | None = None,
        include_candidates: bool = False,
        **options: Any,
    ) -> AsyncGenerator[HistoryUpdate, None]:
        """Progressive updates; audited before the first one leaves, and again with the final count."""
        grant = await self._authorize(query, access, reason, source_ids, include_candidates)
        await self._record_query(query, access, grant, AuditOutcome.SUCCESS, detail="progressive-start")
        updates = self.engine.stream_history(
            query, source_ids=grant.source_ids, include_candidates=grant.include_candidates, **options
        )
        async with contextlib.aclosing(updates):
            async for update in updates:
                history = _restricted(update.history, grant.studies)
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
                yield dataclasses.replace(update, history=history)

    async def _authorize(
        self,
        query: PatientQuery,
        access: AccessContext,
        reason: str | None,
        source_ids: Sequence[str] | None,
        include_candidates: bool,
    ) -> _Grant:
        principal = access.principal
        try:
            cleaned = clean_reason(reason)
            sources = self._allowed_sources(principal, source_ids)
            if principal.share is not None:
                if patient_key(query) != patient_key(principal.share.patient):
                    raise AccessError("this share code grants another patient", code="FORBIDDEN")
                return _Grant(sources, False, cleaned, False, principal.share.studies)
            if principal.has(HISTORY_READ):
                return _Grant(sources, include_candidates, cleaned, False, None)
            if principal.has(HISTORY_EMERGENCY):
                key = patient_key(query)
                if cleaned is not None:
                    self._windows.open(principal.subject, key, cleaned)
                else:
                    cleaned = self._windows.reason_for(principal.subject, key)
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
            for exam in history.exams:
                for location in exam.locations:
                    if location.patient_id and len(ids) < _MAX_AUDITED_IDS:
                        found = f"{location.patient_id}^^^{location.issuer_of_patient_id or ''}"
                        if found not in ids:
                            ids.append(found)
        await self.record(
            access,
            AuditAction.PATIENT_QUERY,
            outcome,
            patient_ids=ids,
            sources=sources,
            exam_count=len(history.exams) if history is not None else None,
            reason=grant.reason,
            emergency=grant.emergency,
            detail=detail,
            soon=soon,
        )

    # --- share codes -----------------------------------------------------------------------

    async def create_share(
        self,
        access: AccessContext,
        patient: PatientQuery,
        studies: list[str] | None,
        ttl_s: int | None,
        single_use: bool,
    ) -> CreatedShare:
        """A share code for a patient the caller may read (shown once)."""
        principal = access.principal
        ids = audit_patient_ids(patient, self._national_issuer)
        try:
            principal.require(SHARE_CREATE)
            if principal.share is not None:
                raise AccessError("a shared scope cannot be shared on", code="FORBIDDEN")
            if not principal.has(HISTORY_READ) and (
                self._windows.reason_for(principal.subject, patient_key(patient)) is None
            ):
                raise AccessError("share only what you may read", code="FORBIDDEN")
            created = await self._shares.create(principal.subject, patient, studies, ttl_s, single_use)
        except (AccessError, QueryError) as exc:
            await self.record(
                access, AuditAction.SHARE_CREATE, _refusal(exc), patient_ids=ids, detail=_code_of(exc)
            )
            raise
        await self.record(
            access,
            AuditAction.SHARE_CREATE,
            AuditOutcome.SUCCESS,
            patient_ids=ids,
            detail=_share_detail(created.record),
        )
        return created

    async def revoke_share(self, access: AccessContext, code: str) -> ShareRecord:
        """Revoke a share code at once (its tokens stop working too)."""
        try:
            access.principal.require(SHARE_CREATE)
            record = await self._shares.revoke(access.principal, code)
        except (AccessError, QueryError) as exc:
            await self.record(access, AuditAction.SHARE_REVOKE, _refusal(exc), detail=_code_of(exc))
            raise
        ids = audit_patient_ids(record.patient, self._national_issuer)
        await self.record(
            access,
            AuditAction.SHARE_REVOKE,
            AuditOutcome.SUCCESS,
            patient_ids=ids,
            detail=f"share={record.id}",
        )
        return record

    async def redeem_share(
        self, code: str, client_address: str | None, access: AccessContext
    ) -> RedeemedShare:
        """A bearer token reading exactly the code's scope; every attempt is audited."""
        try:
            redeemed = await self._shares.redeem(code, client_address or "unknown")
        except AccessError as exc:
            await self.record(access, AuditAction.SHARE_REDEEM, AuditOutcome.DENIED, detail=exc.code)
            raise
        ids = audit_patient_ids(redeemed.record.patient, self._national_issuer)
        await self.record(
            access,
            AuditAction.SHARE_REDEEM,
            AuditOutcome.SUCCESS,
            patient_ids=ids,
            detail=f"share={redeemed.record.id}",
        )
        return redeemed

    async def share_principal(self, token: str) -> Principal:
        """The principal of a redeemed share token (the authenticator's resolver)."""
        return await self._shares.principal_for(token)

    # --- administration and audit ----------------------------------------------------------

    async def audit_events(
        self, access: AccessContext, patient_id: str | None, first: int | None
    ) -> list[AuditRecord]:
        """Audit records, newest first; reading them is audited too."""
        ids = [patient_id] if patient_id else []
        try:
            access.principal.require(AUDIT_READ)
        except AccessError as exc:
            await self.record(
                access, AuditAction.AUDIT_READ, AuditOutcome.DENIED, patient_ids=ids, detail=exc.code
            )
            raise
        limit = max(1, min(first or 50, _MAX_AUDIT_PAGE))
        records = await self._audit.search(patient_id=patient_id, first=limit)
        await self.record(access, AuditAction.AUDIT_READ, AuditOutcome.SUCCESS, patient_ids=ids)
        return records

    async def audit_events_page(
        self, access: AccessContext, patient_id: str | None, first: int | None, after: str | None
    ) -> AuditPage:
        """A page of audit records, newest first, after the cursor ``after``; reading it is audited too."""
        ids = [patient_id] if patient_id else []
        try:
            access.principal.require(AUDIT_READ)
        except AccessError as exc:
            await self.record(
                access, AuditAction.AUDIT_READ, AuditOutcome.DENIED, patient_ids=ids, detail=exc.code
            )
            raise
        limit = max(1, min(first or 50, _MAX_AUDIT_PAGE))
        events, more, partial = await self._audit.search_page(
            patient_id=patient_id, first=limit, after=_decode_cursor(after)
        )
        await self.record(access, AuditAction.AUDIT_READ, AuditOutcome.SUCCESS, patient_ids=ids)
        end = _encode_cursor(page_key(events[-1])) if events else after
        return AuditPage(events, end, more, partial)

    async def add_identity_links(self, access: AccessContext, links: list[IdentityLink]) -> int:
        """Add cross-reference links (identity:admin)."""
        ids = [f"{link.identifier.value}^^^{link.identifier.issuer}" for link in links[:_MAX_AUDITED_IDS]]
        try:
            access.principal.require(IDENTITY_ADMIN)
        except AccessError as exc:
            await self.record(
                access, AuditAction.IDENTITY_CHANGE, AuditOutcome.DENIED, patient_ids=ids, detail=exc.code
            )
            raise
        store = self.engine.identity_store
        if store is None:
            raise QueryError("no identity store is configured", code="IDENTITY_UNAVAILABLE")
        await self.record(access, AuditAction.IDENTITY_CHANGE, AuditOutcome.SUCCESS, patient_ids=ids)
        return await store.add_links(links)

    async def purge_cache(self, access: AccessContext, query: PatientQuery, source_id: str | None) -> int:
        """Forget cached answers for a patient (identity:admin): corrections, erasure requests."""
        ids = audit_patient_ids(query, self._national_issuer)
        try:
            access.principal.require(IDENTITY_ADMIN)
        except AccessError as exc:
            await self.record(
                access, AuditAction.CACHE_PURGE, AuditOutcome.DENIED, patient_ids=ids, detail=exc.code
            )
            raise
        await self.record(
            access,
            AuditAction.CACHE_PURGE,
            AuditOutcome.SUCCESS,
            patient_ids=ids,
            sources=[source_id] if source_id else [],
        )
        return await self.engine.purge_cache(query, source_id)

    async def authentication_failed(self, access: AccessContext, code: str) -> None:
        """Record a refused credential (the caller is anonymous: nothing it claimed is trusted).

        A flood of bad credentials from one address is recorded in part: at most
        ``_AUDITED_FAILURES_PER_MINUTE`` records a minute, the next one saying how many were left out.
        """
        suppressed = self._failures.admit(access.client_address or "unknown")
        if suppressed is None:
            return
        detail = (
            f"{code}; {suppressed} earlier failures from this address not recorded" if suppressed else code
        )
        try:
            await self.record(access, AuditAction.AUTHENTICATION, AuditOutcome.DENIED, detail=detail)
        except AuditError:
            log.error("audit: an authentication failure could not be recorded")

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


_AUDITED_FAILURES_PER_MINUTE = 20


class _FailureThrottle:
    """Per-address budget of audited authentication failures (a flood must not fill the journal)."""

    def __init__(self, per_minute: int) -> None:
        self._per_minute = per_minute
        self._windows: dict[str, tuple[float, int, int]] = {}

    def admit(self, address: str) -> int | None:
        """None to leave this failure out; else how many were left out before it."""
        now = time.monotonic()
        started, recorded, suppressed = self._windows.get(address, (now, 0, 0))
        if now - started >= 60.0:
            started, recorded = now, 0
        if recorded >= self._per_minute:
            self._windows[address] = (started, recorded, suppressed + 1)
            return None
        self._windows[address] = (started, recorded + 1, 0)
        if len(self._windows) > 10_000:  # bound memory under a spray of addresses
            for key in [k for k, (t, _, n) in self._windows.items() if now - t >= 60.0 and not n]:
                del self._windows[key]
        return suppressed


def _restricted(history: PatientHistory, studies: frozenset[str] | None) -> PatientHistory:
    """Only the shared studies of a history (no candidates: they would name other patients)."""
    if studies is None:
        return history
    exams = tuple(exam for exam in history.exams if exam.study_instance_uid in studies)
    return history.model_copy(update={"exams": exams, "candidates": ()})


def _encode_cursor(key: PageKey) -> str:
    return base64.urlsafe_b64encode(f"{key[0]}:{key[1]}".encode()).decode()


def _decode_cursor(cursor: str | None) -> PageKey | None:
    """The page key in a cursor from :func:`_encode_cursor`; BAD_USER_INPUT for anything else."""
    if cursor is None:
        return None
    try:
        millis, record_id = base64.urlsafe_b64decode(cursor.encode()).decode().split(":", 1)
        return int(millis), record_id
    except (ValueError, binascii.Error, UnicodeError):
        raise QueryError("the cursor is not one this server gave", code="BAD_USER_INPUT") from None


def _code_of(exc: Exception) -> str:
    code = getattr(exc, "code", None)
    return code if isinstance(code, str) else type(exc).__name__


def _refusal(exc: Exception) -> AuditOutcome:
    return AuditOutcome.DENIED if isinstance(exc, AccessError) else AuditOutcome.FAILURE


def _share_detail(record: ShareRecord) -> str:
    scope = f"studies={len(record.studies)}" if record.studies is not None else "patient"
    return f"share={record.id} {scope} expires={record.expires_at.isoformat()} single_use={record.single_use}"
