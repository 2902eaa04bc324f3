"""Found studies, series and instances in the DICOM JSON model (PS3.18 F.2), as QIDO-RS answers them.

Each object carries every attribute PS3.18 10.6.3.3 lists for its level that pacsfed reads
(empty, without ``Value``, when no source gave it: dcmqrscp gives no ModalitiesInStudy), and a
RetrieveURL (0008,1190) pointing at pacsfed's own ``/dicom-web`` (viewers retrieve through pacsfed).
A study's InstitutionName (0008,0080) names the hospitals holding it.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from federation.models import PersonNameGroups
from federation.search import InstanceMatch, SeriesMatch, StudyMatch

__all__ = ["instance_json", "series_json", "study_json"]

_UTF8 = {"00080005": {"vr": "CS", "Value": ["ISO_IR 192"]}}


def _put(item: dict[str, Any], tag: str, vr: str, value: Any, *, optional: bool = False) -> None:
    """The attribute, empty when ``value`` is unknown (left out instead when ``optional``)."""
    if value is None or value == "" or value == ():
        if not optional:
            item[tag] = {"vr": vr}
        return
    values = list(value) if isinstance(value, tuple | list) else [value]
    item[tag] = {"vr": vr, "Value": values}


def _da(value: dt.date | None) -> str | None:
    return value.strftime("%Y%m%d") if value is not None else None


def _tm(value: dt.time | None) -> str | None:
    return value.strftime("%H%M%S") if value is not None else None


def _pn(groups: PersonNameGroups | None, plain: str | None) -> dict[str, str] | None:
    if groups is None:
        return {"Alphabetic": plain} if plain else None
    found = {"Alphabetic": groups.alphabetic, "Ideographic": groups.ideographic, "Phonetic": groups.phonetic}
    return {key: value for key, value in found.items() if value} or None


def study_json(match: StudyMatch, base: str) -> dict[str, Any]:
    """One found study; ``base`` is pacsfed's DICOMweb root (``…/dicom-web``)."""
    exam = match.exam
    item: dict[str, Any] = dict(_UTF8)
    _put(item, "00080020", "DA", _da(exam.study_date))
    _put(item, "00080030", "TM", _tm(exam.study_time))
    _put(item, "00080050", "SH", exam.accession_number)
    _put(item, "00080061", "CS", exam.modalities)
    names = ", ".join(dict.fromkeys(loc.source.name for loc in exam.locations))
    _put(item, "00080080", "LO", names, optional=True)
    _put(
        item,
        "00080090",
        "PN",
        {"Alphabetic": exam.referring_physician_name} if exam.referring_physician_name else None,
    )
    _put(item, "00081030", "LO", exam.description)
    _put(item, "00081190", "UR", f"{base}/studies/{exam.study_instance_uid}")
    _put(item, "00100010", "PN", _pn(exam.patient_name_groups, exam.patient_name))
    _put(item, "00100020", "LO", match.patient_id)
    _put(item, "00100021", "LO", match.issuer_of_patient_id, optional=True)
    _put(item, "00100030", "DA", _da(exam.patient_birth_date))
    _put(item, "00100040", "CS", exam.patient_sex)
    _put(item, "0020000D", "UI", exam.study_instance_uid)
    _put(item, "00200010", "SH", None)  # StudyID: not kept by pacsfed (each hospital numbers its own)
    _put(item, "00201206", "IS", exam.number_of_series)
    _put(item, "00201208", "IS", exam.number_of_instances)
    return item


def series_json(match: SeriesMatch, base: str) -> dict[str, Any]:
    """One found series."""
    record = match.record
    number = next((r.number_of_instances for r in match.records if r.number_of_instances is not None), None)
    item: dict[str, Any] = dict(_UTF8)
    _put(item, "00080021", "DA", _da(record.series_date))
    _put(item, "00080031", "TM", _tm(record.series_time), optional=True)
    _put(item, "00080060", "CS", record.modality)
    _put(item, "0008103E", "LO", record.series_description)
    path = f"{base}/studies/{record.study_instance_uid}/series/{record.series_instance_uid}"
    _put(item, "00081190", "UR", path)
    _put(item, "00180015", "CS", record.body_part_examined, optional=True)
    _put(item, "0020000D", "UI", record.study_instance_uid)
    _put(item, "0020000E", "UI", record.series_instance_uid)
    _put(item, "00200011", "IS", record.series_number)
    _put(item, "00201209", "IS", number)
    return item


def instance_json(match: InstanceMatch, base: str) -> dict[str, Any]:
    """One found instance."""
    record = match.record
    item: dict[str, Any] = dict(_UTF8)
    _put(item, "00080016", "UI", record.sop_class_uid)
    _put(item, "00080018", "UI", record.sop_instance_uid)
    path = (
        f"{base}/studies/{record.study_instance_uid}/series/{record.series_instance_uid}"
        f"/instances/{record.sop_instance_uid}"
    )
    _put(item, "00081190", "UR", path)
    _put(item, "0020000D", "UI", record.study_instance_uid)
    _put(item, "0020000E", "UI", record.series_instance_uid)
    _put(item, "00200013", "IS", record.instance_number)
    _put(item, "00280008", "IS", record.number_of_frames)
    _put(item, "00280010", "US", record.rows)
    _put(item, "00280011", "US", record.columns)
    return item
