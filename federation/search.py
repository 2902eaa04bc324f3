"""Search vocabulary: studies, series and instances across the sources, as the DICOM and DICOMweb facades ask.

A search is what a workstation or a viewer sends (a C-FIND, a QIDO-RS request), answered by the
service from every source that can (:class:`federation.service.HistoryService`'s ``search_studies``,
``search_series``, ``search_instances``). Studies are merged by StudyInstanceUID, series by
SeriesInstanceUID, instances by SOPInstanceUID; each source's status travels with the answer.

Which searches are accepted (else QueryError ``BAD_QUERY``): a study search names a patient (an id,
with its issuer when known; or a PatientName pattern), a StudyInstanceUID or an AccessionNumber. A
search by study date or modality alone would list a whole archive. A PatientName search goes only
to sources that support demographic search, and never merges different patients: each match keeps
its own hospital's PatientID and IssuerOfPatientID.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, field_validator, model_validator

from federation.errors import QueryError
from federation.models import (
    DateRange,
    Exam,
    InstanceQuery,
    InstanceRecord,
    PatientQuery,
    PatientQueryKind,
    SeriesQuery,
    SeriesRecord,
    SourceInfo,
    SourceOutcome,
    StudyQuery,
)

__all__ = [
    "MAX_UIDS",
    "MIN_NAME_CHARACTERS",
    "InstanceMatch",
    "InstanceSearch",
    "InstanceSearchResult",
    "SeriesMatch",
    "SeriesSearch",
    "SeriesSearchResult",
    "StudyMatch",
    "StudySearch",
    "StudySearchResult",
]

MIN_NAME_CHARACTERS = 2
"""A PatientName pattern needs at least this many characters besides the wildcards ``*`` and ``?``."""
MAX_UIDS = 100
"""The most UIDs one UID list matching key may hold (PS3.4 C.2.2.2.2): each source is asked them at once."""
_MAX_UID_LENGTH = 64  # PS3.5 9.1: a UID is at most 64 characters
_NAME_WILDCARDS = frozenset("*?")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _uid(value: str | None) -> str | None:
    """A UID as a matching key: stripped, digits and dots, at most 64 characters (PS3.5 9.1)."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    if len(value) > _MAX_UID_LENGTH or not all(c.isdigit() or c == "." for c in value):
        raise QueryError("a UID is at most 64 digits and dots", code="BAD_QUERY")
    return value


def _uid_list(values: tuple[str, ...]) -> tuple[str, ...]:
    """A UID list matching key (PS3.4 C.2.2.2.2): each a UID, each once, at most :data:`MAX_UIDS`."""
    uids = tuple(dict.fromkeys(uid for uid in (_uid(v) for v in values) if uid is not None))
    if len(uids) > MAX_UIDS:
        raise QueryError(f"at most {MAX_UIDS} UIDs in one list", code="BAD_QUERY")
    return uids


def _required_uid(value: str) -> str:
    uid = _uid(value)
    if uid is None:
        raise QueryError("a StudyInstanceUID (and SeriesInstanceUID) is needed", code="BAD_QUERY")
    return uid


