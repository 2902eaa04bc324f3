"""The DICOM JSON reader as it was before the one reader (commit 120b5fc), frozen as the baseline of bench.reader.

A verbatim copy of ``connectors/dicom_json.py`` and the three helpers it took from
``connectors/normalize.py``; do not change it, it is what the current reader is timed against.
"""

from __future__ import annotations

import datetime as dt
import unicodedata
from collections.abc import Sequence
from typing import Any, Final

from federation.models import StudyRecord


def beyond_alphabetic(groups: Sequence[str]) -> tuple[str, str, str] | None:
    """(Alphabetic, Ideographic, Phonetic) when the name has an Ideographic or Phonetic group, else None."""
    if not any(groups[1:3]):
        return None
    padded = (*groups, "", "")
    return padded[0], padded[1], padded[2]


def parse_da(text: str) -> dt.date | None:
    """A DA value (``YYYYMMDD``, or the ACR-NEMA ``YYYY.MM.DD``) as a date, or None."""
    digits = text.strip().replace(".", "").replace("-", "")
    if len(digits) != 8 or not digits.isdigit():
        return None
    try:
        return dt.date(int(digits[:4]), int(digits[4:6]), int(digits[6:8]))
    except ValueError:
        return None


def parse_tm(text: str) -> dt.time | None:
    """A TM value (``HH[MM[SS[.F{1,6}]]]``, or ``HH:MM:SS``) as a time, or None."""
    text = text.strip().replace(":", "")
    whole, _, fraction = text.partition(".")
    if not whole.isdigit() or len(whole) not in (2, 4, 6) or (fraction and not fraction.isdigit()):
        return None
    hour, minute, second = int(whole[:2]), int(whole[2:4] or 0), int(whole[4:6] or 0)
    micro = int((fraction + "000000")[:6]) if fraction else 0
    try:
        # PS3.5 allows a leap second (60); clamp it rather than reject the study.
        return dt.time(hour, minute, min(second, 59), micro)
    except ValueError:
        return None


_PN_GROUPS = ("Alphabetic", "Ideographic", "Phonetic")
_EXACT = 2**53
"""Integers up to this are exact as floats: ``int(float(str(n)))`` is ``n``."""
_MISSING: Final = object()


def _nfc(text: str) -> str:
    """NFC (PS3.18 F.2 text is Unicode); ASCII text, most of it, is NFC already."""
    return text if text.isascii() else unicodedata.normalize("NFC", text)


class MalformedObject(ValueError):
    """A DICOM JSON object that does not follow PS3.18 F.2."""


class _JsonReader:
    """Any attribute of one object, whatever its shape: the general path, and the reference for the fast one."""

    def __init__(self, item: dict[str, Any], warnings: list[str]) -> None:
        self.item = item
        self.warnings = warnings

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
        """The non-empty values as text, NFC and stripped, each once."""
        found = []
        for value in self._values(tag, keyword):
            if isinstance(value, str | int | float) and not isinstance(value, bool):
                text = _nfc(str(value)).strip()
                if text:
                    found.append(text)
            elif value is not None:
                self.warnings.append(f"{keyword}: invalid value")
        return tuple(dict.fromkeys(found))

    def first(self, tag: str, keyword: str) -> str | None:
        """The first of ``strings``."""
        found = self.strings(tag, keyword)
        return found[0] if found else None

    def text(self, tag: str, keyword: str) -> str | None:
        """The values joined with backslashes, as DICOM writes a multi-valued attribute."""
        attribute = self.item.get(tag)
        if attribute is None:
            return None
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

    def person_name_groups(self, tag: str, keyword: str) -> tuple[str, ...]:
        """The groups (Alphabetic, Ideographic, Phonetic) of the first value holding a name, NFC, at most three."""
        for value in self._values(tag, keyword):
            if isinstance(value, dict):
                groups: list[Any] = [value.get(group) for group in _PN_GROUPS]
            elif isinstance(value, str):
                groups = [value]  # some servers send the PN string form
            else:
                self.warnings.append(f"{keyword}: invalid value")
                continue
            # A group holding '=' is a whole PN string put in one group: its parts are the groups.
            parts = [
                part for group in groups for part in (group.split("=") if isinstance(group, str) else [""])
            ]
            names = [_nfc(part.strip()).rstrip("^ ") for part in parts[:3]]
            names = [name if name.strip("^ ") else "" for name in names]
            if any(names):
                return tuple(names)
        return ()

    def date(self, tag: str, keyword: str) -> dt.date | None:
        """A DA value; a warning when it does not parse."""
        text = self.text(tag, keyword)
        parsed = parse_da(text) if text else None
        if text and parsed is None:
            self.warnings.append(f"{keyword}: invalid value")
        return parsed

    def time(self, tag: str, keyword: str) -> dt.time | None:
        """A TM value; a warning when it does not parse."""
        text = self.text(tag, keyword)
        parsed = parse_tm(text) if text else None
        if text and parsed is None:
            self.warnings.append(f"{keyword}: invalid value")
        return parsed

    def integer(self, tag: str, keyword: str) -> int | None:
        """An IS value, from a JSON number or a numeric string; a warning when it is neither."""
        attribute = self.item.get(tag)
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
        """The (issuer, id) pairs of OtherPatientIDsSequence."""
        found: list[tuple[str | None, str]] = []
        for item in self._values("00101002", "OtherPatientIDsSequence"):
            if not isinstance(item, dict):
                raise MalformedObject("OtherPatientIDsSequence item is not a JSON object")
            child = _JsonReader(item, self.warnings)
            value = child.text("00100020", "PatientID")
            if value:
                found.append((child.text("00100021", "IssuerOfPatientID"), value))
        return tuple(found)


