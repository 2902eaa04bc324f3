"""DICOM JSON (PS3.18 F.2) study objects read straight into StudyRecords.

Going through pydicom's ``Dataset.from_json`` cost about 1.8 ms per study, the slowest step of
a QIDO answer; reading the few attributes a study record needs from the JSON costs a few µs.
JSON text is Unicode already, so no character set applies; names are NFC-normalized.
"""

from __future__ import annotations

import unicodedata
from typing import Any

from connectors._normalize import parse_da, parse_tm
from federation.models import StudyRecord

_PN_GROUPS = ("Alphabetic", "Ideographic", "Phonetic")
_EXACT = 2**53
"""Integers up to this are exact as floats: ``int(float(str(n)))`` is ``n``."""


def _nfc(text: str) -> str:
    """NFC (PS3.18 F.2 text is Unicode); ASCII text, most of it, is NFC already."""
    return text if text.isascii() else unicodedata.normalize("NFC", text)


class MalformedObject(ValueError):
    """A DICOM JSON object that does not follow PS3.18 F.2."""


class _JsonReader:
    def __init__(self, item: dict[str, Any]) -> None:
        self.item = item
        self.warnings: list[str] = []

    def _values(self, tag: str, keyword: str) -> list[Any]:
        attribute = self.item.get(tag)
        if attribute is None:
            return []
        if not isinstance(attribute, dict):
            raise MalformedObject(f"{keyword} is not a JSON object")
        values = attribute.get("Value", [])
        if not isinstance(values, list):
            raise MalformedObject(f"{keyword} Value is not an array")
        return values

    def strings(self, tag: str, keyword: str) -> tuple[str, ...]:
        found = []
        for value in self._values(tag, keyword):
            if isinstance(value, str | int | float) and not isinstance(value, bool):
                text = _nfc(str(value)).strip()
                if text:
                    found.append(text)
            elif value is not None:
                self.warnings.append(f"{keyword}: invalid value")
        return tuple(dict.fromkeys(found))

    def text(self, tag: str, keyword: str) -> str | None:
        attribute = self.item.get(tag)
        if attribute is None:
            return None
        # Most attributes hold one string: read it without the general path's checks and copies.
        values = attribute.get("Value") if type(attribute) is dict else None
        if type(values) is list and len(values) == 1 and type(values[0]) is str:
            return _nfc(values[0]).strip() or None
        found = self.strings(tag, keyword)
        return "\\".join(found) if found else None

    def person_name(self, tag: str, keyword: str) -> str | None:
        """The first non-empty group (Alphabetic, then Ideographic, then Phonetic), NFC."""
        for value in self._values(tag, keyword):
            if isinstance(value, dict):
                groups: list[Any] = [value.get(group) for group in _PN_GROUPS]
            elif isinstance(value, str):
                groups = list(value.split("="))  # some servers send the PN string form
            else:
                self.warnings.append(f"{keyword}: invalid value")
                continue
            for group in groups:
                # A group holding '=' is a whole PN string put in one group: keep its first part.
                for part in group.split("=") if isinstance(group, str) else ():
                    name = _nfc(part.strip()).rstrip("^ ")
                    if name.strip("^ "):
                        return name
        return None

    def date(self, tag: str, keyword: str) -> Any:
        text = self.text(tag, keyword)
        parsed = parse_da(text) if text else None
        if text and parsed is None:
            self.warnings.append(f"{keyword}: invalid value")
        return parsed

    def time(self, tag: str, keyword: str) -> Any:
        text = self.text(tag, keyword)
        parsed = parse_tm(text) if text else None
        if text and parsed is None:
            self.warnings.append(f"{keyword}: invalid value")
        return parsed

    def integer(self, tag: str, keyword: str) -> int | None:
        attribute = self.item.get(tag)
        # IS values usually come as one JSON number: an exact float's integer needs no text round trip.
        values = attribute.get("Value") if type(attribute) is dict else None
        if type(values) is list and len(values) == 1 and type(values[0]) is int and abs(values[0]) <= _EXACT:
            return values[0]
        text = self.text(tag, keyword)
        if text is None:
            return None
        try:
            return int(float(text))
        except ValueError:
            self.warnings.append(f"{keyword}: invalid value")
            return None

    def other_patient_ids(self) -> tuple[tuple[str | None, str], ...]:
        found: list[tuple[str | None, str]] = []
        for item in self._values("00101002", "OtherPatientIDsSequence"):
            if not isinstance(item, dict):
                raise MalformedObject("OtherPatientIDsSequence item is not a JSON object")
            child = _JsonReader(item)
            value = child.text("00100020", "PatientID")
            if value:
                found.append((child.text("00100021", "IssuerOfPatientID"), value))
            self.warnings.extend(child.warnings)
        return tuple(found)


def record_from_dicom_json(item: Any, source_id: str) -> StudyRecord | None:
    """The StudyRecord of one QIDO study object; None without StudyInstanceUID; MalformedObject if broken."""
    if not isinstance(item, dict):
        raise MalformedObject("not a JSON object")
    read = _JsonReader(item)
    uid = read.text("0020000D", "StudyInstanceUID")
    if uid is None:
        return None
    retrieve_ae = read.strings("00080054", "RetrieveAETitle")
    return StudyRecord(
        source_id=source_id,
        study_instance_uid=uid,
        patient_id=read.text("00100020", "PatientID"),
        issuer_of_patient_id=read.text("00100021", "IssuerOfPatientID"),
        patient_name=read.person_name("00100010", "PatientName"),
        patient_birth_date=read.date("00100030", "PatientBirthDate"),
        patient_sex=read.text("00100040", "PatientSex"),
        study_date=read.date("00080020", "StudyDate"),
        study_time=read.time("00080030", "StudyTime"),
        accession_number=read.text("00080050", "AccessionNumber"),
        modalities=read.strings("00080061", "ModalitiesInStudy"),
        description=read.text("00081030", "StudyDescription"),
        referring_physician_name=read.person_name("00080090", "ReferringPhysicianName"),
        number_of_series=read.integer("00201206", "NumberOfStudyRelatedSeries"),
        number_of_instances=read.integer("00201208", "NumberOfStudyRelatedInstances"),
        retrieve_ae_title=retrieve_ae[0] if retrieve_ae else None,
        retrieve_url=read.text("00081190", "RetrieveURL"),
        specific_character_set=read.strings("00080005", "SpecificCharacterSet"),
        other_patient_ids=read.other_patient_ids(),
        warnings=tuple(dict.fromkeys(read.warnings)),
    )
