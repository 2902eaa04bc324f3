"""Normalized models: the only shapes that cross the boundary between connectors, engine and front ends."""

from __future__ import annotations

import datetime as dt
import enum
import functools
import time
import unicodedata
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator, model_validator

from federation.errors import ConnectorError, QueryError, SourceTimeout, SourceUnreachable

# PS3.5 6.2: LO is at most 64 characters; a PatientID never legitimately holds matching characters.
_MAX_ID_LENGTH = 64
_WILDCARDS = frozenset("*?\\")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


_M = TypeVar("_M", bound=_Frozen)
_UNSET = object()


@functools.cache
def _field_defaults(model: type[_Frozen]) -> dict[str, Any]:
    """Every field of a model in declaration order, with its default (``_UNSET`` where required)."""
    if any(info.default_factory is not None for info in model.model_fields.values()):
        raise TypeError(f"{model.__name__} has a default factory: build it with validation")
    return {name: _UNSET if info.is_required() else info.default for name, info in model.model_fields.items()}


def unvalidated(model: type[_M], values: dict[str, Any]) -> _M:
    """``model(**values)`` for values already of their fields' exact types, without validating them again.

    For the hot paths whose values come normalized from a reader that already made them (or from
    validated models): the instance validation would make of such values (fields in declaration
    order, ``values``' names as the fields set), at a fifth of its cost. Never for outside input.
    """
    fields = {**_field_defaults(model), **values}
    instance = model.__new__(model)
    object.__setattr__(instance, "__dict__", fields)
    object.__setattr__(instance, "__pydantic_fields_set__", set(values))
    object.__setattr__(instance, "__pydantic_extra__", None)
    object.__setattr__(instance, "__pydantic_private__", None)
    return instance


class Deadline:
    """An absolute point on the monotonic clock by which an answer is due."""

    __slots__ = ("at",)

    def __init__(self, at: float) -> None:
        self.at = at

    @classmethod
    def after(cls, seconds: float) -> Deadline:
        """A deadline ``seconds`` from now."""
        return cls(time.monotonic() + seconds)

    def remaining(self) -> float:
        """Seconds left, never negative."""
        return max(0.0, self.at - time.monotonic())

    @property
    def expired(self) -> bool:
        """True once the deadline has passed."""
        return time.monotonic() >= self.at