# How each attribute is read, and the order it is read in by the general path (warnings keep that order,
# and the first broken attribute is the one reported). The fast path reads the kinds up to _TIME alike.
_TEXT, _FIRST, _STRINGS, _DATE, _TIME, _INTEGER, _NAME = range(7)
_ATTRIBUTES: Final = (
    ("00080054", "RetrieveAETitle", "retrieve_ae_title", _FIRST),
    ("00100020", "PatientID", "patient_id", _TEXT),
    ("00100021", "IssuerOfPatientID", "issuer_of_patient_id", _TEXT),
    ("00100010", "PatientName", "patient_name", _NAME),
    ("00100030", "PatientBirthDate", "patient_birth_date", _DATE),
    ("00100040", "PatientSex", "patient_sex", _TEXT),
    ("00080020", "StudyDate", "study_date", _DATE),
    ("00080030", "StudyTime", "study_time", _TIME),
    ("00080050", "AccessionNumber", "accession_number", _TEXT),
    ("00080061", "ModalitiesInStudy", "modalities", _STRINGS),
    ("00081030", "StudyDescription", "description", _TEXT),
    ("00080090", "ReferringPhysicianName", "referring_physician_name", _NAME),
    ("00201206", "NumberOfStudyRelatedSeries", "number_of_series", _INTEGER),
    ("00201208", "NumberOfStudyRelatedInstances", "number_of_instances", _INTEGER),
    ("00081190", "RetrieveURL", "retrieve_url", _TEXT),
    ("00080005", "SpecificCharacterSet", "specific_character_set", _STRINGS),
)
_GENERAL: Final = (
    _JsonReader.text,
    _JsonReader.first,
    _JsonReader.strings,
    _JsonReader.date,
    _JsonReader.time,
    _JsonReader.integer,
    _JsonReader.person_name,
)
_TEXTS: Final = (
    ("0020000D", "study_instance_uid"),
    *((tag, field) for tag, _, field, kind in _ATTRIBUTES if kind == _TEXT),
)
_SEVERAL: Final = tuple(
    (tag, field, kind) for tag, _, field, kind in _ATTRIBUTES if _FIRST <= kind <= _STRINGS
)
_DATES: Final = tuple((tag, field, kind) for tag, _, field, kind in _ATTRIBUTES if _DATE <= kind <= _TIME)
_INTEGERS: Final = tuple((tag, field) for tag, _, field, kind in _ATTRIBUTES if kind == _INTEGER)
_NAMES: Final = tuple((tag, field) for tag, _, field, kind in _ATTRIBUTES if kind == _NAME)


def _strings(values: list[Any]) -> tuple[str, ...] | None:
    """String values, NFC and stripped, the empty ones left out, each once; None unless all are strings."""
    found = []
    for value in values:
        if type(value) is not str:
            return None
        text = _nfc(value).strip()
        if text:
            found.append(text)
    return tuple(dict.fromkeys(found))


