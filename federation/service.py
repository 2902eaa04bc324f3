"""The one door every front end uses: authorization, break-the-glass and the audit trail around the engine."""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import dataclasses
import logging
from collections.abc import AsyncGenerator, Sequence
from typing import Any

from federation.access.principals import (
    AUDIT_READ,
    HISTORY_EMERGENCY,
    HISTORY_READ,
    IDENTITY_ADMIN,
    SHARE_CREATE,
    AccessContext,
    EmergencyWindows,
    Principal,
    PrincipalKind,
    audit_patient_ids,
    clean_reason,
    patient_key,
)
from federation.access.share import CreatedShare, RedeemedShare, ShareCodes, ShareRecord
from federation.audit.flood import FloodGate
from federation.audit.lists import MAX_LISTED, audit_id, capped, in_parts, returned_patient_ids
from federation.audit.records import AuditAction, AuditOutcome, AuditRecord, AuditTrail, PageKey, page_key
from federation.engine.engine import FederationEngine, HistoryUpdate
from federation.errors import AccessError, AuditError, AuditUnavailable, PacsfedError, QueryError
from federation.identity.resolver import IdentityLink
from federation.models import PatientHistory, PatientQuery

log = logging.getLogger(__name__)

_MAX_AUDIT_PAGE = 500
_MAX_AUDITED_SOURCES = 1000
_AUDITED_FAILURES_PER_MINUTE = 20
FLOOD_SUMMARY_INTERVAL_S = 60.0
"""How often failures left out by flood control are journaled as summaries (and at shutdown)."""
_ANONYMOUS = Principal(subject="anonymous", kind=PrincipalKind.SHARE, scopes=frozenset())


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
        self._failures = FloodGate(_AUDITED_FAILURES_PER_MINUTE)
        self._redemptions = FloodGate(shares.max_failures)

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
                    yield dataclasses.replace(update, history=history)
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
            window = None
            if not principal.has(HISTORY_READ):
                # Break-the-glass: the code ends with the window and carries its reason.
                window = self._windows.window(principal.subject, patient_key(patient))
                if window is None:
                    raise AccessError("share only what you may read", code="FORBIDDEN")
            created = await self._shares.create(
                principal.subject,
                patient,
                studies,
                ttl_s,
                single_use,
                not_after=window.closes_at if window else None,
                emergency_reason=window.reason if window else None,
            )
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
            reason=created.record.emergency_reason,
            emergency=created.record.emergency_reason is not None,
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
        """A bearer token reading exactly the code's scope; every attempt is audited.

        An anonymous caller's failures are journaled within a budget per client address (each
        alias and each spelling of a code is one attempt); past it, and for every attempt refused
        by a lock-out, they are counted and journaled as one summary per address a minute.
        """
        address = client_address or "unknown"
        try:
            redeemed = await self._shares.redeem(code, address)
        except AccessError as exc:
            anonymous = access.principal.subject == _ANONYMOUS.subject
            kind = AuditAction.SHARE_REDEEM.value
            if anonymous and exc.code == "LOCKED_OUT":
                self._redemptions.count(kind, address, exc.code)
            elif not anonymous or self._redemptions.admit(kind, address, exc.code):
                await self.record(access, AuditAction.SHARE_REDEEM, AuditOutcome.DENIED, detail=exc.code)
            raise
        ids = audit_patient_ids(redeemed.record.patient, self._national_issuer)
        await self.record(
            access,
            AuditAction.SHARE_REDEEM,
            AuditOutcome.SUCCESS,
            patient_ids=ids,
            detail=f"share={redeemed.record.id}",
            reason=redeemed.record.emergency_reason,
            emergency=redeemed.record.emergency_reason is not None,
        )
        return redeemed

    async def share_principal(self, token: str) -> Principal:
        """The principal of a redeemed share token (the authenticator's resolver)."""
        return await self._shares.principal_for(token)

    def revocation_signal(self, share_id: str) -> asyncio.Event:
        """An event set when this process revokes the share (for sockets opened with its token)."""
        return self._shares.revocation_signal(share_id)

    # --- administration and audit ----------------------------------------------------------

    async def _audit_reader(self, access: AccessContext, patient_id: str | None) -> list[str]:
        """The patient ids a read of the audit is about, once the caller may read it (refusals audited)."""
        ids = [patient_id] if patient_id else []
        try:
            access.principal.require(AUDIT_READ)
        except AccessError as exc:
            await self.record(
                access, AuditAction.AUDIT_READ, AuditOutcome.DENIED, patient_ids=ids, detail=exc.code
            )
            raise
        return ids

    async def audit_events(
        self, access: AccessContext, patient_id: str | None, first: int | None
    ) -> list[AuditRecord]:
        """Audit records, newest first; reading them is audited too."""
        ids = await self._audit_reader(access, patient_id)
        limit = max(1, min(first or 50, _MAX_AUDIT_PAGE))
        records = await self._audit.search(patient_id=patient_id, first=limit)
        await self.record(access, AuditAction.AUDIT_READ, AuditOutcome.SUCCESS, patient_ids=ids)
        return records

    async def audit_events_page(
        self, access: AccessContext, patient_id: str | None, first: int | None, after: str | None
    ) -> AuditPage:
        """A page of audit records, newest first, after the cursor ``after``; reading it is audited too."""
        ids = await self._audit_reader(access, patient_id)
        limit = max(1, min(first or 50, _MAX_AUDIT_PAGE))
        events, more, partial = await self._audit.search_page(
            patient_id=patient_id, first=limit, after=_decode_cursor(after)
        )
        await self.record(access, AuditAction.AUDIT_READ, AuditOutcome.SUCCESS, patient_ids=ids)
        end = _encode_cursor(page_key(events[-1])) if events else after
        return AuditPage(events, end, more, partial)

    async def add_identity_links(self, access: AccessContext, links: list[IdentityLink]) -> int:
        """Add cross-reference links (identity:admin); every linked identifier is audited (in parts)."""
        ids = [audit_id(link.identifier.value, link.identifier.issuer) for link in links]
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
        await self._record_parts(access, AuditAction.IDENTITY_CHANGE, AuditOutcome.SUCCESS, ids, None)
        try:
            return await store.add_links(links)
        except PacsfedError as exc:  # the records above said what was attempted; these say it failed
            await self._record_parts(
                access, AuditAction.IDENTITY_CHANGE, AuditOutcome.FAILURE, ids, _code_of(exc)
            )
            raise

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
        try:
            return await self.engine.purge_cache(query, source_id)
        except PacsfedError as exc:
            await self.record(
                access,
                AuditAction.CACHE_PURGE,
                AuditOutcome.FAILURE,
                patient_ids=ids,
                sources=[source_id] if source_id else [],
                detail=_code_of(exc),
            )
            raise

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
                access = AccessContext(_ANONYMOUS, entry.address, None, "flood-control")
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
