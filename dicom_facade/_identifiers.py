"""Response identifiers (PS3.4 C.4.1.1.3.2): a merged study, series or instance as the caller's keys ask for it.

Only the keys the request named come back, with the unique keys of the level and its parents
(PS3.4 C.6.2.1.4, C.6.1.1.4), QueryRetrieveLevel, and two additions pacsfed always makes:
RetrieveAETitle (0008,0054; the holding sources' AEs) and InstitutionName (0008,0080; the
holding hospitals' names), each multi-valued (backslash-separated) when several hold the study.
A key pacsfed does not know comes back empty (zero length), as PS3.4 C.2.2.1.2 allows.

The answer is written in the character set the request named (SpecificCharacterSet); when a
value cannot be written in it, that one response declares UTF-8 (ISO_IR 192) instead, rather
than losing letters or sending ``?``, a wildcard in DICOM.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from connectors.dimse_protocol import encodable
from federation.models import Exam, InstanceRecord, PersonNameGroups, SeriesRecord
from federation.search import InstanceMatch, SeriesMatch, StudyMatch

UTF8 = "ISO_IR 192"
_ALWAYS = ("RetrieveAETitle", "InstitutionName")
_NOT_RETURNED = frozenset({"QueryRetrieveLevel", "SpecificCharacterSet", *_ALWAYS})


def asked_keys(identifier: Dataset) -> list[str]:
    """The request's keys (keywords) besides the level and character set; sequences are not answered."""
    keys = []
    for element in identifier:
        keyword = element.keyword
        if keyword and keyword not in _NOT_RETURNED and element.VR != "SQ" and element.tag.group != 0x0000:
            keys.append(keyword)
    return keys


def character_set(identifier: Dataset) -> list[str]:
    """The request's SpecificCharacterSet terms (empty: the default repertoire)."""
    value = identifier.get("SpecificCharacterSet")
    if value is None or value == "":
        return []
    terms = list(value) if isinstance(value, MultiValue | list | tuple) else [str(value)]
    return [str(t).strip() for t in terms]


def study_identifier(
    match: StudyMatch, keys: Iterable[str], charset: list[str], unique: tuple[str, ...]
) -> Dataset:
    """One pending response's identifier for a merged study."""
    exam = match.exam
    values: dict[str, Any] = {
        "PatientID": match.patient_id,
        "IssuerOfPatientID": match.issuer_of_patient_id,
        "PatientName": _person_name(exam.patient_name, exam.patient_name_groups),
        "PatientBirthDate": _da(exam.patient_birth_date),
        "PatientSex": exam.patient_sex,
        "StudyInstanceUID": exam.study_instance_uid,
        "StudyDate": _da(exam.study_date),
        "StudyTime": _tm(exam.study_time),
        "AccessionNumber": exam.accession_number or _first(loc.accession_number for loc in exam.locations),
        "StudyDescription": exam.description,
        "ModalitiesInStudy": list(exam.modalities) or None,
        "ReferringPhysicianName": exam.referring_physician_name,
        "NumberOfStudyRelatedSeries": exam.number_of_series,
        "NumberOfStudyRelatedInstances": exam.number_of_instances,
    }
    return _identifier("STUDY", values, keys, charset, unique, *_holders(exam))


def listing_identifier(
    match: SeriesMatch | InstanceMatch,
    keys: Iterable[str],
    charset: list[str],
    unique: tuple[str, ...],
    parent: Mapping[str, Any],
) -> Dataset:
    """One pending response's identifier for a merged series or instance; ``parent``: the request's upper-level unique keys."""
    record = match.record
    level, own = (
        ("IMAGE", _instance_values(record))
        if isinstance(record, InstanceRecord)
        else ("SERIES", _series_values(record))
    )
    values: dict[str, Any] = {
        **parent,
        "StudyInstanceUID": record.study_instance_uid,
        "SeriesInstanceUID": record.series_instance_uid,
        **own,
    }
    retrieve = _distinct(r.retrieve_ae_title for r in match.records)
    names = _distinct(s.name or s.id for s in match.sources)
    return _identifier(level, values, keys, charset, unique, retrieve, names)


def _series_values(record: SeriesRecord) -> dict[str, Any]:
    return {
        "Modality": record.modality,
        "SeriesNumber": record.series_number,
        "SeriesDescription": record.series_description,
        "SeriesDate": _da(record.series_date),
        "SeriesTime": _tm(record.series_time),
        "BodyPartExamined": record.body_part_examined,
        "NumberOfSeriesRelatedInstances": record.number_of_instances,
    }


def _instance_values(record: InstanceRecord) -> dict[str, Any]:
    return {
        "SOPInstanceUID": record.sop_instance_uid,
        "SOPClassUID": record.sop_class_uid,
        "InstanceNumber": record.instance_number,
        "Rows": record.rows,
        "Columns": record.columns,
        "NumberOfFrames": record.number_of_frames,
    }


def _identifier(
    level: str,
    values: Mapping[str, Any],
    keys: Iterable[str],
    charset: list[str],
    unique: tuple[str, ...],
    retrieve_aes: list[str],
    institutions: list[str],
) -> Dataset:
    answer = Dataset()
    texts: list[str | None] = list(institutions)
    answer.QueryRetrieveLevel = level
    for keyword in dict.fromkeys((*unique, *keys)):
        value = values.get(keyword)
        setattr(answer, keyword, "" if value is None else value)
        if isinstance(value, str):
            texts.append(value)
    answer.RetrieveAETitle = retrieve_aes or ""
    answer.InstitutionName = institutions or ""
    term = "\\".join(charset) if charset else None
    if encodable(texts, term):
        if charset:
            answer.SpecificCharacterSet = charset if len(charset) > 1 else charset[0]
    else:
        answer.SpecificCharacterSet = UTF8
    return answer


def _holders(exam: Exam) -> tuple[list[str], list[str]]:
    """The holding sources' retrieve AEs and hospital names, configuration order, each once."""
    retrieve = _distinct(loc.retrieve_ae_title for loc in exam.locations)
    names = _distinct(loc.source.name or loc.source.id for loc in exam.locations)
    return retrieve, names


def _distinct(values: Iterable[str | None]) -> list[str]:
    return list(dict.fromkeys(v for v in values if v))


def _first(values: Iterable[str | None]) -> str | None:
    return next((v for v in values if v), None)


def _person_name(name: str | None, groups: PersonNameGroups | None) -> str | None:
    if groups is None:
        return name
    return "=".join((groups.alphabetic or "", groups.ideographic or "", groups.phonetic or "")).rstrip("=")


def _da(day: dt.date | None) -> str | None:
    return day.strftime("%Y%m%d") if day is not None else None


def _tm(time: dt.time | None) -> str | None:
    return time.strftime("%H%M%S") if time is not None else None
