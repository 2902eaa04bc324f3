"""Searches through the door: studies, series and instances for the DICOM and DICOMweb facades.

Authorized like histories (``history:read``, or ``history:emergency`` with an open break-the-glass
window for a searched patient; ``principal.sources`` limits the sources asked), audited
(PATIENT_QUERY with the caller's channel: the access before any source is asked, the outcome
after), admitted like histories (OVERLOADED past ``server.max_pending_queries``), under the same
deadline rules (``deadline_ms`` 50..``query.max_deadline_ms``). Source failures are data.

A study search by patient id is a patient history (identity resolution, the cache, shared
requests) whose exams pacsfed then matches against the study keys and a PatientName pattern. A search without a patient id
(StudyInstanceUIDs, an AccessionNumber, or a PatientName pattern) needs ``history:read``; with
``history:emergency`` alone, a search by StudyInstanceUID answers only the studies of patients for
whom this caller has a break-the-glass window open (a viewer opening a study the physician found
through the emergency history), audited as emergency access with the window's reason; a share code
searches only its own studies.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from federation.access.principals import AccessContext
from federation.audit.lists import audit_id
from federation.audit.records import AuditOutcome
from federation.engine.request import HistoryRequest
from federation.errors import PacsfedError
from federation.identity.patterns import matches_name_pattern
from federation.merge import merge_exam, sort_newest_first
from federation.models import Deadline, Exam, PatientQuery, SeriesQuery, SourceInfo, StudyRecord
from federation.search import StudyMatch, StudySearch, StudySearchResult
from federation.service._admission import admitted
from federation.service._base import code_of
from federation.service._history import _restricted
from federation.service._listings import ListingDoors


class SearchDoors(ListingDoors):
    """Study, series and instance searches across the sources, authorized and audited."""

    @admitted
    async def search_studies(
        self, search: StudySearch, access: AccessContext, *, deadline_ms: int | None = None
    ) -> StudySearchResult:
        """The studies matching the search, merged by StudyInstanceUID, with every asked source's status.

        By patient id, every location is that patient's (identity resolution) and the match names
        the searched id. Otherwise each match names its first holding source's patient, and a
        PatientName search merges a study only across sources that name the same patient id.
        """
        if search.patient is not None:
            return await self._studies_of_patient(search, search.patient, access, deadline_ms)
        deadline = self.engine.deadline_for(deadline_ms)
        what = _study_keys_detail(search)
        names = [f"name:{search.patient_name}"] if search.patient_name else []
        emergency = self._emergency_study_search(access, search)
        sources = await self._grant_search(
            access, search.source_ids, search.uids, names, what, emergency=emergency
        )
        await self._record_search(
            access, AuditOutcome.SUCCESS, names, sources, f"{what}; access", emergency=emergency
        )
        try:
            answer = await self.engine.search_study_keys(search.study_keys(), sources, deadline)
        except PacsfedError as exc:
            await self._record_search(
                access, AuditOutcome.FAILURE, names, sources, code_of(exc), soon=True, emergency=emergency
            )
            raise
        infos = {info.id: info for info in self.engine.sources}
        studies = _merged_studies(answer.records, infos, by_patient=search.patient_name is not None)
        reason: str | None = None
        if emergency:
            studies, reason = await self._under_open_windows(access, studies)
        returned = [audit_id(s.patient_id, s.issuer_of_patient_id) for s in studies if s.patient_id]
        asked = [outcome.source.id for outcome in answer.outcomes]
        await self._record_search(
            access,
            AuditOutcome.SUCCESS,
            names + returned,
            asked,
            what,
            exam_count=len(studies),
            soon=True,
            emergency=emergency,
            reason=reason,
        )
        return StudySearchResult(
            studies=tuple(studies),
            sources=answer.outcomes,
            complete=answer.complete,
            elapsed_ms=answer.elapsed_ms,
        )

    async def find_study(
        self,
        study_instance_uid: str,
        access: AccessContext,
        *,
        source_ids: tuple[str, ...] | None = None,
        deadline_ms: int | None = None,
    ) -> StudySearchResult:
        """One study by its StudyInstanceUID, as a viewer or an EHR opens a study it was given.

        :meth:`search_studies` by that UID, authorized and audited as such, except that a share
        code for a whole history searches its own patient's studies (a search by patient id: its
        patient's studies only), where a search without a patient id would refuse it. A share code
        for listed studies reaches only those (FORBIDDEN, audited DENIED, otherwise).
        """
        share = access.principal.share
        search = StudySearch(
            study_instance_uid=study_instance_uid,
            patient=share.patient if share is not None and share.studies is None else None,
            source_ids=source_ids,
        )
        return await self.search_studies(search, access, deadline_ms=deadline_ms)

    async def _studies_of_patient(
        self, search: StudySearch, patient: PatientQuery, access: AccessContext, deadline_ms: int | None
    ) -> StudySearchResult:
        """A patient's history, authorized and audited as one, matched against the study keys."""
        request = HistoryRequest(deadline_ms=deadline_ms, source_ids=search.source_ids)
        deadline = self.engine.deadline_for(deadline_ms)
        grant = await self._authorize(patient, access, request)
        await self._record_query(patient, access, grant, AuditOutcome.SUCCESS, detail="study search; access")
        try:
            history = await self.engine.patient_history(patient, grant.narrowed(request))
        except PacsfedError as exc:
            await self._record_query(
                patient, access, grant, AuditOutcome.FAILURE, detail=code_of(exc), soon=True
            )
            raise
        keys, name = search.study_keys(), search.patient_name
        history = _restricted(history, grant.studies)
        exams = tuple(
            exam
            for exam in history.exams
            if keys.matches_study_keys(exam) and (name is None or _named(name, exam))
        )
        if keys.modalities and any(not exam.modalities for exam in exams):
            exams = await self._with_series_modalities(exams, keys.modalities, deadline)
        history = history.model_copy(update={"exams": exams, "candidates": ()})
        await self._record_query(
            patient, access, grant, AuditOutcome.SUCCESS, history=history, detail="study search", soon=True
        )
        patient_id, issuer = patient.patient_id, patient.issuer
        if patient_id is None:  # a national id
            patient_id, issuer = patient.national_id, self._national_issuer
        return StudySearchResult(
            studies=tuple(
                StudyMatch(exam=e, patient_id=patient_id, issuer_of_patient_id=issuer) for e in exams
            ),
            sources=history.sources,
            complete=history.complete,
            elapsed_ms=history.elapsed_ms,
            warnings=history.warnings,
        )

    async def _with_series_modalities(
        self, exams: tuple[Exam, ...], wanted: tuple[str, ...], deadline: Deadline
    ) -> tuple[Exam, ...]:
        """Exams whose sources gave no ModalitiesInStudy (dcmqrscp), given their series' and matched again."""

        async def filled(exam: Exam) -> Exam:
            if exam.modalities:
                return exam
            holders = [location.source.id for location in exam.locations]
            query = SeriesQuery(study_instance_uid=exam.study_instance_uid)
            answer = await self.engine.search_series(query, holders, deadline)
            modalities = tuple(dict.fromkeys(r.modality for r in answer.records if r.modality))
            return exam.model_copy(update={"modalities": modalities}) if modalities else exam

        found = await asyncio.gather(*(filled(exam) for exam in exams))
        return tuple(e for e in found if not e.modalities or set(wanted) & set(e.modalities))


