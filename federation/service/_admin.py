"""Administration through the door: reading the audit, identity links, cache purges."""

from __future__ import annotations

import base64
import binascii
import dataclasses

from federation.access.principals import AUDIT_READ, IDENTITY_ADMIN, AccessContext, audit_patient_ids
from federation.audit.lists import audit_id
from federation.audit.records import AuditAction, AuditOutcome, AuditRecord, PageKey, page_key
from federation.errors import AccessError, PacsfedError, QueryError
from federation.identity.resolver import IdentityLink
from federation.models import PatientQuery
from federation.service._base import ServiceBase, code_of

_MAX_AUDIT_PAGE = 500


@dataclasses.dataclass(frozen=True, slots=True)
class AuditPage:
    """One page of audit records, newest first, and where the next one starts."""

    events: list[AuditRecord]
    end_cursor: str | None
    has_next_page: bool
    partial: bool
    """Only this server's journal could be read (the searchable sink was down)."""


class Administration(ServiceBase):
    """Audit reads (audited too) and the identity:admin actions."""

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
                access, AuditAction.IDENTITY_CHANGE, AuditOutcome.FAILURE, ids, code_of(exc)
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
                detail=code_of(exc),
            )
            raise


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
