"""The pydicom ``Dataset`` adapter: one study-level identifier (as C-FIND returns it) into a StudyRecord.

It reads the attributes of ``connectors.dicom_attributes`` with the converters of
``connectors.dicom_values``, as the DICOM JSON adapter (``connectors.dicom_json``) does. Text is
decoded here from the element's bytes, per the identifier's SpecificCharacterSet
(``connectors.dicom_charsets``), not by pydicom's lazy element conversion (its warnings would
escape the caller); text is NFC, and a value that cannot be decoded yields replacement
characters (U+FFFD) and a warning naming the attribute, never an exception.
"""

from __future__ import annotations

import datetime as dt
import logging
import warnings
from collections.abc import Callable, Iterable
from typing import Any

from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from connectors._dimse_fast_reader import Unhandled, record_from_identifier
from connectors.dicom_attributes import (
    RECORD_ATTRIBUTES,
    SPECIFIC_CHARACTER_SET,
    STUDY_INSTANCE_UID,
    STUDY_RETURN_KEYWORDS,
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
from federation.models import StudyRecord

__all__ = [
    "STUDY_RETURN_KEYWORDS",
    "DatasetReader",
    "NotReadFromBytes",
    "study_record_from_bytes",
    "study_record_from_dataset",
]

# pydicom logs invalid values verbatim at WARNING level, and values here are names and birth
# dates: keep its logger quiet; the problems reach the source status as warnings instead.
logging.getLogger("pydicom").setLevel(logging.ERROR)


NotReadFromBytes = Unhandled
"""Raised by :func:`study_record_from_bytes` for an identifier it does not read: decode a Dataset then."""


def study_record_from_bytes(
    data: bytes, implicit_vr: bool, source_id: str, default_retrieve_ae: str | None = None
) -> StudyRecord | None:
    """:func:`study_record_from_dataset` of an identifier's implicit or explicit VR little endian bytes, without pydicom.

    It raises :data:`NotReadFromBytes` for what it does not read exactly as the Dataset would be
    (undefined lengths, sequences with items, …): the caller then decodes a Dataset.
    """
    return record_from_identifier(data, implicit_vr, source_id, default_retrieve_ae)


# Tag and VR of each attribute in the table, without a dictionary look-up each time.
_TAG_AND_VR = {attribute.keyword: (attribute.tag, attribute.vr) for attribute in RECORD_ATTRIBUTES} | {
    STUDY_INSTANCE_UID.keyword: (STUDY_INSTANCE_UID.tag, STUDY_INSTANCE_UID.vr)
}


def _tag_and_vr(keyword: str) -> tuple[int, str]:
    known = _TAG_AND_VR.get(keyword)
    return known if known is not None else (tag_for_keyword(keyword) or 0, dictionary_VR(keyword))


def _warning_text(message: str) -> str:
    return "text not decodable with the declared character set" if "decode" in message else "invalid value"


class DatasetReader:
    """Reads typed values out of a dataset, collecting warnings instead of failing."""

    warnings: list[str]
    character_set_terms: list[str]
    charset: CharacterSet

    def __init__(self, dataset: Dataset, parent: DatasetReader | None = None) -> None:
        """A reader of *dataset*; a sequence item inherits its *parent*'s character set (PS3.5 7.5.3)."""
        self.dataset = dataset
        if parent is not None:
            self.warnings = parent.warnings
            self.character_set_terms = parent.character_set_terms
            self.charset = parent.charset
            return
        self.warnings = []
        self.character_set_terms = self._character_set_terms()
        self.charset = character_set(self.character_set_terms, self.warnings)

    def other_patient_ids(self) -> tuple[tuple[str | None, str], ...]:
        """(issuer, id) pairs of OtherPatientIDsSequence (0010,1002), when the peer returned it."""
        try:
            items = self.dataset.get("OtherPatientIDsSequence")
        except Exception:
            self.warnings.append("OtherPatientIDsSequence: unreadable value")
            return ()
        found: list[tuple[str | None, str]] = []
        for item in items or ():
            reader = DatasetReader(item, parent=self)
            value = reader.text("PatientID")
            if value:
                found.append((reader.text("IssuerOfPatientID"), value))
        return tuple(found)

    def _character_set_terms(self) -> list[str]:
        element = self._element(SPECIFIC_CHARACTER_SET.keyword)
        if element is None:
            return []
        value = element.value
        if isinstance(element, RawDataElement):
            items: Iterable[Any] = (value or b"").decode("ascii", errors="replace").split("\\")
        elif isinstance(value, MultiValue | list | tuple):
            items = value
        else:
            items = str(value or "").split("\\")
        terms = [str(item).strip(" \x00") for item in items]
        return [] if not any(terms) else terms

    def _element(self, keyword: str, tag: int | None = None) -> Any:
        """The element as stored: a RawDataElement when pydicom has not converted it, else a DataElement."""
        try:
            return self.dataset.get_item(
                tag if tag is not None else _tag_and_vr(keyword)[0], keep_deferred=True
            )
        except Exception:
            self.warnings.append(f"{keyword}: unreadable value")
            return None

    def values(self, keyword: str) -> list[str]:
        """The element's values, decoded, NFC, stripped of padding; empty when absent."""
        tag, vr = _tag_and_vr(keyword)
        element = self._element(keyword, tag)
        if element is None:
            return []
        problems: list[str] = []
        if isinstance(element, RawDataElement):
            data = (element.value or b"").rstrip(b" \x00")
            charset = self.charset if vr in CHARSET_VRS else DEFAULT_REPERTOIRE
            text = decode(data, charset, delimiters(vr), problems)
        else:
            text = self._converted(element.value, problems)
        text = clean(text, problems)
        self.warnings.extend(f"{keyword}: {problem}" for problem in dict.fromkeys(problems))
        parts = [text] if vr in SINGLE_VALUED_VRS else text.split("\\")
        return [part.strip(" \x00") for part in parts]

    def _converted(self, value: Any, problems: list[str]) -> str:
        """The text of a value pydicom already holds (DICOM JSON, or a dataset built in code)."""
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            items = list(value) if isinstance(value, MultiValue | list | tuple) else [value]
            parts = [
                decode(item, self.charset, b"\\^=", problems) if isinstance(item, bytes) else str(item)
                for item in items
                if item is not None
            ]
        problems.extend(_warning_text(str(warning.message)) for warning in caught)
        return "\\".join(parts)

    def text(self, keyword: str) -> str | None:
        """The non-empty values joined by ``\\`` (Kind.TEXT)."""
        return "\\".join(value for value in self.values(keyword) if value) or None

    def strings(self, keyword: str) -> tuple[str, ...]:
        """Each non-empty value once (Kind.STRINGS)."""
        return unique(self.values(keyword))

    def first(self, keyword: str) -> str | None:
        """The first non-empty value (Kind.FIRST)."""
        found = self.strings(keyword)
        return found[0] if found else None

    def person_name(self, keyword: str) -> str | None:
        """The Alphabetic component group, else the Ideographic, else the Phonetic one (Kind.NAME)."""
        return first_name(self.name_groups(keyword))

    def name_groups(self, keyword: str) -> tuple[str, ...]:
        """The component groups of the first value, at most three (trailing empty ones dropped)."""
        values = self.values(keyword)
        groups = person_name_groups(values[0]) if values else ()
        if len(groups) > 3:
            self.warnings.append(f"{keyword}: more than three component groups")
        return groups[:3]

    def _parsed(self, keyword: str, parse: Callable[[str], Any]) -> Any:
        text = self.text(keyword)
        if text is None:
            return None
        parsed = parse(text)
        if parsed is None:
            self.warnings.append(f"{keyword}: invalid value")
        return parsed

    def date(self, keyword: str) -> dt.date | None:
        """A DA value (Kind.DATE); a warning when it does not parse."""
        parsed: dt.date | None = self._parsed(keyword, parse_da)
        return parsed

    def time(self, keyword: str) -> dt.time | None:
        """A TM value (Kind.TIME); a warning when it does not parse."""
        parsed: dt.time | None = self._parsed(keyword, parse_tm)
        return parsed

    def integer(self, keyword: str) -> int | None:
        """An IS value (Kind.INTEGER); a warning when it does not parse."""
        parsed: int | None = self._parsed(keyword, parse_is)
        return parsed


# The reader of each kind of attribute (connectors.dicom_attributes.Kind).
_READ: dict[Kind, Callable[[DatasetReader, str], Any]] = {
    Kind.TEXT: DatasetReader.text,
    Kind.FIRST: DatasetReader.first,
    Kind.STRINGS: DatasetReader.strings,
    Kind.DATE: DatasetReader.date,
    Kind.TIME: DatasetReader.time,
    Kind.INTEGER: DatasetReader.integer,
    Kind.NAME: DatasetReader.person_name,
}


def _field(read: DatasetReader, attribute: Attribute, fields: dict[str, Any]) -> Any:
    if attribute is SPECIFIC_CHARACTER_SET:  # read once, to decode the others
        return unique(read.character_set_terms)
    if attribute.field == "patient_name":
        groups = read.name_groups(attribute.keyword)
        fields["patient_name_groups"] = beyond_alphabetic(groups)
        return first_name(groups)
    return _READ[attribute.kind](read, attribute.keyword)


def study_record_from_dataset(
    dataset: Dataset, source_id: str, default_retrieve_ae: str | None = None
) -> StudyRecord | None:
    """The StudyRecord for one identifier, or None when it carries no StudyInstanceUID.

    ``default_retrieve_ae`` stands in for RetrieveAETitle (0008,0054) when the peer leaves it out:
    the AE that answered the C-FIND is then the one to C-MOVE from.
    """
    read = DatasetReader(dataset)
    uid = read.text("StudyInstanceUID")
    if uid is None:
        return None
    fields: dict[str, Any] = {"source_id": source_id, "study_instance_uid": uid}
    for attribute in RECORD_ATTRIBUTES:
        fields[attribute.field] = _field(read, attribute, fields)
    if fields["retrieve_ae_title"] is None:
        fields["retrieve_ae_title"] = default_retrieve_ae
    fields["other_patient_ids"] = read.other_patient_ids()
    fields["warnings"] = tuple(dict.fromkeys(read.warnings))
    return StudyRecord(**fields)