def _usual_fields(item: dict[str, Any], source_id: str) -> dict[str, Any] | None:
    """The record's fields when every attribute has its usual shape, else None for ``_read_fields``.

    This path never warns nor raises: an object that would make it is read again by the general path,
    in order. It reads one kind of attribute at a time, without a test of the kind for each. Only what
    the object holds is set: the model fills in a default faster than it validates one.
    """
    if "00101002" in item:
        return None  # OtherPatientIDsSequence, rare in a QIDO answer
    fields: dict[str, Any] = {"source_id": source_id}
    get = item.get
    for tag, field in _TEXTS:
        attribute = get(tag)
        if attribute is None:
            continue
        values = attribute.get("Value") if type(attribute) is dict else _MISSING
        if type(values) is list and len(values) == 1 and type(value := values[0]) is str:
            text = (value if value.isascii() else unicodedata.normalize("NFC", value)).strip()
            if text:
                fields[field] = text
        elif values is not None or "Value" in attribute:  # no Value: asked for but empty, as QIDO sends it
            found = _strings(values) if type(values) is list else None
            if found is None:
                return None
            if found:
                fields[field] = "\\".join(found)
    for tag, field, kind in _SEVERAL:
        attribute = get(tag)
        if attribute is None:
            continue
        values = attribute.get("Value") if type(attribute) is dict else _MISSING
        if type(values) is list and len(values) == 1 and type(value := values[0]) is str:
            text = (value if value.isascii() else unicodedata.normalize("NFC", value)).strip()
            if text:
                fields[field] = (text,) if kind == _STRINGS else text
        elif values is not None or "Value" in attribute:
            found = _strings(values) if type(values) is list else None
            if found is None:
                return None
            if found:
                fields[field] = found[0] if kind == _FIRST else found
    for tag, field, kind in _DATES:
        attribute = get(tag)
        if attribute is None:
            continue
        values = attribute.get("Value") if type(attribute) is dict else _MISSING
        if type(values) is list and len(values) == 1 and type(value := values[0]) is str:
            if not value.isascii():
                return None
            text = value.strip()
            if not text:
                continue
            parsed: dt.date | dt.time | None = None
            if text.isdigit() and len(text) == (8 if kind == _DATE else 6):
                # The usual YYYYMMDD or HHMMSS, read as parse_da or parse_tm would but by the C parser.
                try:
                    parsed = dt.date.fromisoformat(text) if kind == _DATE else dt.time.fromisoformat(text)
                except ValueError:
                    parsed = None  # an impossible date, or a leap second parse_tm clamps
            if parsed is None:
                parsed = parse_da(text) if kind == _DATE else parse_tm(text)
                if parsed is None:
                    return None
            fields[field] = parsed
        elif values is not None or "Value" in attribute:
            return None
    for tag, field in _INTEGERS:
        attribute = get(tag)
        if attribute is None:
            continue
        values = attribute.get("Value") if type(attribute) is dict else _MISSING
        if type(values) is list and len(values) == 1 and type(value := values[0]) is int:
            if not -_EXACT <= value <= _EXACT:
                return None
            fields[field] = value
        elif values is not None or "Value" in attribute:
            return None
    for tag, field in _NAMES:
        attribute = get(tag)
        if attribute is None:
            continue
        values = attribute.get("Value") if type(attribute) is dict else _MISSING
        if type(values) is list and len(values) == 1 and type(value := values[0]) is dict:
            # PS3.18 F.2.2: the Alphabetic group, nearly always there, without '=' in it.
            name = value.get("Alphabetic")
            if len(value) > 1 or type(name) is not str or "=" in name:
                groups = _usual_groups(value)  # Ideographic or Phonetic groups too
                if groups is None:
                    return None
                fields[field] = next(group for group in groups if group)
                if field == "patient_name":
                    fields["patient_name_groups"] = beyond_alphabetic(groups)
                continue
            name = name.strip()
            name = (name if name.isascii() else unicodedata.normalize("NFC", name)).rstrip("^ ")
            if not name.strip("^ "):
                return None
            fields[field] = name
        elif values is not None or "Value" in attribute:
            return None
    return fields


def _usual_groups(value: dict[str, Any]) -> tuple[str, str, str] | None:
    """A PN object's three groups, cleaned as ``_JsonReader`` does, when each is a string without '='; else None."""
    groups = []
    for key in _PN_GROUPS:
        text = value.get(key, "")
        if type(text) is not str or "=" in text:
            return None
        text = unicodedata.normalize("NFC", text.strip()).rstrip("^ ")
        groups.append(text if text.strip("^ ") else "")
    if not any(groups) or any(key not in _PN_GROUPS for key in value):
        return None
    return groups[0], groups[1], groups[2]


def _read_fields(item: dict[str, Any], source_id: str) -> dict[str, Any] | None:
    """The record's fields, whatever the object's shape, read in order: the general path."""
    warnings: list[str] = []
    read = _JsonReader(item, warnings)
    uid = read.text("0020000D", "StudyInstanceUID")
    if uid is None:
        return None
    fields: dict[str, Any] = {"source_id": source_id, "study_instance_uid": uid}
    for tag, keyword, field, kind in _ATTRIBUTES:
        fields[field] = _GENERAL[kind](read, tag, keyword)
    fields["patient_name_groups"] = beyond_alphabetic(read.person_name_groups("00100010", "PatientName"))
    fields["other_patient_ids"] = read.other_patient_ids()
    fields["warnings"] = tuple(dict.fromkeys(warnings))
    return {field: value for field, value in fields.items() if value is not None and value != ()}


def record_from_dicom_json(item: Any, source_id: str) -> StudyRecord | None:
    """The StudyRecord of one QIDO study object; None without StudyInstanceUID; MalformedObject if broken."""
    if not isinstance(item, dict):
        raise MalformedObject("not a JSON object")
    fields = _usual_fields(item, source_id)
    if fields is None:
        fields = _read_fields(item, source_id)
    if fields is None or "study_instance_uid" not in fields:
        return None
    # model_validate without its keyword checks: measurably faster, and the same validation.
    record: StudyRecord = StudyRecord.__pydantic_validator__.validate_python(fields)
    return record
