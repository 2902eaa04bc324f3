"""A C-FIND identifier's bytes read straight into a StudyRecord, without a pydicom Dataset.

The fast path of ``connectors.normalize.study_record_from_dataset``, as ``connectors.dicom_json``
has one for DICOM JSON: a fan-out spent most of its CPU building a pydicom Dataset per response
and reading it back. It walks the elements of an implicit or explicit VR little endian data set,
keeps the bytes of the table's attributes (``connectors.dicom_attributes``) and reads them with
the same decoding (``connectors.dicom_charsets``) and converters (``connectors.dicom_values``).
Anything it does not read exactly as pydicom and the DatasetReader would (an undefined length,
a sequence it would have to read, tags out of order, an unexpected VR, truncated bytes) raises
:class:`Unhandled`, and the caller reads the identifier the general way. Identical results are
held by tests/unit/test_dimse_fast_reader.py.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
import struct
from typing import Any

from connectors.dicom_attributes import (
    OTHER_PATIENT_IDS_TAG,
    RECORD_ATTRIBUTES,
    SPECIFIC_CHARACTER_SET,
    STUDY_INSTANCE_UID,
    Attribute,
    Kind,
)
from connectors.dicom_charsets import (
    CHARSET_VRS,
    DEFAULT_REPERTOIRE,
    SINGLE_VALUED_VRS,
    CharacterSet,
    character_set,
    clean,
    decode,
    delimiters,
)
from connectors.dicom_values import (
    beyond_alphabetic,
    first_name,
    parse_da,
    parse_is,
    parse_tm,
    person_name_groups,
    unique,
)
from federation.models import StudyRecord, unvalidated


class Unhandled(Exception):
    """An identifier the fast path does not read: the caller decodes it with pydicom instead."""


_VR_LENGTH_32 = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
)
_VR_LENGTH_16 = frozenset(
    {
        *(b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FD", b"FL", b"IS", b"LO"),
        *(b"LT", b"PN", b"SH", b"SL", b"SS", b"ST", b"TM", b"UI", b"UL", b"US"),
    }
)
_IMPLICIT = struct.Struct("<HHL").unpack_from
_EXPLICIT = struct.Struct("<HH2sH").unpack_from
_LENGTH_32 = struct.Struct("<L").unpack_from
_UNDEFINED = 0xFFFFFFFF
_ESC = 0x1B
_ITEM_GROUP = 0xFFFE
# The attributes read, by tag: their VR as the wire spells it in explicit VR.
_WANTED: dict[int, bytes] = {
    a.tag: a.vr.encode("ascii") for a in (STUDY_INSTANCE_UID, SPECIFIC_CHARACTER_SET, *RECORD_ATTRIBUTES)
}
# Bytes clean() would change in ASCII text: C0 controls other than TAB, LF, FF, CR, and DEL (ESC too).
_ASCII_CONTROLS = re.compile(rb"[\x00-\x08\x0b\x0e-\x1f\x7f]")
# Bytes that make a value more than one plain ASCII value: those, anything beyond ASCII, and ``\``.
_NOT_PLAIN = re.compile(rb"[^\x09\x0a\x0c\x0d\x20-\x5b\x5d-\x7e]")


def _looks_explicit(data: bytes) -> bool:
    """pydicom's test of the first element (``filereader._is_implicit_vr``): two capitals where a VR goes."""
    return len(data) >= 6 and 0x40 < data[4] < 0x5B and 0x40 < data[5] < 0x5B


def elements(data: bytes, implicit_vr: bool) -> dict[int, bytes]:
    """The value bytes of the table's attributes, each once; Unhandled unless read exactly as pydicom would."""
    if _looks_explicit(data) == implicit_vr:
        raise Unhandled("the data set does not look like its transfer syntax")
    return _implicit_elements(data) if implicit_vr else _explicit_elements(data)


