"""C-FIND requests answered by the federation: an identifier read as a search, the service asked, the answer written.

STUDY level (Study Root and Patient Root, PS3.4 C.6.1.1.3 and C.6.2.1.2) asks
``HistoryService.search_studies``; SERIES level ``search_series``; IMAGE level ``search_instances``.
Matching keys honoured: PatientID (+ IssuerOfPatientID), PatientName (a pattern; without
PatientID only the sources that support demographic search are asked; with it pacsfed matches
the name on the patient's studies, so a reused id brings no other patient's), StudyInstanceUID
(a UID list at STUDY level, PS3.4 C.2.2.2.2: ``uid1\\uid2``), AccessionNumber, StudyDate (a date
or a range), ModalitiesInStudy (any of); at SERIES level SeriesInstanceUID (a UID list) and
Modality; at IMAGE level SOPInstanceUID (a UID list). The upper levels' unique keys are single
values (PS3.4 C.4.1.2.1). Patient Root's PATIENT level is refused (C000 with an ErrorComment).
Every ErrorComment is one of the facade's own 64-character texts (``_comments``).

Partial results (a source failed or timed out): every study that arrived is sent, and the
final response carries the Warning status B000 with an ErrorComment (0000,0902) naming the
sources that did not answer, e.g. ``partial: hosp-b UNREACHABLE``. C-FIND defines no warning of
its own (PS3.4 C.4.1.1.4), but B000 is of the Warning class every DIMSE status may take (PS3.7
C.3: 0001 or Bxxx), and the Failure statuses would tell the caller that nothing matched. dcmtk's
``findscu`` keeps the answers and shows the status (``-v``: "Unknown Status: 0xb000") and the
comment (``-d``: "0xb000: Warning", then ErrorComment). Orthanc 1.10 as a workstation drops every
answer on any final status but Success: a calling AE configured with ``partial_status: success``
gets Success then, and the failed sources are not shown to it. A failure of the whole query is a Failure status (A700 when pacsfed is overloaded,
C000 otherwise) with the reason, never patient data.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from dicom_facade import _comments
from dicom_facade._association import FindAnswer, FindCall
from dicom_facade._comments import ERROR_COMMENT_MAX
from dicom_facade._identifiers import (
    asked_keys,
    character_set,
    listing_identifier,
    study_identifier,
)
from dicom_facade._messages import OUT_OF_RESOURCES, SUCCESS, UNABLE_TO_PROCESS, WARNING
from dicom_facade._negotiation import PATIENT_ROOT_FIND
from federation.access import AccessContext, Principal
from federation.errors import Overloaded, PacsfedError, QueryError
from federation.models import DateRange, PatientQuery, SourceOutcome, SourceStatus
from federation.search import InstanceMatch, InstanceSearch, SeriesMatch, SeriesSearch, StudySearch
from federation.service import HistoryService

CHANNEL = "dicom"
_WILDCARDS = frozenset("*?")


class SearchAnswerer:
    """Answers each C-FIND through the service, as the calling AE's principal, on the ``dicom`` channel."""

    def __init__(
        self,
        service: HistoryService,
        principals: Mapping[str, Principal],
        deadline_ms: int | None,
        quiet_partial: frozenset[str] = frozenset(),
    ) -> None:
        self.service = service
        self.principals = principals
        self.deadline_ms = deadline_ms
        self.quiet_partial = quiet_partial
        """Calling AEs told Success for a partial answer (``partial_status: success``)."""

    async def __call__(self, call: FindCall) -> FindAnswer:
        principal = self.principals.get(call.calling_ae)
        if principal is None:  # admitted at association, removed since: nothing is answered
            return FindAnswer([], UNABLE_TO_PROCESS, _comments.NOT_ALLOWED)
        access = AccessContext(principal, client_address=call.client_address, channel=CHANNEL)
        level = _text(call.identifier, "QueryRetrieveLevel").upper()
        levels = {"STUDY": self._studies, "SERIES": self._series, "IMAGE": self._instances}
        try:
            if level in levels:
                answer = await levels[level](call, access)
                if answer.status == WARNING and call.calling_ae in self.quiet_partial:
                    return FindAnswer(answer.matches, SUCCESS)
                return answer
        except Overloaded as exc:
            return FindAnswer([], OUT_OF_RESOURCES, _comments.for_error(exc))
        except PacsfedError as exc:
            return FindAnswer([], UNABLE_TO_PROCESS, _comments.for_error(exc))
        return FindAnswer([], UNABLE_TO_PROCESS, _comments.LEVELS)

    async def _studies(self, call: FindCall, access: AccessContext) -> FindAnswer:
        identifier = call.identifier
        patient_id = _exact(identifier, "PatientID")
        issuer = _exact(identifier, "IssuerOfPatientID")
        name = _text(identifier, "PatientName")
        uids, accession = _uid_list(identifier, "StudyInstanceUID"), _exact(identifier, "AccessionNumber")
        if not (patient_id or name.strip("*?^= ") or uids or accession):
            return FindAnswer([], UNABLE_TO_PROCESS, _comments.STUDY_NEEDS_KEY)
        search = StudySearch(
            patient=PatientQuery(patient_id=patient_id, issuer=issuer) if patient_id else None,
            patient_name=name or None,
            study_instance_uids=uids,
            accession_number=accession,
            study_date=DateRange.parse(date) if (date := _text(identifier, "StudyDate")) else None,
            modalities=tuple(_values(identifier, "ModalitiesInStudy")),
        )
        result = await self.service.search_studies(search, access, deadline_ms=self.deadline_ms)
        keys, charset = asked_keys(identifier), character_set(identifier)
        unique = _unique(call.model, "STUDY")
        matches = [study_identifier(m, keys, charset, unique) for m in result.studies]
        return FindAnswer(matches, *_final(result.sources))

    async def _series(self, call: FindCall, access: AccessContext) -> FindAnswer:
        identifier = call.identifier
        patient_id = _exact(identifier, "PatientID")
        study_uid = _exact(identifier, "StudyInstanceUID")
        if study_uid is None:
            return FindAnswer([], UNABLE_TO_PROCESS, _comments.SERIES_NEEDS_STUDY)
        issuer = _exact(identifier, "IssuerOfPatientID")
        search = SeriesSearch(
            study_instance_uid=study_uid,
            series_instance_uids=_uid_list(identifier, "SeriesInstanceUID"),
            modality=_exact(identifier, "Modality"),
            patient=PatientQuery(patient_id=patient_id, issuer=issuer) if patient_id else None,
        )
        result = await self.service.search_series(search, access, deadline_ms=self.deadline_ms)
        return _listing_answer(call, "SERIES", patient_id, result.series, result.sources)

    async def _instances(self, call: FindCall, access: AccessContext) -> FindAnswer:
        identifier = call.identifier
        patient_id = _exact(identifier, "PatientID")
        study_uid, series_uid = (
            _exact(identifier, "StudyInstanceUID"),
            _exact(identifier, "SeriesInstanceUID"),
        )
        if study_uid is None or series_uid is None:
            return FindAnswer([], UNABLE_TO_PROCESS, _comments.IMAGE_NEEDS_SERIES)
        issuer = _exact(identifier, "IssuerOfPatientID")
        search = InstanceSearch(
            study_instance_uid=study_uid,
            series_instance_uid=series_uid,
            sop_instance_uids=_uid_list(identifier, "SOPInstanceUID"),
            patient=PatientQuery(patient_id=patient_id, issuer=issuer) if patient_id else None,
        )
        result = await self.service.search_instances(search, access, deadline_ms=self.deadline_ms)
        return _listing_answer(call, "IMAGE", patient_id, result.instances, result.sources)