def _plain_value(value: str | None, what: str) -> str | None:
    """An exact identifier value: stripped, at most 64 characters, no matching characters."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    if len(value) > _MAX_ID_LENGTH:
        raise QueryError(f"{what} is longer than 64 characters", code="BAD_PATIENT_INPUT")
    if _WILDCARDS & set(value):
        # A wildcard would match other patients: a confidentiality and a safety issue.
        raise QueryError(f"{what} must not contain * ? or \\", code="BAD_PATIENT_INPUT")
    return value


class PatientQueryKind(enum.StrEnum):
    """Which of the accepted forms a patient query has."""

    LOCAL_ID = "LOCAL_ID"
    NATIONAL_ID = "NATIONAL_ID"
    DEMOGRAPHICS = "DEMOGRAPHICS"


class PatientQuery(_Frozen):
    """Which patient to look for: ``{id, issuer}``, ``{national_id}`` or demographics.

    Demographics need at least a family name and a birth date; they only ever produce
    candidates, never exams.
    """

    patient_id: str | None = None
    issuer: str | None = None
    national_id: str | None = None
    family_name: str | None = None
    given_name: str | None = None
    birth_date: dt.date | None = None
    sex: str | None = None

    @field_validator("patient_id", "issuer", "national_id")
    @classmethod
    def _exact(cls, value: str | None, info: ValidationInfo) -> str | None:
        return _plain_value(value, (info.field_name or "value").replace("_", " "))

    @field_validator("family_name", "given_name")
    @classmethod
    def _name(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None or not value.strip():
            return None
        value = unicodedata.normalize("NFC", value.strip())
        if len(value) > _MAX_ID_LENGTH or _WILDCARDS & set(value) or "^" in value or "=" in value:
            raise QueryError(
                f"{(info.field_name or '').replace('_', ' ')} must be a plain name of at most 64 characters",
                code="BAD_PATIENT_INPUT",
            )
        return value

    @field_validator("sex")
    @classmethod
    def _sex(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        value = value.strip().upper()
        if value not in ("M", "F", "O"):
            raise QueryError("sex must be M, F or O", code="BAD_PATIENT_INPUT")
        return value

    @model_validator(mode="after")
    def _one_form(self) -> PatientQuery:
        has_id = self.patient_id is not None
        has_national = self.national_id is not None
        demographic = any(
            v is not None for v in (self.family_name, self.given_name, self.birth_date, self.sex)
        )
        if sum((has_id, has_national, demographic)) != 1:
            raise QueryError(
                "give exactly one of: {id, issuer}, {nationalId}, or {familyName, givenName, birthDate, sex}",
                code="BAD_PATIENT_INPUT",
            )
        if self.issuer is not None and not has_id:
            raise QueryError("issuer qualifies an id; it needs id", code="BAD_PATIENT_INPUT")
        if demographic and (self.family_name is None or self.birth_date is None):
            raise QueryError(
                "a demographic search needs at least familyName and birthDate", code="BAD_PATIENT_INPUT"
            )
        return self

    @property
    def kind(self) -> PatientQueryKind:
        """The form of this query."""
        if self.patient_id is not None:
            return PatientQueryKind.LOCAL_ID
        if self.national_id is not None:
            return PatientQueryKind.NATIONAL_ID
        return PatientQueryKind.DEMOGRAPHICS

    def cache_key(self) -> str | None:
        """The key under which answers to this query are cached; None for demographics."""
        if self.patient_id is not None:
            return f"id|{self.issuer or ''}|{self.patient_id}"
        if self.national_id is not None:
            return f"national|{self.national_id}"
        return None


class DateRange(_Frozen):
    """A StudyDate range matching key (PS3.4 C.2.2.2.5.1): ``start-end``, either end open, inclusive."""

    start: dt.date | None = None
    end: dt.date | None = None

    @model_validator(mode="after")
    def _ordered(self) -> DateRange:
        if self.start is None and self.end is None:
            raise QueryError("a date range needs a start or an end", code="BAD_QUERY")
        if self.start is not None and self.end is not None and self.start > self.end:
            raise QueryError("a date range must not end before it starts", code="BAD_QUERY")
        return self

    @classmethod
    def parse(cls, text: str) -> DateRange:
        """From DICOM's form: ``YYYYMMDD``, ``YYYYMMDD-``, ``-YYYYMMDD`` or ``YYYYMMDD-YYYYMMDD`` (BAD_QUERY if not)."""
        start, dash, end = text.strip().partition("-")
        try:
            first = dt.datetime.strptime(start, "%Y%m%d").date() if start else None
            last = dt.datetime.strptime(end, "%Y%m%d").date() if end else None
        except ValueError:
            raise QueryError("a date must be YYYYMMDD, a range YYYYMMDD-YYYYMMDD", code="BAD_QUERY") from None
        return cls(start=first, end=last if dash else first)

    def dicom(self) -> str:
        """The range as a DA matching key: ``YYYYMMDD-YYYYMMDD`` (one date alone when both ends are equal)."""
        start = self.start.strftime("%Y%m%d") if self.start else ""
        if self.start is not None and self.start == self.end:
            return start
        return f"{start}-{self.end.strftime('%Y%m%d') if self.end else ''}"

    def contains(self, day: dt.date | None) -> bool:
        """Whether a study of this date matches; an unknown date does not."""
        if day is None:
            return False
        return (self.start is None or self.start <= day) and (self.end is None or day <= self.end)


class StudyQuery(_Frozen):
    """The matching keys one connector sends to one source (PS3.4 C.2.2.2).

    The study keys (``study_instance_uid`` … ``modalities``) are sent only to connectors with
    ``supports_study_keys``; pacsfed also checks every record against them (:meth:`matches_study_keys`).
    """

    patient_id: str | None = None
    issuer_of_patient_id: str | None = None
    """Sent as a matching key when set (only to sources configured to match on it)."""
    other_patient_id: str | None = None
    """Matched inside OtherPatientIDsSequence, with ``other_patient_id_issuer``."""
    other_patient_id_issuer: str | None = None
    patient_name: str | None = None
    """A PN matching pattern; may hold the wildcards * and ?."""
    patient_birth_date: dt.date | None = None
    study_instance_uid: str | None = None
    study_instance_uids: tuple[str, ...] = ()
    """UID list matching (PS3.4 C.2.2.2.2), any of them: one list to connectors with
    ``supports_uid_lists``, one ``study_instance_uid`` at a time to the others."""
    accession_number: str | None = None
    study_date: DateRange | None = None
    modalities: tuple[str, ...] = ()
    """ModalitiesInStudy: a study matches when it lists any of them (PS3.4 C.6.2.1.3)."""

    @property
    def has_study_keys(self) -> bool:
        """Whether any study-level matching key is set."""
        uids = self.study_instance_uid or self.study_instance_uids
        return bool(uids or self.accession_number or self.study_date or self.modalities)

    def matches_study_keys(self, study: StudyRecord | Exam) -> bool:
        """Whether a study satisfies the study keys, checked by pacsfed whatever the source matched.

        A date or modalities the source did not return cannot be checked: the source's own
        matching stands (dcmqrscp returns no ModalitiesInStudy, PEERS.md).
        """
        if self.study_instance_uid is not None and study.study_instance_uid != self.study_instance_uid:
            return False
        if self.study_instance_uids and study.study_instance_uid not in self.study_instance_uids:
            return False
        if self.accession_number is not None:
            held = [study.accession_number]
            if isinstance(study, Exam):  # each hospital may number the same study its own way
                held += [location.accession_number for location in study.locations]
            if self.accession_number not in held:
                return False
        dated = self.study_date is not None and study.study_date is not None
        if dated and self.study_date is not None and not self.study_date.contains(study.study_date):
            return False
        return not (self.modalities and study.modalities) or bool(
            set(self.modalities) & set(study.modalities)
        )


