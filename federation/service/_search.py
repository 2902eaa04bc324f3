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
import functools
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from federation.access.principals import HISTORY_EMERGENCY, HISTORY_READ, AccessContext, patient_key
from federation.audit.lists import audit_id
from federation.audit.records import AuditAction, AuditOutcome
from federation.engine.request import HistoryRequest
from federation.engine.search import LevelAnswer
from federation.errors import AccessError, PacsfedError, QueryError
from federation.identity.patterns import matches_name_pattern
from federation.merge import merge_exam, sort_newest_first
from federation.models import (
    Deadline,
    Exam,
    InstanceQuery,
    InstanceRecord,
    PatientQuery,
    SeriesQuery,
    SeriesRecord,
    SourceInfo,
    StudyRecord,
)
from federation.search import (
    InstanceMatch,
    InstanceSearch,
    InstanceSearchResult,
    SeriesMatch,
    SeriesSearch,
    SeriesSearchResult,
    StudyMatch,
    StudySearch,
    StudySearchResult,
)
from federation.service._admission import admitted
from federation.service._base import code_of
from federation.service._history import HistoryReads, _restricted

R = TypeVar("R", SeriesRecord, InstanceRecord)


def _uid_of(record: SeriesRecord | InstanceRecord) -> str:
    """The UID a listing merges by: the series' for series, the instance's for instances."""
    return record.sop_instance_uid if isinstance(record, InstanceRecord) else record.series_instance_uid


def _series_order(record: SeriesRecord) -> tuple[bool, int]:
    return record.series_number is None, record.series_number or 0


def _instance_order(record: InstanceRecord) -> tuple[bool, int]:
    return record.instance_number is None, record.instance_number or 0


class SearchDoors(HistoryReads):
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

    @admitted
    async def search_series(
        self, search: SeriesSearch, access: AccessContext, *, deadline_ms: int | None = None
    ) -> SeriesSearchResult:
        """The study's series, merged by SeriesInstanceUID, from the sources that list series."""
        query = SeriesQuery(
            study_instance_uid=search.study_instance_uid,
            series_instance_uid=search.series_instance_uid,
            modality=search.modality,
            patient_id=search.patient.patient_id if search.patient is not None else None,
            issuer_of_patient_id=search.patient.issuer if search.patient is not None else None,
        )
        ask = functools.partial(self.engine.search_series, query)
        wanted = search.series_instance_uids
        series, answer = await self._listed(search, access, deadline_ms, "series", ask, _series_order, wanted)
        return SeriesSearchResult(
            series=tuple(SeriesMatch(records=g.records, sources=g.infos) for g in series),
            sources=answer.outcomes,
            complete=answer.complete,
            elapsed_ms=answer.elapsed_ms,
        )

    @admitted
    async def search_instances(
        self, search: InstanceSearch, access: AccessContext, *, deadline_ms: int | None = None
    ) -> InstanceSearchResult:
        """The series' instances, merged by SOPInstanceUID, from the sources that list instances."""
        query = InstanceQuery(
            study_instance_uid=search.study_instance_uid,
            series_instance_uid=search.series_instance_uid,
            sop_instance_uid=search.sop_instance_uid,
        )
        ask = functools.partial(self.engine.search_instances, query)
        wanted = search.sop_instance_uids
        found, answer = await self._listed(
            search, access, deadline_ms, "instance", ask, _instance_order, wanted
        )
        return InstanceSearchResult(
            instances=tuple(InstanceMatch(records=g.records, sources=g.infos) for g in found),
            sources=answer.outcomes,
            complete=answer.complete,
            elapsed_ms=answer.elapsed_ms,
        )

    async def _listed(
        self,
        search: SeriesSearch | InstanceSearch,
        access: AccessContext,
        deadline_ms: int | None,
        level: str,
        ask: Callable[[list[str] | None, Deadline], Awaitable[LevelAnswer[R]]],
        order: Callable[[R], tuple[bool, int]],
        wanted: tuple[str, ...] = (),
    ) -> tuple[list[_Group[R]], LevelAnswer[R]]:
        """One listing below a study: authorized, asked, merged by UID, kept (``wanted``: a UID list) and ordered, audited."""
        what = f"{level} search; study {search.study_instance_uid}"
        sources, ids, deadline = await self._below_study(search, access, what, deadline_ms)
        try:
            answer = await ask(sources, deadline)
        except PacsfedError as exc:
            await self._record_search(access, AuditOutcome.FAILURE, ids, sources, code_of(exc), soon=True)
            raise
        groups = _merged(answer.records, _uid_of, self.engine.sources)
        if wanted:
            groups = [group for group in groups if _uid_of(group.record) in wanted]
        groups.sort(key=lambda group: order(group.record))
        asked = [outcome.source.id for outcome in answer.outcomes]
        noun = "series" if level == "series" else "instances"
        await self._record_search(
            access, AuditOutcome.SUCCESS, ids, asked, f"{what}; {len(groups)} {noun}", soon=True
        )
        return groups, answer

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


def _named(pattern: str, exam: Exam) -> bool:
    """Whether the exam's patient name matches the pattern (a reused id must not bring another patient)."""
    groups = exam.patient_name_groups
    held = (groups.alphabetic, groups.ideographic, groups.phonetic) if groups is not None else ()
    return matches_name_pattern(pattern, (exam.patient_name, *held))


def _id_of(patient: PatientQuery, national_issuer: str | None) -> tuple[str, str | None]:
    if patient.patient_id is not None:
        return patient.patient_id, patient.issuer
    return patient.national_id or "", national_issuer


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


@dataclass(frozen=True, slots=True)
class _Group(Generic[R]):
    """One UID's records and their sources, configuration order."""

    records: tuple[R, ...]
    infos: tuple[SourceInfo, ...]

    @property
    def record(self) -> R:
        return self.records[0]


def _merged(records: Sequence[R], key: Callable[[R], str], sources: Sequence[SourceInfo]) -> list[_Group[R]]:
    """Records grouped by their UID, each group's sources in configuration order."""
    order = {info.id: index for index, info in enumerate(sources)}
    infos = {info.id: info for info in sources}
    groups: dict[str, list[R]] = {}
    for record in sorted(records, key=lambda r: order.get(r.source_id, len(order))):
        groups.setdefault(key(record), []).append(record)
    return [
        _Group(tuple(group), tuple(infos[r.source_id] for r in group if r.source_id in infos))
        for group in groups.values()
    ]