def _implicit_elements(data: bytes) -> dict[int, bytes]:
    """elements() of an implicit VR data set: a loop of its own, the hottest of a fan-out."""
    found: dict[int, bytes] = {}
    wanted, unpack = _WANTED, _IMPLICIT
    end = len(data)
    at = 0
    last = -1
    while at < end:
        if end - at < 8:
            raise Unhandled("truncated element header")
        group, number, length = unpack(data, at)
        at += 8
        tag = group << 16 | number
        if length == _UNDEFINED or group == _ITEM_GROUP or tag <= last or at + length > end:
            raise Unhandled("an undefined length, an item, tags out of order or a truncated value")
        last = tag
        if tag in wanted:
            found[tag] = data[at : at + length]
        elif tag == OTHER_PATIENT_IDS_TAG and length:
            raise Unhandled("OtherPatientIDsSequence with items")
        at += length
    return found


def _explicit_elements(data: bytes) -> dict[int, bytes]:
    """elements() of an explicit VR data set."""
    found: dict[int, bytes] = {}
    end = len(data)
    at = 0
    last = -1
    while at < end:
        if end - at < 8:
            raise Unhandled("truncated element header")
        group, number, vr, length = _EXPLICIT(data, at)
        at += 8
        if vr in _VR_LENGTH_32:
            if end - at < 4:
                raise Unhandled("truncated element header")
            length = _LENGTH_32(data, at)[0]
            at += 4
        elif vr not in _VR_LENGTH_16:
            raise Unhandled("an unexpected VR")
        tag = group << 16 | number
        if length == _UNDEFINED or group == _ITEM_GROUP or tag <= last or at + length > end:
            raise Unhandled("an undefined length, an item, tags out of order or a truncated value")
        last = tag
        wanted = _WANTED.get(tag)
        if wanted is not None:
            if vr != wanted:
                raise Unhandled("an attribute with another VR than its own")
            found[tag] = data[at : at + length]
        elif tag == OTHER_PATIENT_IDS_TAG and length:
            raise Unhandled("OtherPatientIDsSequence with items")
        at += length
    return found


@functools.lru_cache(maxsize=64)
def _declared(value: bytes | None) -> tuple[tuple[str, ...], CharacterSet, tuple[str, ...]]:
    """A SpecificCharacterSet value's terms, character set and problems, once per value met (a source repeats its own)."""
    terms: tuple[str, ...] = ()
    if value is not None:
        if not value.isascii():
            raise Unhandled("SpecificCharacterSet beyond ASCII")
        terms = tuple(term.strip(" \x00") for term in value.decode("ascii").split("\\"))
        terms = terms if any(terms) else ()
    problems: list[str] = []
    return terms, character_set(list(terms), problems), tuple(problems)


class _Reader:
    """DatasetReader's readings (``connectors.normalize``) over element bytes."""

    __slots__ = ("character_set_terms", "charset", "found", "warnings")

    def __init__(self, found: dict[int, bytes]) -> None:
        self.found = found
        terms, self.charset, problems = _declared(found.get(SPECIFIC_CHARACTER_SET.tag))
        self.character_set_terms = list(terms)
        self.warnings: list[str] = list(problems)

    def values(self, attribute: Attribute) -> list[str]:
        """The element's values, decoded, NFC, stripped of padding; empty when absent."""
        raw = self.found.get(attribute.tag)
        if raw is None:
            return []
        data = raw.rstrip(b" \x00")
        vr = attribute.vr
        if data.isascii() and _ASCII_CONTROLS.search(data) is None:
            text = data.decode("ascii")  # what decode() and clean() make of it
        else:
            problems: list[str] = []
            charset = self.charset if vr in CHARSET_VRS else DEFAULT_REPERTOIRE
            text = clean(_decoded(data, charset, vr, problems), problems)
            if problems:
                self.warnings.extend(f"{attribute.keyword}: {problem}" for problem in dict.fromkeys(problems))
        if "\\" not in text or vr in SINGLE_VALUED_VRS:
            return [text.strip(" \x00")]  # one value: no split, no list to build
        return [part.strip(" \x00") for part in text.split("\\")]

    def text(self, attribute: Attribute) -> str | None:
        """Kind.TEXT."""
        values = self.values(attribute)
        if len(values) == 1:
            return values[0] or None
        return "\\".join([value for value in values if value]) or None