class MatchKind(enum.StrEnum):
    """Which identifier made a source return an exam."""

    LOCAL_ID = "LOCAL_ID"
    NATIONAL_ID = "NATIONAL_ID"
    XREF = "XREF"
    DEMOGRAPHICS = "DEMOGRAPHICS"


class MatchedBy(_Frozen):
    """The identifier (or the demographics) a location was found with."""

    kind: MatchKind
    issuer: str | None = None
    value: str | None = None


class PersonNameGroups(_Frozen):
    """The three component groups of a person name (PS3.5 6.2.1.1), each ``Family^Given^…``; None when empty."""

    alphabetic: str | None = None
    ideographic: str | None = None
    """Kanji, hanzi or hanja, as Japanese, Chinese and Korean systems write the name."""
    phonetic: str | None = None
    """Hiragana, katakana or hangul: how the name is read."""

    @classmethod
    def of(cls, groups: tuple[str, ...]) -> PersonNameGroups | None:
        """From (Alphabetic, Ideographic, Phonetic) strings, empty ones unknown; None when all are empty."""
        alphabetic, ideographic, phonetic = (*groups[:3], "", "", "")[:3]
        if not (alphabetic or ideographic or phonetic):
            return None
        return cls(alphabetic=alphabetic or None, ideographic=ideographic or None, phonetic=phonetic or None)


class StudyRecord(_Frozen):
    """One study as one source reported it, decoded and normalized."""

    source_id: str
    study_instance_uid: str
    patient_id: str | None = None
    issuer_of_patient_id: str | None = None
    patient_name: str | None = None
    """The name's first non-empty component group (Alphabetic, else Ideographic, else Phonetic)."""
    patient_name_groups: tuple[str, str, str] | None = None
    """(Alphabetic, Ideographic, Phonetic), empty strings for empty groups; set only when the name has
    an Ideographic or Phonetic group (None: the name, if any, is all Alphabetic), so that the usual
    one-group name costs nothing more to read and store."""
    patient_birth_date: dt.date | None = None
    patient_sex: str | None = None
    study_date: dt.date | None = None
    study_time: dt.time | None = None
    accession_number: str | None = None
    modalities: tuple[str, ...] = ()
    description: str | None = None
    referring_physician_name: str | None = None
    number_of_series: int | None = None
    number_of_instances: int | None = None
    retrieve_ae_title: str | None = None
    retrieve_url: str | None = None
    specific_character_set: tuple[str, ...] = ()
    other_patient_ids: tuple[tuple[str | None, str], ...] = ()
    """(issuer, id) pairs from OtherPatientIDsSequence, when the source returned it."""
    matched_by: MatchedBy | None = None
    """Set by the engine: which identifier this record was found with."""
    cached_at: dt.datetime | None = None
    """When the source gave this answer, for a record served from the cache."""
    warnings: tuple[str, ...] = ()

    @property
    def patient_pn(self) -> str | None:
        """The whole patient name as a DICOM PN string, every group: ``Yamada^Tarou=山田^太郎=やまだ^たろう``."""
        if self.patient_name_groups is None:
            return self.patient_name
        return "=".join(self.patient_name_groups).rstrip("=")

    @property
    def name_groups(self) -> PersonNameGroups | None:
        """The patient name's component groups, for clients."""
        if self.patient_name_groups is None:
            return PersonNameGroups(alphabetic=self.patient_name) if self.patient_name else None
        return PersonNameGroups.of(self.patient_name_groups)

    def found_by(self, matched_by: MatchedBy) -> StudyRecord:
        """This record tagged with the identifier it was found with.

        ``model_copy(update=…)`` without its generic update path: half the cost, and the engine
        tags every record of every answer.
        """
        return self._with("matched_by", matched_by)

    def cached(self, at: dt.datetime) -> StudyRecord:
        """This record as served from the cache: ``cached_at`` set (itself when it already says so)."""
        return self if self.cached_at == at else self._with("cached_at", at)

    def _with(self, field: str, value: object) -> StudyRecord:
        """A shallow copy with one field replaced, without re-validating the others.

        What ``copy.copy`` (pydantic's ``__copy__``) makes, less its generic dispatch: no extra
        fields (``extra="forbid"``) and no private attributes to carry over.
        """
        cls = type(self)
        changed = cls.__new__(cls)
        object.__setattr__(changed, "__dict__", {**self.__dict__, field: value})
        object.__setattr__(changed, "__pydantic_extra__", None)
        object.__setattr__(changed, "__pydantic_fields_set__", {*self.__pydantic_fields_set__, field})
        object.__setattr__(changed, "__pydantic_private__", None)
        return changed


