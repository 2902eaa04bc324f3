"""The DICOM JSON adapter: QIDO-RS study objects (PS3.18 F.2) read straight into StudyRecords.

It reads the attributes of ``connectors.dicom_attributes`` with the converters of
``connectors.dicom_values``, as the pydicom ``Dataset`` adapter (``connectors.normalize``) does.
Going through pydicom's ``Dataset.from_json`` cost about 1.8 ms per study, the slowest step of
a QIDO answer; reading the few attributes a study record needs from the JSON costs a few µs.
JSON text is Unicode already, so no character set applies; text is NFC-normalized.

It runs once per study on a fan-out's critical path (13.5 µs a study read by :class:`JsonReader`
alone, 6.5 µs by the fast path; ``python -m bench.reader`` measures it), so ``_usual_fields`` first
reads the usual shapes (strings, one number, one name object), grouped by shape; anything else
(wrong types, broken objects, values that warn) sends the whole object to ``_read_fields``, which
reads any shape, in the table's order, with :class:`JsonReader`.
"""

from __future__ import annotations

import datetime as dt
import unicodedata
from collections.abc import Callable, Iterator
from typing import Any, Final

from connectors.dicom_attributes import (
    OTHER_PATIENT_IDS_TAG,
    RECORD_ATTRIBUTES,
    STUDY_INSTANCE_UID,
    Attribute,
    Kind,
)
from connectors.dicom_values import (
    beyond_alphabetic,
    first_name,
    nfc,
    parse_da,
    parse_is,
    parse_tm,
    person_name_groups,
    unique,
)
from federation.models import StudyRecord

__all__ = ["JsonReader", "MalformedObject", "record_from_dicom_json", "record_from_qido_item"]

_PN_GROUPS = ("Alphabetic", "Ideographic", "Phonetic")
_EXACT = 2**53
"""Integers up to this are exact as floats: ``int(float(str(n)))`` is ``n``."""
_MISSING: Final = object()
_OTHER_PATIENT_IDS = f"{OTHER_PATIENT_IDS_TAG:08X}"


class MalformedObject(ValueError):
    """A DICOM JSON object that does not follow PS3.18 F.2."""


def _name_string(value: dict[str, Any]) -> str:
    """A PN object (PS3.18 F.2.2) in the string form ``Alphabetic=Ideographic=Phonetic``."""
    return "=".join(group if isinstance(group, str) else "" for group in map(value.get, _PN_GROUPS))