def _plain(raw: bytes) -> str | None:
    """The one ASCII value, stripped, of an element without controls or ``\\``: what values() reads; else None."""
    data = raw.rstrip(b" \x00")
    if _NOT_PLAIN.search(data) is None:
        return data.decode("ascii").strip(" \x00")
    return None


def _decoded(data: bytes, charset: CharacterSet, vr: str, problems: list[str]) -> str:
    """decode(): under UTF-8 or GB 18030 / GBK without escapes, pydicom's reading is the codec's, so the codec's."""
    if charset.standalone is not None and _ESC not in data:
        try:
            return data.decode(charset.standalone)
        except UnicodeDecodeError:
            pass  # the general reading reports it
    return decode(data, charset, delimiters(vr), problems)


def _text(read: _Reader, attribute: Attribute, fields: dict[str, Any]) -> Any:
    """Kind.TEXT."""
    value = _plain(read.found[attribute.tag])
    if value is None:
        return read.text(attribute)
    return value or None


def _strings(read: _Reader, attribute: Attribute, fields: dict[str, Any]) -> Any:
    """Kind.STRINGS."""
    value = _plain(read.found[attribute.tag])
    if value is None:
        return unique(read.values(attribute))
    return (value,) if value else ()


def _first(read: _Reader, attribute: Attribute, fields: dict[str, Any]) -> Any:
    """Kind.FIRST."""
    value = _plain(read.found[attribute.tag])
    if value is None:
        found = unique(read.values(attribute))
        return found[0] if found else None
    return value or None


def _name(read: _Reader, attribute: Attribute, fields: dict[str, Any]) -> Any:
    """Kind.NAME: the component groups of the first value, at most three."""
    value = _plain(read.found[attribute.tag])
    values = read.values(attribute) if value is None else [value]
    groups = person_name_groups(values[0]) if values else ()
    if len(groups) > 3:
        read.warnings.append(f"{attribute.keyword}: more than three component groups")
        groups = groups[:3]
    if attribute.field == "patient_name":
        fields["patient_name_groups"] = beyond_alphabetic(groups)
    return first_name(groups)


def _parser(parse: Any) -> Any:
    """Kind.DATE, Kind.TIME, Kind.INTEGER: a warning when the value does not parse."""

    def parsed(read: _Reader, attribute: Attribute, fields: dict[str, Any]) -> Any:
        text = _plain(read.found[attribute.tag])
        if text is None:
            text = read.text(attribute)
        if not text:
            return None
        value = parse(text)
        if value is None:
            read.warnings.append(f"{attribute.keyword}: invalid value")
        return value

    return parsed


def _charset(read: _Reader, attribute: Attribute, fields: dict[str, Any]) -> Any:
    """SpecificCharacterSet, as the reader read it (also when absent)."""
    return unique(read.character_set_terms)


_READ_KIND: dict[Kind, Any] = {
    Kind.TEXT: _text,
    Kind.STRINGS: _strings,
    Kind.FIRST: _first,
    Kind.NAME: _name,
    Kind.DATE: _parser(parse_da),
    Kind.TIME: _parser(parse_tm),
    Kind.INTEGER: _parser(parse_is),
}
_ALWAYS = object()
# How the usual value of an attribute (one plain ASCII value, _plain's case) is read in line: its Kind,
# None for the readings that always go through their function (SpecificCharacterSet).
_INLINE = frozenset({Kind.TEXT, Kind.FIRST, Kind.STRINGS, Kind.DATE, Kind.TIME, Kind.INTEGER, Kind.NAME})
# Per attribute, in the table's order: itself, its field, tag, reading, its value when absent, and
# its Kind when its plain value is read in line.
_PLAN: tuple[tuple[Attribute, str, int, Any, Any, Kind | None], ...] = tuple(
    (
        attribute,
        attribute.field,
        attribute.tag,
        _charset if attribute is SPECIFIC_CHARACTER_SET else _READ_KIND[attribute.kind],
        _ALWAYS if attribute is SPECIFIC_CHARACTER_SET else () if attribute.kind is Kind.STRINGS else None,
        None if attribute is SPECIFIC_CHARACTER_SET or attribute.kind not in _INLINE else attribute.kind,
    )
    for attribute in RECORD_ATTRIBUTES
)
_TEXT = Kind.TEXT
_DATE = Kind.DATE
_MAX_EXACT_FLOAT_DIGITS = 15
"""parse_is reads through float: up to 15 digits, int() of the digits is the same number."""
_date = dt.date.fromisoformat
_time = dt.time.fromisoformat