class SourceStatus(enum.StrEnum):
    """How one source's part of a query ended."""

    OK = "OK"
    TIMEOUT = "TIMEOUT"
    UNREACHABLE = "UNREACHABLE"
    ERROR = "ERROR"
    NO_IDENTIFIER = "NO_IDENTIFIER"
    """No identifier valid in this source's domain is known for the patient: not queried."""
    SKIPPED = "SKIPPED"
    """The source's circuit is open after repeated failures: not queried, no time lost."""
    NOT_CACHED = "NOT_CACHED"
    """Only the cache was asked for (freshness CACHE_ONLY) and it holds no answer of this source."""
    UNSUPPORTED = "UNSUPPORTED"
    """The query needs what this source's connector cannot do (a demographic search): not asked."""
    BUSY = "BUSY"
    """Not asked: pacsfed had no free request slot for this source (``max_concurrency``) before the
    deadline. pacsfed's own load, never held against the source's circuit breaker."""


HOSPITAL_STATUSES = frozenset({SourceStatus.TIMEOUT, SourceStatus.UNREACHABLE, SourceStatus.ERROR})
"""The statuses a connector's failure ends in: the hospital's. Every other one but OK (BUSY above
all: pacsfed's own load) is pacsfed's decision, taken before or instead of asking the source."""


def status_of_failure(exc: ConnectorError) -> SourceStatus:
    """The status a connector's failure is reported as (one of :data:`HOSPITAL_STATUSES`)."""
    if isinstance(exc, SourceTimeout):
        return SourceStatus.TIMEOUT
    return SourceStatus.UNREACHABLE if isinstance(exc, SourceUnreachable) else SourceStatus.ERROR


class Freshness(enum.StrEnum):
    """How much a query may rely on the cache."""

    CACHE_ONLY = "CACHE_ONLY"
    CACHE_THEN_REFRESH = "CACHE_THEN_REFRESH"
    LIVE = "LIVE"


class SourceInfo(_Frozen):
    """What a client may know about a configured source."""

    id: str
    name: str
    kind: str
    viewer_template: str | None = None
    """The source's ``viewer_url`` template (configuration), filled in per location by the merge."""
    supports_reports: bool = False
    """Its connector reads reports (``Connector.supports_reports``): what the merge's report availability knows."""


class SourceOutcome(_Frozen):
    """One source's status in one query: the partial-result contract."""

    source: SourceInfo
    status: SourceStatus
    latency_ms: int
    exam_count: int = 0
    error: str | None = None
    warnings: tuple[str, ...] = ()
    cached: bool = False
    """The answer came from the cache (see ``cached_at``), not from the source just now."""
    cached_at: dt.datetime | None = None
    stale_cached_at: dt.datetime | None = None
    """The source did not answer now (skipped, busy or failing; ``status`` says which): its exams
    are an older cached answer, given at this time."""


class ExamLocation(_Frozen):
    """Where one exam can be found: one source and how to fetch it there."""

    source: SourceInfo
    patient_id: str | None = None
    issuer_of_patient_id: str | None = None
    accession_number: str | None = None
    retrieve_url: str | None = None
    retrieve_ae_title: str | None = None
    matched_by: MatchedBy | None = None
    cached_at: dt.datetime | None = None
    """Set when this location came from the cache: when the source said so."""
    viewer_url: str | None = None
    """This exam in the source's viewer (its ``viewer_url`` filled in); None without one or a needed value."""
    patient_name: str | None = None
    """The patient as this source records them: its PN (first non-empty group), birth date and sex,
    so that a client can show who the history is of, and where the sources disagree."""
    patient_birth_date: dt.date | None = None
    patient_sex: str | None = None