def _named(pattern: str, exam: Exam) -> bool:
    """Whether the exam's patient name matches the pattern (a reused id must not bring another patient)."""
    groups = exam.patient_name_groups
    held = (groups.alphabetic, groups.ideographic, groups.phonetic) if groups is not None else ()
    return matches_name_pattern(pattern, (exam.patient_name, *held))


def _study_keys_detail(search: StudySearch) -> str:
    """What a search without a patient id looked for, for the audit record (no name pattern: it is in patient_ids)."""
    if search.uids:
        return f"study search; {'study' if len(search.uids) == 1 else 'studies'} {', '.join(search.uids)}"
    if search.accession_number is not None:
        return "study search by accession number"
    return "study search by name"


def _merged_studies(
    records: Sequence[StudyRecord], infos: dict[str, SourceInfo], *, by_patient: bool
) -> list[StudyMatch]:
    """Studies merged by StudyInstanceUID (for a name search, also by the patient id each source gives).

    Each match names the patient of its first location (configuration order).
    """
    order = {source_id: index for index, source_id in enumerate(infos)}
    grouped: dict[tuple[str, ...], list[StudyRecord]] = {}
    for record in sorted(records, key=lambda r: order.get(r.source_id, len(order))):
        key: tuple[str, ...] = (record.study_instance_uid,)
        if by_patient:
            key += (record.patient_id or "", record.issuer_of_patient_id or "")
        grouped.setdefault(key, []).append(record)
    exams = sort_newest_first([merge_exam(group, infos) for group in grouped.values()])
    return [
        StudyMatch(
            exam=exam,
            patient_id=exam.locations[0].patient_id,
            issuer_of_patient_id=exam.locations[0].issuer_of_patient_id,
        )
        for exam in exams
    ]
