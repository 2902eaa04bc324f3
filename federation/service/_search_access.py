"""Who may search without naming a patient, and how searches are audited: shared by the study search and the listings.

A search without a patient id needs ``history:read`` (or, by StudyInstanceUID alone, ``history:emergency``
with an open break-the-glass window for the studies' patients); a share code searches only its own studies.
Every search is audited as PATIENT_QUERY with the caller's channel.
"""

from __future__ import annotations

from collections.abc import Sequence

from federation.access.principals import HISTORY_EMERGENCY, HISTORY_READ, AccessContext, patient_key
from federation.audit.lists import audit_id
from federation.audit.records import AuditAction, AuditOutcome
from federation.engine.request import HistoryRequest
from federation.errors import AccessError, QueryError
from federation.models import Deadline, PatientQuery
from federation.search import InstanceSearch, SeriesSearch, StudyMatch, StudySearch
from federation.service._history import HistoryReads


class SearchAccess(HistoryReads):
    """The grants and audit records of searches: by patient id like histories, otherwise by scope or share."""

    async def _below_study(
        self, search: SeriesSearch | InstanceSearch, access: AccessContext, what: str, deadline_ms: int | None
    ) -> tuple[list[str] | None, list[str], Deadline]:
        """The sources a series or instance search may ask, the audited ids, and the deadline; the access recorded."""
        deadline = self.engine.deadline_for(deadline_ms)
        patient, source_ids = search.patient, search.source_ids
        if patient is not None:
            request = HistoryRequest(source_ids=tuple(source_ids) if source_ids is not None else None)
            grant = await self._authorize(patient, access, request)
            if grant.studies is not None and search.study_instance_uid not in grant.studies:
                raise AccessError("this share code does not grant this study", code="FORBIDDEN")
            await self._record_query(patient, access, grant, AuditOutcome.SUCCESS, detail=f"{what}; access")
            return grant.source_ids, [audit_id(*_id_of(patient, self._national_issuer))], deadline
        sources = await self._grant_search(access, source_ids, (search.study_instance_uid,), [], what)
        await self._record_search(access, AuditOutcome.SUCCESS, [], sources, f"{what}; access")
        return sources, [], deadline

    @staticmethod
    def _emergency_study_search(access: AccessContext, search: StudySearch) -> bool:
        """Whether this is a break-the-glass caller's search by StudyInstanceUID alone (limited to open windows)."""
        principal = access.principal
        return (
            principal.share is None
            and not principal.has(HISTORY_READ)
            and principal.has(HISTORY_EMERGENCY)
            and bool(search.uids)
            and search.patient_name is None
            and search.accession_number is None
        )

    async def _under_open_windows(
        self, access: AccessContext, studies: list[StudyMatch]
    ) -> tuple[list[StudyMatch], str | None]:
        """The studies whose patient this caller opened a break-the-glass window for, and that window's reason."""
        kept: list[StudyMatch] = []
        reason: str | None = None
        for match in studies:
            opened = await self._window_reason(access, match)
            if opened is not None:
                kept.append(match)
                reason = reason or opened
        return kept, reason

    async def _window_reason(self, access: AccessContext, match: StudyMatch) -> str | None:
        """The reason of the caller's open window over this match's patient (by id and issuer, or id alone)."""
        if match.patient_id is None:
            return None
        issuers = dict.fromkeys((match.issuer_of_patient_id, None))
        for issuer in issuers:
            try:
                key = patient_key(PatientQuery(patient_id=match.patient_id, issuer=issuer))
            except QueryError:  # an id no patient query could name: no window can be open for it
                return None
            reason = await self._windows.reason_for(access.principal.subject, key)
            if reason is not None:
                return reason
        return None

    async def _grant_search(
        self,
        access: AccessContext,
        source_ids: Sequence[str] | None,
        study_uids: tuple[str, ...],
        names: list[str],
        what: str,
        *,
        emergency: bool = False,
    ) -> list[str] | None:
        """The sources a search without a patient id may ask; AccessError (audited DENIED) if none."""
        principal = access.principal
        try:
            sources = self._allowed_sources(principal, source_ids)
            if principal.share is not None:
                studies = principal.share.studies
                if studies is None or not study_uids or not set(study_uids) <= set(studies):
                    raise AccessError("a share code searches only its own studies", code="FORBIDDEN")
            elif not principal.has(HISTORY_READ) and not emergency:
                raise AccessError(
                    f"a search without a patient id needs the scope {HISTORY_READ}", code="FORBIDDEN"
                )
        except AccessError as exc:
            asked = list(source_ids) if source_ids is not None else []
            await self._record_search(access, AuditOutcome.DENIED, names, asked, f"{what}; {exc.code}")
            raise
        return sources

    async def _record_search(
        self,
        access: AccessContext,
        outcome: AuditOutcome,
        patient_ids: list[str],
        sources: Sequence[str] | None,
        detail: str,
        *,
        exam_count: int | None = None,
        soon: bool = False,
        emergency: bool = False,
        reason: str | None = None,
    ) -> None:
        asked = list(sources) if sources is not None else [s.id for s in self.engine.sources]
        await self._record_parts(
            access,
            AuditAction.PATIENT_QUERY,
            outcome,
            patient_ids,
            detail,
            sources=asked,
            exam_count=exam_count,
            soon=soon,
            emergency=emergency,
            reason=reason,
        )


def _id_of(patient: PatientQuery, national_issuer: str | None) -> tuple[str, str | None]:
    if patient.patient_id is not None:
        return patient.patient_id, patient.issuer
    return patient.national_id or "", national_issuer