class JsonReader:
    """Any attribute of one object, whatever its shape: the general path, and the reference for the fast one."""

    def __init__(self, item: dict[str, Any], warnings: list[str]) -> None:
        self.item = item
        self.warnings = warnings

    def _values(self, attribute: Attribute) -> list[Any]:
        found = self.item.get(attribute.json_tag)
        if found is None:
            return []
        if not isinstance(found, dict):
            raise MalformedObject(f"{attribute.keyword} is not a JSON object")
        values = found.get("Value", [])
        if not isinstance(values, list):
            raise MalformedObject(f"{attribute.keyword} Value is not an array")
        return values

    def strings(self, attribute: Attribute) -> tuple[str, ...]:
        """The non-empty values as text, NFC and stripped, each once (Kind.STRINGS)."""
        found = []
        for value in self._values(attribute):
            if isinstance(value, str | int | float) and not isinstance(value, bool):
                found.append(nfc(str(value)).strip())
            elif value is not None:
                self.warnings.append(f"{attribute.keyword}: invalid value")
        return unique(found)

    def first(self, attribute: Attribute) -> str | None:
        """The first of ``strings`` (Kind.FIRST)."""
        found = self.strings(attribute)
        return found[0] if found else None

    def text(self, attribute: Attribute) -> str | None:
        """The values joined with backslashes, as DICOM writes a multi-valued attribute (Kind.TEXT)."""
        found = self.item.get(attribute.json_tag)
        if found is None:
            return None
        values = found.get("Value") if type(found) is dict else None
        if type(values) is list and len(values) == 1 and type(values[0]) is str:
            return nfc(values[0]).strip() or None
        strings = self.strings(attribute)
        return "\\".join(strings) if strings else None

    def name_groups(self, attribute: Attribute) -> Iterator[tuple[str, ...]]:
        """The component groups of each PN value, an object or the string form some servers send."""
        for value in self._values(attribute):
            if isinstance(value, dict):
                yield person_name_groups(_name_string(value), None)
            elif isinstance(value, str):
                yield person_name_groups(value, None)
            else:
                self.warnings.append(f"{attribute.keyword}: invalid value")

    def person_name(self, attribute: Attribute) -> str | None:
        """The first non-empty group (Alphabetic, then Ideographic, then Phonetic) of any value (Kind.NAME)."""
        return next((name for groups in self.name_groups(attribute) if (name := first_name(groups))), None)

    def patient_name_groups(self, attribute: Attribute) -> tuple[str, str, str] | None:
        """The groups of the first value with a name in its first three, when beyond Alphabetic."""
        groups = next((groups[:3] for groups in self.name_groups(attribute) if any(groups[:3])), ())
        return beyond_alphabetic(groups)

    def _parsed(self, attribute: Attribute, parse: Callable[[str], Any]) -> Any:
        text = self.text(attribute)
        parsed = parse(text) if text else None
        if text and parsed is None:
            self.warnings.append(f"{attribute.keyword}: invalid value")
        return parsed

    def date(self, attribute: Attribute) -> Any:
        """A DA value (Kind.DATE); a warning when it does not parse."""
        return self._parsed(attribute, parse_da)

    def time(self, attribute: Attribute) -> Any:
        """A TM value (Kind.TIME); a warning when it does not parse."""
        return self._parsed(attribute, parse_tm)

    def integer(self, attribute: Attribute) -> int | None:
        """An IS value, from a JSON number or a numeric string (Kind.INTEGER); a warning when it is neither."""
        found = self.item.get(attribute.json_tag)
        values = found.get("Value") if type(found) is dict else None
        if type(values) is list and len(values) == 1 and type(values[0]) is int and abs(values[0]) <= _EXACT:
            return values[0]
        parsed: int | None = self._parsed(attribute, parse_is)
        return parsed

    def other_patient_ids(self) -> tuple[tuple[str | None, str], ...]:
        """The (issuer, id) pairs of OtherPatientIDsSequence."""
        found: list[tuple[str | None, str]] = []
        for item in self._values(_OTHER_PATIENT_IDS_ATTRIBUTE):
            if not isinstance(item, dict):
                raise MalformedObject("OtherPatientIDsSequence item is not a JSON object")
            child = JsonReader(item, self.warnings)
            value = child.text(_PATIENT_ID)
            if value:
                found.append((child.text(_ISSUER), value))
        return tuple(found)


_BY_FIELD = {attribute.field: attribute for attribute in RECORD_ATTRIBUTES}
_PATIENT_ID, _ISSUER = _BY_FIELD["patient_id"], _BY_FIELD["issuer_of_patient_id"]
_OTHER_PATIENT_IDS_ATTRIBUTE = Attribute(
    OTHER_PATIENT_IDS_TAG, "OtherPatientIDsSequence", "SQ", "", Kind.TEXT
)
_GENERAL: Final[dict[Kind, Callable[[JsonReader, Attribute], Any]]] = {
    Kind.TEXT: JsonReader.text,
    Kind.FIRST: JsonReader.first,
    Kind.STRINGS: JsonReader.strings,
    Kind.DATE: JsonReader.date,
    Kind.TIME: JsonReader.time,
    Kind.INTEGER: JsonReader.integer,
    Kind.NAME: JsonReader.person_name,
}
# The fast path reads the table's rows grouped by value shape, one loop each.
_STRINGS: Final = tuple(
    (a.json_tag, a.field, a.kind is Kind.STRINGS, a.kind is Kind.FIRST)
    for a in (STUDY_INSTANCE_UID, *RECORD_ATTRIBUTES)
    if a.kind in (Kind.TEXT, Kind.FIRST, Kind.STRINGS)
)
# DA and TM, with the C parser of their usual form (YYYYMMDD, HHMMSS) called straight from the
# loop (a Python call per value is measurable here), and their converter for any other form.
_DATES: Final = tuple(
    (
        a.json_tag,
        a.field,
        *(
            (8, dt.date.fromisoformat, parse_da)
            if a.kind is Kind.DATE
            else (6, dt.time.fromisoformat, parse_tm)
        ),
    )
    for a in RECORD_ATTRIBUTES
    if a.kind in (Kind.DATE, Kind.TIME)
)
_INTEGERS: Final = tuple((a.json_tag, a.field) for a in RECORD_ATTRIBUTES if a.kind is Kind.INTEGER)
_NAMES: Final = tuple((a.json_tag, a.field) for a in RECORD_ATTRIBUTES if a.kind is Kind.NAME)