def _text_key(value: str | None) -> str | None:
    """An exact text key (AccessionNumber, Modality): stripped, no matching characters."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    if len(value) > 64 or set("*?\\") & set(value):
        raise QueryError("an exact key is at most 64 characters, without * ? or \\", code="BAD_QUERY")
    return value


class StudySearch(_Frozen):
    """Which studies to find: a patient, or a study's own keys, narrowed by date and modality."""

    patient: PatientQuery | None = None
    """The patient by id (``{id, issuer}``) or national id; identity resolution as for histories."""
    patient_name: str | None = None
    """A PN matching pattern (``*`` and ``?`` allowed, PS3.4 C.2.2.2.4). Without ``patient``, sent to
    the sources that search by name; with it, matched by pacsfed on the patient's studies (folded,
    as name search folds), so a reused id never brings another patient's studies."""
    study_instance_uid: str | None = None
    study_instance_uids: tuple[str, ...] = ()
    """A UID list (PS3.4 C.2.2.2.2), instead of ``study_instance_uid``: any of these studies."""
    accession_number: str | None = None
    study_date: DateRange | None = None
    modalities: tuple[str, ...] = ()
    """ModalitiesInStudy: any of them."""
    source_ids: tuple[str, ...] | None = None
    """Ask only these sources (within what the caller may ask)."""

    @field_validator("study_instance_uid")
    @classmethod
    def _study_uid(cls, value: str | None) -> str | None:
        return _uid(value)

    @field_validator("study_instance_uids")
    @classmethod
    def _study_uids(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return _uid_list(value)

    @field_validator("accession_number")
    @classmethod
    def _accession(cls, value: str | None) -> str | None:
        return _text_key(value)

    @field_validator("modalities")
    @classmethod
    def _modalities(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(dict.fromkeys(m for m in (_text_key(v) for v in value) if m is not None))

    @field_validator("patient_name")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        value = value.strip()
        if len(value) > 64 * 5 or "\\" in value:
            raise QueryError("a PatientName pattern is one value of at most 320 characters", code="BAD_QUERY")
        return None if not value.strip("*^= ") else value

    @property
    def uids(self) -> tuple[str, ...]:
        """The StudyInstanceUIDs searched: the one, or the list (empty: any study)."""
        return (self.study_instance_uid,) if self.study_instance_uid is not None else self.study_instance_uids

    @model_validator(mode="after")
    def _named(self) -> StudySearch:
        if self.patient is not None and self.patient.kind is PatientQueryKind.DEMOGRAPHICS:
            raise QueryError("a study search names a patient by id, or by a name pattern", code="BAD_QUERY")
        if self.study_instance_uid is not None and self.study_instance_uids:
            raise QueryError("give one StudyInstanceUID or a list, not both", code="BAD_QUERY")
        plain = [c for c in self.patient_name or "" if c not in _NAME_WILDCARDS and c not in "^= "]
        if self.patient is None and self.patient_name is not None and len(plain) < MIN_NAME_CHARACTERS:
            raise QueryError(
                f"PatientName pattern: at least {MIN_NAME_CHARACTERS} characters besides * and ?",
                code="BAD_QUERY",
            )
        if not (self.patient or self.patient_name or self.uids or self.accession_number):
            raise QueryError(
                "a study search needs a patient (PatientID or PatientName), a StudyInstanceUID"
                " or an AccessionNumber",
                code="BAD_QUERY",
            )
        return self

    def study_keys(self) -> StudyQuery:
        """The study-level matching keys (and the name pattern) as a source is asked them, without the patient id."""
        single = len(self.uids) == 1
        return StudyQuery(
            patient_name=self.patient_name,
            study_instance_uid=self.uids[0] if single else None,
            study_instance_uids=() if single else self.uids,
            accession_number=self.accession_number,
            study_date=self.study_date,
            modalities=self.modalities,
        )


class StudyMatch(_Frozen):
    """One found study: merged across the sources holding it, and the patient as the answer names it.

    ``patient_id`` and ``issuer_of_patient_id``: the searched ones for a search by id (identity
    resolution made every location this patient's); otherwise the holding hospital's own, and a
    study is merged only across locations that name the same patient.
    """

    exam: Exam
    patient_id: str | None = None
    issuer_of_patient_id: str | None = None


class _Result(_Frozen):
    sources: tuple[SourceOutcome, ...]
    complete: bool
    """True when every asked source answered (OK): otherwise the answer is partial, ``sources`` says why."""
    elapsed_ms: int = 0
    warnings: tuple[str, ...] = ()


class StudySearchResult(_Result):
    """The found studies (newest first) and every source's status."""

    studies: tuple[StudyMatch, ...]


class SeriesSearch(_Frozen):
    """The series of one study, as many sources as hold it."""

    study_instance_uid: str
    series_instance_uid: str | None = None
    series_instance_uids: tuple[str, ...] = ()
    """A UID list (PS3.4 C.2.2.2.2), instead of ``series_instance_uid``: a list of one is sent as the
    single key; a longer one lists the study's series once and keeps these."""
    modality: str | None = None
    patient: PatientQuery | None = None
    """When known: the patient the study is searched for (audited, and break-the-glass windows apply)."""
    source_ids: tuple[str, ...] | None = None

    @field_validator("study_instance_uid")
    @classmethod
    def _study_uid(cls, value: str) -> str:
        return _required_uid(value)

    @field_validator("series_instance_uids")
    @classmethod
    def _series_uids(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return _uid_list(value)

    @field_validator("series_instance_uid")
    @classmethod
    def _series_uid(cls, value: str | None) -> str | None:
        return _uid(value)

    @field_validator("modality")
    @classmethod
    def _modality(cls, value: str | None) -> str | None:
        return _text_key(value)

    @property
    def uids(self) -> tuple[str, ...]:
        """The SeriesInstanceUIDs searched: the one, or the list (empty: every series of the study)."""
        return (
            (self.series_instance_uid,) if self.series_instance_uid is not None else self.series_instance_uids
        )

    @model_validator(mode="after")
    def _one_or_list(self) -> SeriesSearch:
        if self.series_instance_uid is not None and self.series_instance_uids:
            raise QueryError("give one SeriesInstanceUID or a list, not both", code="BAD_QUERY")
        return self

    def series_keys(self) -> SeriesQuery:
        """The series-level keys as a source is asked them: one UID as the single key, a list not at all."""
        single = len(self.uids) == 1
        return SeriesQuery(
            study_instance_uid=self.study_instance_uid,
            series_instance_uid=self.uids[0] if single else None,
            modality=self.modality,
            patient_id=self.patient.patient_id if self.patient is not None else None,
            issuer_of_patient_id=self.patient.issuer if self.patient is not None else None,
        )


class SeriesMatch(_Frozen):
    """One series merged across the sources that hold it: each source's own record, configuration order."""

    records: tuple[SeriesRecord, ...]
    sources: tuple[SourceInfo, ...]

    @property
    def record(self) -> SeriesRecord:
        """The values shown: the first holding source's record."""
        return self.records[0]


class SeriesSearchResult(_Result):
    """The study's series (by SeriesNumber) and every source's status."""

    series: tuple[SeriesMatch, ...]


class InstanceSearch(_Frozen):
    """The instances of one series, as many sources as hold it."""

    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str | None = None
    sop_instance_uids: tuple[str, ...] = ()
    """A UID list (PS3.4 C.2.2.2.2), instead of ``sop_instance_uid``: a list of one is sent as the
    single key; a longer one lists the series' instances once and keeps these."""
    patient: PatientQuery | None = None
    source_ids: tuple[str, ...] | None = None

    @field_validator("sop_instance_uids")
    @classmethod
    def _sop_uids(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return _uid_list(value)

    @field_validator("study_instance_uid", "series_instance_uid")
    @classmethod
    def _parent_uids(cls, value: str) -> str:
        return _required_uid(value)

    @field_validator("sop_instance_uid")
    @classmethod
    def _sop_uid(cls, value: str | None) -> str | None:
        return _uid(value)

    @property
    def uids(self) -> tuple[str, ...]:
        """The SOPInstanceUIDs searched: the one, or the list (empty: every instance of the series)."""
        return (self.sop_instance_uid,) if self.sop_instance_uid is not None else self.sop_instance_uids

    @model_validator(mode="after")
    def _one_or_list(self) -> InstanceSearch:
        if self.sop_instance_uid is not None and self.sop_instance_uids:
            raise QueryError("give one SOPInstanceUID or a list, not both", code="BAD_QUERY")
        return self

    def instance_keys(self) -> InstanceQuery:
        """The instance-level keys as a source is asked them: one UID as the single key, a list not at all."""
        single = len(self.uids) == 1
        return InstanceQuery(
            study_instance_uid=self.study_instance_uid,
            series_instance_uid=self.series_instance_uid,
            sop_instance_uid=self.uids[0] if single else None,
        )


class InstanceMatch(_Frozen):
    """One instance merged across the sources that hold it: each source's own record, configuration order."""

    records: tuple[InstanceRecord, ...]
    sources: tuple[SourceInfo, ...]

    @property
    def record(self) -> InstanceRecord:
        """The values shown: the first holding source's record."""
        return self.records[0]


class InstanceSearchResult(_Result):
    """The series' instances (by InstanceNumber) and every source's status."""

    instances: tuple[InstanceMatch, ...]