def _inline(kind: Kind, value: str, field: str, fields: dict[str, Any]) -> Any:
    """The plain value read as its Kind would read it, or _ALWAYS where that reading must decide (a warning, a rare form).

    Each case is the first branch of the reading it stands for (``_text``, ``_strings``, ``_first``,
    ``_name`` with ``person_name_groups``, ``parse_da``, ``parse_tm``, ``parse_is``), for a value
    that ``_plain`` returned: ASCII without controls or ``\\``, stripped of spaces and NULs.
    """
    if kind is Kind.TEXT or kind is Kind.FIRST:
        return value or None
    if kind is Kind.DATE:
        if not value:
            return None
        if len(value) == 8 and value.isdigit():
            try:
                return _date(value)
            except ValueError:
                return _ALWAYS
        return _ALWAYS
    if kind is Kind.TIME:
        if not value:
            return None
        if len(value) == 6 and value.isdigit():
            try:
                return _time(value)
            except ValueError:
                return _ALWAYS
        return _ALWAYS
    if kind is Kind.INTEGER:
        if not value:
            return None
        if value.isdigit() and len(value) <= _MAX_EXACT_FLOAT_DIGITS:
            return int(value)
        return _ALWAYS
    if kind is Kind.STRINGS:
        return (value,) if value else ()
    # Kind.NAME: one Alphabetic group (no "="); its trailing "^" and spaces dropped.
    if "=" in value:
        return _ALWAYS
    if field == "patient_name":
        fields["patient_name_groups"] = None  # beyond_alphabetic() of one group
    return value.rstrip("^ ") or None


def record_from_identifier(
    data: bytes, implicit_vr: bool, source_id: str, default_retrieve_ae: str | None = None
) -> StudyRecord | None:
    """``study_record_from_dataset`` of the identifier these little endian bytes encode; Unhandled if not read here.

    The record is built without pydantic validating it again: every value is already of its
    field's type, as the readings above make it (tests/unit/test_dimse_fast_reader.py holds it).
    """
    found = elements(data, implicit_vr)
    read = _Reader(found)
    raw_uid = found.get(STUDY_INSTANCE_UID.tag)
    uid = _plain(raw_uid) if raw_uid is not None else None
    uid = (uid or None) if uid is not None else read.text(STUDY_INSTANCE_UID)
    if uid is None:
        return None
    fields: dict[str, Any] = {"source_id": source_id, "study_instance_uid": uid}
    plain = _NOT_PLAIN.search
    for attribute, field, tag, reading, absent, kind in _PLAN:
        raw = found.get(tag)
        if raw is None and absent is not _ALWAYS:  # absent: what each reading gives for no values
            fields[field] = absent
            continue
        if kind is not None and raw is not None:
            stripped = raw.rstrip(b" \x00")
            if plain(stripped) is None:
                value = stripped.decode("ascii").strip(" \x00")
                if kind is _TEXT:  # the most frequent: a text's one value
                    fields[field] = value or None
                    continue
                if kind is _DATE and len(value) == 8 and value.isdigit():  # parse_da's usual form
                    try:
                        fields[field] = _date(value)
                        continue
                    except ValueError:
                        pass  # reading() warns
                value = _inline(kind, value, field, fields)
                if value is not _ALWAYS:
                    fields[field] = value
                    continue
        fields[field] = reading(read, attribute, fields)
    if fields["retrieve_ae_title"] is None:
        fields["retrieve_ae_title"] = default_retrieve_ae
    fields["other_patient_ids"] = ()
    fields["warnings"] = tuple(dict.fromkeys(read.warnings)) if read.warnings else ()
    return unvalidated(StudyRecord, fields)
