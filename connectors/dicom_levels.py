"""Below the study: the series and instance keys a query asks for, and their answers read into records.

SERIES and IMAGE level of the Study Root information model (PS3.4 C.6.2.1.2), as C-FIND
identifiers (a pydicom ``Dataset``, read with :class:`connectors.normalize.DatasetReader` for its
character set) and as QIDO-RS answers (the DICOM JSON model, PS3.18 F.2). Like the study reader,
nothing here raises on a bad value: it becomes None and a warning without patient data.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset

from connectors.dicom_values import parse_da, parse_is, parse_tm, unique
from connectors.normalize import DatasetReader
from federation.models import InstanceQuery, InstanceRecord, SeriesQuery, SeriesRecord

__all__ = [
    "INSTANCE_RETURN_KEYWORDS",
    "SERIES_RETURN_KEYWORDS",
    "instance_identifier",
    "instance_record_from_dataset",
    "instance_record_from_json",
    "series_identifier",
    "series_record_from_dataset",
    "series_record_from_json",
]

SERIES_RETURN_KEYWORDS = (
    "SpecificCharacterSet",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "Modality",
    "SeriesNumber",
    "SeriesDescription",
    "SeriesDate",
    "SeriesTime",
    "BodyPartExamined",
    "NumberOfSeriesRelatedInstances",
    "RetrieveAETitle",
)
"""SERIES-level return keys (PS3.4 C.6.1.1.4; QIDO-RS series attributes, PS3.18 Table 10.6.3-4)."""
INSTANCE_RETURN_KEYWORDS = (
    "SpecificCharacterSet",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SOPInstanceUID",
    "SOPClassUID",
    "InstanceNumber",
    "Rows",
    "Columns",
    "NumberOfFrames",
    "RetrieveAETitle",
)
"""IMAGE-level return keys (PS3.4 C.6.1.1.5; QIDO-RS instance attributes, PS3.18 Table 10.6.3-5)."""
_US_KEYWORDS = frozenset({"Rows", "Columns"})


def series_identifier(query: SeriesQuery, *, patient_root: bool) -> Dataset:
    """The SERIES-level C-FIND identifier: the study's UID as unique key, the rest return or matching keys.

    A Patient Root query also names the patient (PS3.4 C.6.1.1.2: unique keys of every level above).
    """
    identifier = _identifier("SERIES", SERIES_RETURN_KEYWORDS)
    identifier.StudyInstanceUID = query.study_instance_uid
    if query.series_instance_uid is not None:
        identifier.SeriesInstanceUID = query.series_instance_uid
    if query.modality is not None:
        identifier.Modality = query.modality
    if patient_root:
        identifier.PatientID = query.patient_id or ""
    return identifier


def instance_identifier(query: InstanceQuery, *, patient_id: str | None = None) -> Dataset:
    """The IMAGE-level C-FIND identifier: study and series UIDs as unique keys (``patient_id`` for Patient Root)."""
    identifier = _identifier("IMAGE", INSTANCE_RETURN_KEYWORDS)
    identifier.StudyInstanceUID = query.study_instance_uid
    identifier.SeriesInstanceUID = query.series_instance_uid
    if query.sop_instance_uid is not None:
        identifier.SOPInstanceUID = query.sop_instance_uid
    if patient_id is not None:
        identifier.PatientID = patient_id
    return identifier


def _identifier(level: str, keywords: tuple[str, ...]) -> Dataset:
    identifier = Dataset()
    identifier.QueryRetrieveLevel = level
    for keyword in keywords[1:]:  # no SpecificCharacterSet: every key sent is ASCII
        if keyword in _US_KEYWORDS:
            setattr(identifier, keyword, None)
        else:
            setattr(identifier, keyword, "")
    return identifier


class _JsonValues:
    """The values of one DICOM JSON object, by keyword, as the dataset reader gives them."""

    def __init__(self, item: dict[str, Any], warnings: list[str]) -> None:
        self.item = item
        self.warnings = warnings

    def strings(self, keyword: str) -> tuple[str, ...]:
        element = self.item.get(f"{tag_for_keyword(keyword):08X}")
        values = element.get("Value") if isinstance(element, dict) else None
        if not isinstance(values, list):
            return ()
        return unique(str(v).strip() for v in values if isinstance(v, str | int | float))

    def first(self, keyword: str) -> str | None:
        found = self.strings(keyword)
        return found[0] if found else None

    def text(self, keyword: str) -> str | None:
        return "\\".join(self.strings(keyword)) or None

    def integer(self, keyword: str) -> int | None:
        parsed: int | None = self._parsed(keyword, parse_is)
        return parsed

    def date(self, keyword: str) -> Any:
        return self._parsed(keyword, parse_da)

    def time(self, keyword: str) -> Any:
        return self._parsed(keyword, parse_tm)

    def _parsed(self, keyword: str, parse: Callable[[str], Any]) -> Any:
        text = self.first(keyword)
        if text is None:
            return None
        parsed = parse(text)
        if parsed is None:
            self.warnings.append(f"{keyword}: invalid value")
        return parsed


class _DatasetValues:
    """The dataset reader, with integers of binary VRs (US) read as they are."""

    def __init__(self, dataset: Dataset) -> None:
        self.reader = DatasetReader(dataset)
        self.dataset = dataset
        self.warnings = self.reader.warnings

    def strings(self, keyword: str) -> tuple[str, ...]:
        return self.reader.strings(keyword)

    def first(self, keyword: str) -> str | None:
        return self.reader.first(keyword)

    def text(self, keyword: str) -> str | None:
        return self.reader.text(keyword)

    def integer(self, keyword: str) -> int | None:
        if keyword in _US_KEYWORDS:
            value = self.dataset.get(keyword)
            return value if isinstance(value, int) else None
        return self.reader.integer(keyword)

    def date(self, keyword: str) -> Any:
        return self.reader.date(keyword)

    def time(self, keyword: str) -> Any:
        return self.reader.time(keyword)


_Values = _JsonValues | _DatasetValues


def _series(read: _Values, source_id: str, retrieve_ae: str | None) -> SeriesRecord | None:
    study, series = read.first("StudyInstanceUID"), read.first("SeriesInstanceUID")
    if not study or not series:
        return None
    return SeriesRecord(
        source_id=source_id,
        study_instance_uid=study,
        series_instance_uid=series,
        modality=read.first("Modality"),
        series_number=read.integer("SeriesNumber"),
        series_description=read.text("SeriesDescription"),
        series_date=read.date("SeriesDate"),
        series_time=read.time("SeriesTime"),
        body_part_examined=read.first("BodyPartExamined"),
        number_of_instances=read.integer("NumberOfSeriesRelatedInstances"),
        retrieve_url=read.first("RetrieveURL") if isinstance(read, _JsonValues) else None,
        retrieve_ae_title=read.first("RetrieveAETitle") or retrieve_ae,
        specific_character_set=read.strings("SpecificCharacterSet"),
    )


def _instance(read: _Values, source_id: str, retrieve_ae: str | None) -> InstanceRecord | None:
    study, series, sop = (
        read.first("StudyInstanceUID"),
        read.first("SeriesInstanceUID"),
        read.first("SOPInstanceUID"),
    )
    if not study or not series or not sop:
        return None
    return InstanceRecord(
        source_id=source_id,
        study_instance_uid=study,
        series_instance_uid=series,
        sop_instance_uid=sop,
        sop_class_uid=read.first("SOPClassUID"),
        instance_number=read.integer("InstanceNumber"),
        rows=read.integer("Rows"),
        columns=read.integer("Columns"),
        number_of_frames=read.integer("NumberOfFrames"),
        retrieve_url=read.first("RetrieveURL") if isinstance(read, _JsonValues) else None,
        retrieve_ae_title=read.first("RetrieveAETitle") or retrieve_ae,
        specific_character_set=read.strings("SpecificCharacterSet"),
    )


def series_record_from_dataset(
    dataset: Dataset, source_id: str, warnings: list[str], default_retrieve_ae: str | None = None
) -> SeriesRecord | None:
    """A SERIES-level C-FIND answer as a record; None without its UIDs. Problems go to ``warnings``."""
    read = _DatasetValues(dataset)
    record = _series(read, source_id, default_retrieve_ae)
    warnings.extend(read.warnings)
    return record


def instance_record_from_dataset(
    dataset: Dataset, source_id: str, warnings: list[str], default_retrieve_ae: str | None = None
) -> InstanceRecord | None:
    """An IMAGE-level C-FIND answer as a record; None without its UIDs. Problems go to ``warnings``."""
    read = _DatasetValues(dataset)
    record = _instance(read, source_id, default_retrieve_ae)
    warnings.extend(read.warnings)
    return record


def series_record_from_json(item: Any, source_id: str, warnings: list[str]) -> SeriesRecord | None:
    """A QIDO-RS series object as a record; None when it is not one or lacks its UIDs."""
    if not isinstance(item, dict):
        warnings.append("a QIDO answer item is not a JSON object")
        return None
    return _series(_JsonValues(item, warnings), source_id, None)


def instance_record_from_json(item: Any, source_id: str, warnings: list[str]) -> InstanceRecord | None:
    """A QIDO-RS instance object as a record; None when it is not one or lacks its UIDs."""
    if not isinstance(item, dict):
        warnings.append("a QIDO answer item is not a JSON object")
        return None
    return _instance(_JsonValues(item, warnings), source_id, None)