def _strings_of(values: list[Any]) -> tuple[str, ...] | None:
    """String values, NFC and stripped, the empty ones left out, each once; None unless all are strings."""
    found = []
    for value in values:
        if type(value) is not str:
            return None
        found.append(nfc(value).strip())
    return unique(found)


def _usual_name(value: dict[str, Any]) -> tuple[str, ...] | None:
    """The groups of a PN object whose groups are all strings, else None."""
    if not value or any(key not in _PN_GROUPS or type(group) is not str for key, group in value.items()):
        return None
    return person_name_groups(_name_string(value), None)


def _usual_fields(item: dict[str, Any], source_id: str) -> dict[str, Any] | None:
    """The record's fields when every attribute has its usual shape, else None for ``_read_fields``.

    This path never warns nor raises: an object that would make it is read again by the general path,
    in order. It reads the table's rows grouped by value shape (text, dates and times, integers, names),
    one loop each, with the same converters, NFC inline (``dicom_values.nfc``). Only what the object
    holds is set: the model fills in a default faster than it validates one.
    """
    if _OTHER_PATIENT_IDS in item:
        return None  # OtherPatientIDsSequence, rare in a QIDO answer
    fields: dict[str, Any] = {"source_id": source_id}
    get = item.get
    for tag, field, several, first in _STRINGS:
        attribute = get(tag)
        if attribute is None:
            continue
        values = attribute.get("Value") if type(attribute) is dict else _MISSING
        if type(values) is list and len(values) == 1 and type(value := values[0]) is str:
            text = (value if value.isascii() else unicodedata.normalize("NFC", value)).strip()
            if text:
                fields[field] = (text,) if several else text
        elif values is not None or "Value" in attribute:  # no Value: asked for but empty, as QIDO sends it
            found = _strings_of(values) if type(values) is list else None
            if found is None:
                return None
            if found:
                fields[field] = found if several else found[0] if first else "\\".join(found)
    for tag, field, usual_length, usual, parse in _DATES:
        attribute = get(tag)
        if attribute is None:
            continue
        values = attribute.get("Value") if type(attribute) is dict else _MISSING
        if type(values) is list and len(values) == 1 and type(value := values[0]) is str:
            if not value.isascii():
                return None
            text = value.strip()
            if text:
                parsed: Any = None
                if len(text) == usual_length and text.isdigit():
                    try:
                        parsed = usual(text)
                    except ValueError:
                        parsed = None  # an impossible date, or a leap second parse_tm clamps
                if parsed is None and (parsed := parse(text)) is None:
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
            name = value.get("Alphabetic")  # PS3.18 F.2.2: the Alphabetic group, nearly always alone
            groups = (
                person_name_groups(name, None)
                if len(value) == 1 and type(name) is str
                else _usual_name(value)
            )
            if groups is None:
                return None
            if groups:
                fields[field] = groups[0] or first_name(groups)
                if field == "patient_name" and len(groups) > 1:
                    fields["patient_name_groups"] = beyond_alphabetic(groups[:3])
        elif values is not None or "Value" in attribute:
            return None
    return fields


def _read_fields(item: dict[str, Any], source_id: str) -> dict[str, Any] | None:
    """The record's fields, whatever the object's shape, read in the table's order: the general path."""
    warnings: list[str] = []
    read = JsonReader(item, warnings)
    uid = read.text(STUDY_INSTANCE_UID)
    if uid is None:
        return None
    fields: dict[str, Any] = {"source_id": source_id, "study_instance_uid": uid}
    for attribute in RECORD_ATTRIBUTES:
        fields[attribute.field] = _GENERAL[attribute.kind](read, attribute)
    fields["patient_name_groups"] = read.patient_name_groups(_BY_FIELD["patient_name"])
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


def record_from_qido_item(item: Any, source_id: str, warnings: list[str]) -> StudyRecord | None:
    """One study object of a QIDO answer as a StudyRecord; a malformed one or one without
    StudyInstanceUID is skipped with a warning added to *warnings* (the source's, naming no value)."""
    try:
        record = record_from_dicom_json(item, source_id)
    except MalformedObject as exc:
        warnings.append(f"a QIDO result in malformed DICOM JSON was ignored ({exc})")
        return None
    if record is None:
        warnings.append("a QIDO result without StudyInstanceUID was ignored")
    return record