def _listing_answer(
    call: FindCall,
    level: str,
    patient_id: str | None,
    found: Sequence[SeriesMatch | InstanceMatch],
    sources: tuple[SourceOutcome, ...],
) -> FindAnswer:
    """A SERIES or IMAGE answer: each merged match with the keys the request asked, under its PatientID if it named one."""
    keys, charset = asked_keys(call.identifier), character_set(call.identifier)
    unique = _unique(call.model, level)
    parent = {"PatientID": patient_id} if patient_id else {}
    return FindAnswer([listing_identifier(m, keys, charset, unique, parent) for m in found], *_final(sources))


def _final(sources: tuple[SourceOutcome, ...]) -> tuple[int, str | None]:
    """Success, or Warning B000 naming the sources that did not answer (ErrorComment, 64 characters)."""
    failed = [o for o in sources if o.status not in (SourceStatus.OK, SourceStatus.UNSUPPORTED)]
    if not failed:
        return SUCCESS, None
    comment = "partial: " + ", ".join(f"{o.source.id} {o.status.value}" for o in failed)
    if len(comment) > ERROR_COMMENT_MAX:
        comment = f"partial: {len(failed)} of {len(sources)} sources did not answer"
    return WARNING, comment


def _unique(model: str, level: str) -> tuple[str, ...]:
    """The unique keys every response carries: the level's and its parents' (PS3.4 C.6.1.1.4, C.6.2.1.4)."""
    keys: tuple[str, ...] = ("PatientID",) if model == PATIENT_ROOT_FIND else ()
    keys += ("StudyInstanceUID",)
    if level == "STUDY":
        return keys
    return (
        (*keys, "SeriesInstanceUID") if level == "SERIES" else (*keys, "SeriesInstanceUID", "SOPInstanceUID")
    )


def _text(identifier: Dataset, keyword: str) -> str:
    value = identifier.get(keyword)
    if value is None:
        return ""
    if isinstance(value, MultiValue):
        return "\\".join(str(v) for v in value).strip()
    return str(value).strip()


def _exact(identifier: Dataset, keyword: str) -> str | None:
    """A single-value matching key; universal (None) when empty or only ``*``."""
    value = _text(identifier, keyword)
    if not value or value == "*":
        return None
    if _WILDCARDS & set(value) or "\\" in value:
        raise QueryError(_comments.exact_key(keyword), code="BAD_QUERY")
    return value


def _uid_list(identifier: Dataset, keyword: str) -> tuple[str, ...]:
    """A UID matching key: one UID, or a list of them (PS3.4 C.2.2.2.2); universal (empty) when empty or ``*``."""
    values = _values(identifier, keyword)
    if any(_WILDCARDS & set(value) for value in values):
        raise QueryError(_comments.uid_key(keyword), code="BAD_QUERY")
    return tuple(values)


def _values(identifier: Dataset, keyword: str) -> list[str]:
    value = identifier.get(keyword)
    if value is None or value == "":
        return []
    items = list(value) if isinstance(value, MultiValue | list | tuple) else [value]
    return [str(v).strip() for v in items if str(v).strip() and str(v).strip() != "*"]