class ReportAvailability(enum.StrEnum):
    """What the search already says of an exam's report, without reading it (reading is costly and audited)."""

    LIKELY = "LIKELY"
    """A location's source reads reports and the study lists a report series (SR or DOC)."""
    UNKNOWN = "UNKNOWN"
    """A location's source reads reports, but the study lists none: only opening the report tells."""
    UNSUPPORTED = "UNSUPPORTED"
    """No location's source reads reports."""


class Exam(_Frozen):
    """One study (one StudyInstanceUID) merged across every source that holds it."""

    study_instance_uid: str
    study_date: dt.date | None = None
    study_time: dt.time | None = None
    modalities: tuple[str, ...] = ()
    description: str | None = None
    accession_number: str | None = None
    patient_name: str | None = None
    patient_name_groups: PersonNameGroups | None = None
    patient_birth_date: dt.date | None = None
    patient_sex: str | None = None
    referring_physician_name: str | None = None
    number_of_series: int | None = None
    number_of_instances: int | None = None
    locations: tuple[ExamLocation, ...] = ()
    report_availability: ReportAvailability = ReportAvailability.UNSUPPORTED
    """Set by the merge from the locations' sources and the modalities; no source is asked."""
    cached_at: dt.datetime | None = None
    """Set when every location came from the cache: the newest of their answers' times."""


class CacheStatus(enum.StrEnum):
    """Whether this answer reached the exam cache."""

    OK = "OK"
    PENDING = "PENDING"
    """The write had not finished when the answer was sent; it goes on in the background."""
    UNAVAILABLE = "UNAVAILABLE"
    DISABLED = "DISABLED"


class Candidate(_Frozen):
    """Another patient record that may be the same person: shown apart, never merged."""

    score: float
    reasons: tuple[str, ...]
    source: SourceInfo
    patient_id: str | None = None
    issuer_of_patient_id: str | None = None
    patient_name: str | None = None
    patient_name_groups: PersonNameGroups | None = None
    birth_date: dt.date | None = None
    sex: str | None = None
    exams: tuple[Exam, ...] = ()


class PatientHistory(_Frozen):
    """The answer to one patient query: merged exams and every source's status."""

    complete: bool
    exams: tuple[Exam, ...]
    sources: tuple[SourceOutcome, ...]
    candidates: tuple[Candidate, ...] = ()
    cache_status: CacheStatus = CacheStatus.DISABLED
    cache_error: str | None = None
    elapsed_ms: int = 0
    warnings: tuple[str, ...] = ()
    """Query-level warnings (e.g. the identity store was unavailable)."""

    @property
    def partial(self) -> bool:
        """True when at least one queried source did not answer."""
        return not self.complete


class SeriesQuery(_Frozen):
    """The series of one study at one source (PS3.4 C.6.2.1 SERIES level; QIDO-RS ``/studies/{uid}/series``)."""

    study_instance_uid: str
    series_instance_uid: str | None = None
    modality: str | None = None
    patient_id: str | None = None
    """Sent with its issuer, when known, as a Patient Root query needs it (the Study Root one does not)."""
    issuer_of_patient_id: str | None = None


class SeriesRecord(_Frozen):
    """One series as one source reported it."""

    source_id: str
    study_instance_uid: str
    series_instance_uid: str
    modality: str | None = None
    series_number: int | None = None
    series_description: str | None = None
    series_date: dt.date | None = None
    series_time: dt.time | None = None
    body_part_examined: str | None = None
    number_of_instances: int | None = None
    retrieve_url: str | None = None
    retrieve_ae_title: str | None = None
    specific_character_set: tuple[str, ...] = ()


class InstanceQuery(_Frozen):
    """The instances of one series at one source (PS3.4 C.6.2.1 IMAGE level; QIDO-RS ``…/series/{uid}/instances``)."""

    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str | None = None


class InstanceRecord(_Frozen):
    """One instance (image, report, document) as one source reported it."""

    source_id: str
    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    sop_class_uid: str | None = None
    instance_number: int | None = None
    rows: int | None = None
    columns: int | None = None
    number_of_frames: int | None = None
    retrieve_url: str | None = None
    retrieve_ae_title: str | None = None
    specific_character_set: tuple[str, ...] = ()
