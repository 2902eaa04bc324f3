"""Normalized models: the only shapes that cross the boundary between connectors, engine and front ends."""

from __future__ import annotations

import datetime as dt
import enum
import time

from pydantic import BaseModel, ConfigDict, field_validator

from federation.errors import QueryError

# PS3.5 6.2: LO is at most 64 characters; a PatientID never legitimately holds matching characters.
_MAX_ID_LENGTH = 64
_WILDCARDS = frozenset("*?\\")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


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


class PatientQuery(_Frozen):
    """Which patient to look for: a PatientID, optionally qualified by its issuer."""

    patient_id: str
    issuer: str | None = None

    @field_validator("patient_id")
    @classmethod
    def _exact_identifier(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise QueryError("patient id must not be empty", code="BAD_PATIENT_INPUT")
        if len(value) > _MAX_ID_LENGTH:
            raise QueryError("patient id is longer than 64 characters", code="BAD_PATIENT_INPUT")
        if _WILDCARDS & set(value):
            # A wildcard would match other patients: a confidentiality and a safety issue.
            raise QueryError("patient id must not contain * ? or \\", code="BAD_PATIENT_INPUT")
        return value

    @field_validator("issuer")
    @classmethod
    def _clean_issuer(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip()
        if _WILDCARDS & set(value) or len(value) > _MAX_ID_LENGTH:
            raise QueryError(
                "issuer must be a plain value of at most 64 characters", code="BAD_PATIENT_INPUT"
            )
        return value or None


class StudyRecord(_Frozen):
    """One study as one source reported it, decoded and normalized."""

    source_id: str
    study_instance_uid: str
    patient_id: str | None = None
    issuer_of_patient_id: str | None = None
    patient_name: str | None = None
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
    warnings: tuple[str, ...] = ()


class SourceStatus(enum.StrEnum):
    """How one source's part of a query ended."""

    OK = "OK"
    TIMEOUT = "TIMEOUT"
    UNREACHABLE = "UNREACHABLE"
    ERROR = "ERROR"


class SourceInfo(_Frozen):
    """What a client may know about a configured source."""

    id: str
    name: str
    kind: str


class SourceOutcome(_Frozen):
    """One source's status in one query: the partial-result contract."""

    source: SourceInfo
    status: SourceStatus
    latency_ms: int
    exam_count: int = 0
    error: str | None = None
    warnings: tuple[str, ...] = ()


class ExamLocation(_Frozen):
    """Where one exam can be found: one source and how to fetch it there."""

    source: SourceInfo
    patient_id: str | None = None
    issuer_of_patient_id: str | None = None
    accession_number: str | None = None
    retrieve_url: str | None = None
    retrieve_ae_title: str | None = None


class Exam(_Frozen):
    """One study (one StudyInstanceUID) merged across every source that holds it."""

    study_instance_uid: str
    study_date: dt.date | None = None
    study_time: dt.time | None = None
    modalities: tuple[str, ...] = ()
    description: str | None = None
    accession_number: str | None = None
    patient_name: str | None = None
    patient_birth_date: dt.date | None = None
    patient_sex: str | None = None
    referring_physician_name: str | None = None
    number_of_series: int | None = None
    number_of_instances: int | None = None
    locations: tuple[ExamLocation, ...] = ()


class CacheStatus(enum.StrEnum):
    """Whether this answer reached the exam cache."""

    OK = "OK"
    PENDING = "PENDING"
    """The write had not finished when the answer was sent; it goes on in the background."""
    UNAVAILABLE = "UNAVAILABLE"
    DISABLED = "DISABLED"


class PatientHistory(_Frozen):
    """The answer to one patient query: merged exams and every source's status."""

    complete: bool
    exams: tuple[Exam, ...]
    sources: tuple[SourceOutcome, ...]
    cache_status: CacheStatus = CacheStatus.DISABLED
    cache_error: str | None = None
    elapsed_ms: int = 0

    @property
    def partial(self) -> bool:
        """True when at least one queried source did not answer."""
        return not self.complete
