"""What differs between the C-FIND query levels (PS3.4 C.6.2.1): how each one's answers become records.

The response loop (``_dimse_responses.read_responses``) is one for every level; a :class:`Level`
gives it the record builder, the UID that identifies a record, and the words of its warnings.
STUDY answers are many (the fan-out's hot path), so they are read from their bytes when the fast
reader can; SERIES and IMAGE answers are few (a study's series, a series' instances) and go
through pydicom.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from operator import attrgetter
from typing import Generic, TypeVar

from pydicom.dataset import Dataset

from connectors.dicom_levels import instance_record_from_dataset, series_record_from_dataset
from connectors.normalize import study_record_from_bytes, study_record_from_dataset
from federation.models import InstanceRecord, SeriesRecord, StudyRecord

R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class Level(Generic[R]):
    """How one level's pending responses become records; made once per connector."""

    from_dataset: Callable[[Dataset, list[str]], R | None]
    """A decoded identifier as a record, None without its UIDs; its problems go to the list."""
    key: Callable[[R], str]
    """The UID a record is known by: a peer repeating it replaces its earlier answer."""
    noun: str
    """What the records are called in the warning at max_results ("stopped after 50 studies")."""
    without_uid: str
    """The warning for a response that carries no UID."""
    from_bytes: Callable[[bytes, bool, list[str]], R | None] | None = None
    """The same record read from little endian bytes (implicit VR or not) without pydicom;
    raises ``Unhandled`` when it cannot read them exactly as pydicom would."""


def study_level(source_id: str, called_ae: str) -> Level[StudyRecord]:
    """STUDY level: StudyRecords keyed by StudyInstanceUID, read by the fast reader when it can."""

    def from_bytes(data: bytes, implicit_vr: bool, warnings: list[str]) -> StudyRecord | None:
        record = study_record_from_bytes(data, implicit_vr, source_id, default_retrieve_ae=called_ae)
        if record is not None:
            warnings.extend(record.warnings)
        return record

    def from_dataset(dataset: Dataset, warnings: list[str]) -> StudyRecord | None:
        record = study_record_from_dataset(dataset, source_id, default_retrieve_ae=called_ae)
        if record is not None:
            warnings.extend(record.warnings)
        return record

    return Level(
        from_dataset,
        attrgetter("study_instance_uid"),
        "studies",
        "a response without StudyInstanceUID was ignored",
        from_bytes,
    )


def series_level(source_id: str, called_ae: str) -> Level[SeriesRecord]:
    """SERIES level: SeriesRecords keyed by SeriesInstanceUID."""

    def from_dataset(dataset: Dataset, warnings: list[str]) -> SeriesRecord | None:
        return series_record_from_dataset(dataset, source_id, warnings, called_ae)

    return Level(
        from_dataset, attrgetter("series_instance_uid"), "answers", "a response without its UIDs was ignored"
    )


def instance_level(source_id: str, called_ae: str) -> Level[InstanceRecord]:
    """IMAGE level: InstanceRecords keyed by SOPInstanceUID."""

    def from_dataset(dataset: Dataset, warnings: list[str]) -> InstanceRecord | None:
        return instance_record_from_dataset(dataset, source_id, warnings, called_ae)

    return Level(
        from_dataset, attrgetter("sop_instance_uid"), "answers", "a response without its UIDs was ignored"
    )
