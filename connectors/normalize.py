"""Turn one study-level DICOM identifier (from C-FIND or DICOM JSON) into a StudyRecord.

Both connectors go through here, so DIMSE and DICOMweb answers are normalized the same way.
Values are read per PS3.5 6.2 (VRs DA, TM, PN, IS, CS); text is NFC-normalized, and a value
that cannot be decoded yields replacement characters (U+FFFD) and a warning naming the
attribute, never an exception.

Text off the wire is decoded here, from the element's bytes, per the identifier's
SpecificCharacterSet (0008,0005) (PS3.3 C.12.1.1.2, PS3.5 6.1), not by pydicom: pydicom
decodes person names lazily (its warnings would escape the caller), keeps the escape
sequences of ISO 2022 IR 58 in the text, and reads bytes beyond ASCII under the default
repertoire as Latin-1 without saying so. The rules followed:

- Single-byte sets (ISO_IR 6, 100, 101, 109, 110, 126, 127, 138, 144, 148, 166, 203, 13):
  G0 holds ASCII (JIS X 0201 Romaji for ISO_IR 13), G1 the set's upper half.
- ISO 2022 code extensions (PS3.5 6.1.2.5): escape sequences designate another set to G0
  (JIS X 0208 ``ESC $ B``, JIS X 0212 ``ESC $ ( D``, ASCII ``ESC ( B``, Romaji ``ESC ( J``) or
  to G1 (``ESC - A`` … for the ISO 8859 parts, KS X 1001 ``ESC $ ) C``, GB 2312 ``ESC $ ) A``,
  JIS X 0201 Katakana ``ESC ) I``). The sets of value 1 are active again after CR, LF, FF, TAB,
  a value delimiter ``\\`` and, in PN, the delimiters ``^`` and ``=`` (PS3.5 6.1.2.5.3); those
  bytes are only delimiters while G0 holds a single-byte set, since in JIS X 0208 ``0x5E``
  and ``0x3D`` are halves of kana (``ま``, ``そ``).
- Stand-alone multi-byte sets (ISO_IR 192, GB18030, GBK) are decoded whole before the value is
  split at its delimiters: a GBK trail byte may be ``0x5C`` (``\\``) or ``0x5E`` (``^``).
- Without a SpecificCharacterSet, bytes beyond ASCII are invalid (PS3.5 6.1.2.1); they are read
  as UTF-8 when they form valid UTF-8, else as Latin-1, with a warning.
- PN values have up to three component groups, Alphabetic=Ideographic=Phonetic (PS3.5 6.2.1.1).
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import unicodedata
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from federation.models import StudyRecord

# pydicom logs invalid values verbatim at WARNING level, and values here are names and birth
# dates: keep its logger quiet; the problems reach the source status as warnings instead.
logging.getLogger("pydicom").setLevel(logging.ERROR)

RETRIEVE_URL_TAG = 0x00081190

# Study-level return keys requested from every source (PS3.4 C.6.2.1.2, Table C.6-5).
STUDY_RETURN_KEYWORDS: tuple[str, ...] = (
    "PatientID",
    "IssuerOfPatientID",
    "PatientName",
    "PatientBirthDate",
    "PatientSex",
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "ModalitiesInStudy",
    "StudyDescription",
    "ReferringPhysicianName",
    "NumberOfStudyRelatedSeries",
    "NumberOfStudyRelatedInstances",
    "RetrieveAETitle",
)

REPLACEMENT = "\ufffd"
_ESC = 0x1B
_LINE_DELIMITERS = b"\r\n\t\f"
# VRs whose text SpecificCharacterSet applies to (PS3.5 6.1.2.3); all others are ASCII.
_CHARSET_VRS = frozenset({"SH", "LO", "UC", "ST", "LT", "UT", "PN"})
_SINGLE_VALUED_VRS = frozenset({"ST", "LT", "UT", "UR"})
# C0 and C1 controls other than TAB, LF, FF and CR have no place in a decoded value.
_CONTROLS = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f-\x9f]")


# -- Character sets -------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class _Graphic:
    """A graphic character set as ISO 2022 designates it to G0 or G1 (PS3.3 Tables C.12-3/-4)."""

    name: str
    escape: bytes
    g1: bool
    width: int
    """Bytes per character."""
    decode: Callable[[bytes], str]
    """Decodes characters of this set as they appear on the wire (G1 sets in GR, high bit set);
    raises ValueError (UnicodeDecodeError included) on bytes that are not such characters."""


def _codec(name: str) -> Callable[[bytes], str]:
    def decode(data: bytes) -> str:
        return data.decode(name)

    return decode


def _after_escape(escape: bytes, codec: str) -> Callable[[bytes], str]:
    """A decoder for a 94x94 set in G0, through Python's ISO 2022 codec for it."""

    def decode(data: bytes) -> str:
        if len(data) % 2 or not all(0x21 <= b <= 0x7E for b in data):
            raise ValueError("not a sequence of two-byte characters")
        return (escape + data + b"\x1b(B").decode(codec)

    return decode


def _jis_katakana(data: bytes) -> str:
    """JIS X 0201 Katakana (ISO-IR 13) in GR: 0xA1-0xDF are U+FF61-U+FF9F."""
    if not all(0xA1 <= b <= 0xDF for b in data):
        raise ValueError("not JIS X 0201 Katakana")
    return "".join(chr(b + 0xFEC0) for b in data)


def _never(_data: bytes) -> str:
    raise ValueError("no character set designated")


_ASCII = _Graphic("ISO-IR 6", b"\x1b(B", False, 1, _codec("ascii"))
_JIS_ROMAN = _Graphic("JIS X 0201 Romaji", b"\x1b(J", False, 1, _codec("ascii"))
_JIS_KATAKANA = _Graphic("JIS X 0201 Katakana", b"\x1b)I", True, 1, _jis_katakana)
_JIS_X_0208 = _Graphic("JIS X 0208", b"\x1b$B", False, 2, _after_escape(b"\x1b$B", "iso2022_jp"))
_JIS_X_0212 = _Graphic("JIS X 0212", b"\x1b$(D", False, 2, _after_escape(b"\x1b$(D", "iso2022_jp_2"))
_KS_X_1001 = _Graphic("KS X 1001", b"\x1b$)C", True, 2, _codec("euc_kr"))
_GB_2312 = _Graphic("GB 2312", b"\x1b$)A", True, 2, _codec("gb2312"))
_UNKNOWN_G0 = _Graphic("an unknown set", b"", False, 1, _never)
_UNKNOWN_G1 = _Graphic("an unknown set", b"", True, 1, _never)


def _upper_half(name: str, final: bytes, codec: str) -> _Graphic:
    return _Graphic(name, b"\x1b-" + final, True, 1, _codec(codec))


# ISO-IR number -> the right half of the single-byte set (PS3.3 Tables C.12-2 and C.12-3).
_UPPER_HALVES = {
    "100": _upper_half("ISO 8859-1", b"A", "latin_1"),
    "101": _upper_half("ISO 8859-2", b"B", "iso8859_2"),
    "109": _upper_half("ISO 8859-3", b"C", "iso8859_3"),
    "110": _upper_half("ISO 8859-4", b"D", "iso8859_4"),
    "144": _upper_half("ISO 8859-5", b"L", "iso8859_5"),
    "127": _upper_half("ISO 8859-6", b"G", "iso8859_6"),
    "126": _upper_half("ISO 8859-7", b"F", "iso8859_7"),
    "138": _upper_half("ISO 8859-8", b"H", "iso8859_8"),
    "148": _upper_half("ISO 8859-9", b"M", "iso8859_9"),
    "203": _upper_half("ISO 8859-15", b"b", "iso8859_15"),
    "166": _upper_half("TIS 620-2533", b"T", "tis_620"),
}


@dataclass(frozen=True)
class _Term:
    """What one defined term of SpecificCharacterSet brings."""

    g0: _Graphic | None = None
    g1: _Graphic | None = None
    standalone: str | None = None
    """Python codec of a set used without code extensions (PS3.3 Table C.12-5)."""


def _defined_terms() -> dict[str, _Term]:
    terms = {
        "ISO_IR 6": _Term(_ASCII),
        "ISO 2022 IR 6": _Term(_ASCII),
        "ISO_IR 13": _Term(_JIS_ROMAN, _JIS_KATAKANA),
        "ISO 2022 IR 13": _Term(_JIS_ROMAN, _JIS_KATAKANA),
        "ISO 2022 IR 87": _Term(_JIS_X_0208),
        "ISO 2022 IR 159": _Term(_JIS_X_0212),
        "ISO 2022 IR 149": _Term(g1=_KS_X_1001),
        "ISO 2022 IR 58": _Term(g1=_GB_2312),
        "ISO_IR 192": _Term(standalone="utf_8"),
        "GB18030": _Term(standalone="gb18030"),
        "GBK": _Term(standalone="gbk"),
    }
    for number, upper in _UPPER_HALVES.items():
        terms[f"ISO_IR {number}"] = terms[f"ISO 2022 IR {number}"] = _Term(_ASCII, upper)
    return terms


_TERMS = _defined_terms()
_KNOWN_GRAPHICS = (_ASCII, _JIS_ROMAN, _JIS_KATAKANA, _JIS_X_0208, _JIS_X_0212, _KS_X_1001, _GB_2312)
_BY_ESCAPE = {graphic.escape: graphic for graphic in (*_KNOWN_GRAPHICS, *_UPPER_HALVES.values())}


def _spelling(term: str) -> str:
    return " ".join(term.upper().replace("_", " ").replace("-", " ").split())


# Common misspellings ("ISO-IR 100", "ISO_2022_IR_87", "utf-8") -> the defined term.
_BY_SPELLING = {_spelling(term): term for term in _TERMS} | {"UTF 8": "ISO_IR 192", "UTF8": "ISO_IR 192"}


@dataclass(frozen=True)
class _CharacterSet:
    """The decoding state a SpecificCharacterSet value sets up."""

    label: str
    g0: _Graphic = _ASCII
    g1: _Graphic | None = None
    declared: frozenset[_Graphic] = frozenset({_ASCII})
    standalone: str | None = None
    guess: bool = False
    """No set beyond ASCII declared: bytes beyond ASCII are guessed (UTF-8, else Latin-1)."""
    fallback_g1: _Graphic | None = None
    """The first G1 set a code extension declares: used, with a warning, for bytes beyond ASCII
    met while no G1 set is designated (some writers leave out ``ESC $ ) A`` for GB 2312)."""


_DEFAULT_REPERTOIRE = _CharacterSet("default repertoire")


def _character_set(values: list[str], problems: list[str]) -> _CharacterSet:
    """The decoding state for SpecificCharacterSet *values* (value 1 may be empty)."""
    known: list[str] = []
    for position, value in enumerate(values):
        if not value:
            known.append("ISO_IR 6" if position == 0 else "")
            continue
        term = _BY_SPELLING.get(_spelling(value))
        if term is None:
            problems.append(f"SpecificCharacterSet: unknown term {value[:32]!r} ignored")
        elif term != value:
            problems.append(f"SpecificCharacterSet: {value[:32]!r} read as {term!r}")
        known.append(term or ("ISO_IR 6" if position == 0 else ""))
    known = [term for term in known if term] or ["ISO_IR 6"]
    label = "\\".join(values)[:64] or "default repertoire"
    first = _TERMS[known[0]]
    if first.standalone:
        if len(known) > 1:
            problems.append(
                f"SpecificCharacterSet: {known[0]} allows no code extensions, the rest is ignored"
            )
        return _CharacterSet(label, standalone=first.standalone)
    declared = {_ASCII}
    for term in known[1:]:
        if _TERMS[term].standalone:
            problems.append(f"SpecificCharacterSet: {term} cannot be a code extension, ignored")
    for term in known:
        declared.update(g for g in (_TERMS[term].g0, _TERMS[term].g1) if g is not None)
    g0 = first.g0 if first.g0 is not None and first.g0.width == 1 else _ASCII
    fallback = next((g1 for term in known[1:] if (g1 := _TERMS[term].g1) is not None), None)
    return _CharacterSet(
        label, g0, first.g1, frozenset(declared), guess=declared == {_ASCII}, fallback_g1=fallback
    )


# -- Decoding -------------------------------------------------------------------------------


def _invalid(charset: _CharacterSet) -> str:
    return f"bytes not valid in the declared character set ({charset.label}) replaced with U+FFFD"


def _decode_run(graphic: _Graphic, data: bytes, charset: _CharacterSet, problems: list[str]) -> str:
    """Bytes of one set; characters that do not decode become U+FFFD, one per character."""
    try:
        return graphic.decode(data)
    except ValueError:
        problems.append(_invalid(charset))
    parts: list[str] = []
    for start in range(0, len(data), graphic.width):
        try:
            parts.append(graphic.decode(data[start : start + graphic.width]))
        except ValueError:
            parts.append(REPLACEMENT)
    return "".join(parts)


def _decode_iso2022(data: bytes, charset: _CharacterSet, delimiters: bytes, problems: list[str]) -> str:
    """Decode with ISO 2022 code extensions: escape sequences switch G0 and G1 (PS3.5 6.1.2.5)."""
    out: list[str] = []
    g0, g1 = charset.g0, charset.g1
    run = bytearray()
    run_set: _Graphic | None = None

    def flush() -> None:
        if run_set is not None and run:
            out.append(_decode_run(run_set, bytes(run), charset, problems))
        run.clear()

    i = 0
    while i < len(data):
        byte = data[i]
        if byte == _ESC:
            flush()
            end = i + 1
            while end < len(data) and 0x20 <= data[end] <= 0x2F:
                end += 1
            escape, i = data[i : end + 1], end + 1
            graphic = _BY_ESCAPE.get(escape)
            if graphic is None:
                problems.append("unknown escape sequence replaced with U+FFFD")
                out.append(REPLACEMENT)
                # What the sequence designated cannot be read until the next escape or delimiter.
                # ISO 2022 intermediates: "(" and "$(" (or a bare "$") designate G0, ")" "-" "$)" "$-" G1.
                g1_intermediate = escape[1:2] in (b")", b"-") or escape[1:3] in (b"$)", b"$-")
                graphic = _UNKNOWN_G1 if g1_intermediate else _UNKNOWN_G0
            elif graphic not in charset.declared:
                problems.append(
                    f"escape sequence to {graphic.name}, which SpecificCharacterSet does not declare"
                )
            if graphic.g1:
                g1 = graphic
            else:
                g0 = graphic
            continue
        if byte < 0x80:
            control = byte < 0x21 or byte == 0x7F  # SPACE and controls are never half a character
            if byte in delimiters and (control or g0.width == 1):
                flush()
                out.append(chr(byte))
                g0, g1 = charset.g0, charset.g1
                i += 1
                continue
            target = _ASCII if control else g0
        elif g1 is not None:
            target = g1
        elif charset.fallback_g1 is not None:
            target = charset.fallback_g1
            problems.append(f"bytes beyond ASCII before any escape sequence, read as {target.name}")
        else:
            target = _UNKNOWN_G1
        if target is not run_set:
            flush()
            run_set = target
        run.append(byte)
        i += 1
    flush()
    return "".join(out)


def _decode(data: bytes, charset: _CharacterSet, delimiters: bytes, problems: list[str]) -> str:
    """The text of one element's bytes (all its values, delimiters kept)."""
    if charset.standalone:
        try:
            return data.decode(charset.standalone)
        except UnicodeDecodeError:
            problems.append(_invalid(charset))
            return data.decode(charset.standalone, errors="replace")
    if data.isascii() and _ESC not in data:
        return data.decode("ascii")
    if charset.guess and _ESC not in data:
        try:
            text = data.decode("utf_8")
        except UnicodeDecodeError:
            problems.append(
                "bytes beyond ASCII and no character set declared for them, read as Latin-1 (ISO_IR 100)"
            )
            return data.decode("latin_1")
        problems.append(
            "bytes beyond ASCII and no character set declared for them, read as UTF-8 (ISO_IR 192)"
        )
        return text
    return _decode_iso2022(data, charset, delimiters, problems)


def _clean(text: str, problems: list[str]) -> str:
    """NFC, without control characters."""
    if _CONTROLS.search(text):
        problems.append("control characters replaced with U+FFFD")
        text = _CONTROLS.sub(REPLACEMENT, text)
    return unicodedata.normalize("NFC", text)


def _warning_text(message: str) -> str:
    return "text not decodable with the declared character set" if "decode" in message else "invalid value"


# -- Reading an identifier ------------------------------------------------------------------


class _Reader:
    """Reads typed values out of a dataset, collecting warnings instead of failing."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset
        self.warnings: list[str] = []
        self.character_set_terms = self._character_set_terms()
        self.charset = _character_set(self.character_set_terms, self.warnings)

    def child(self, item: Dataset) -> _Reader:
        """A reader for a sequence item: items inherit the parent's character set (PS3.5 7.5.3)."""
        reader = _Reader.__new__(_Reader)
        reader.dataset = item
        reader.warnings = self.warnings
        reader.character_set_terms = self.character_set_terms
        reader.charset = self.charset
        return reader

    def other_patient_ids(self) -> tuple[tuple[str | None, str], ...]:
        """(issuer, id) pairs of OtherPatientIDsSequence (0010,1002), when the peer returned it."""
        try:
            items = self.dataset.get("OtherPatientIDsSequence")
        except Exception:
            self.warnings.append("OtherPatientIDsSequence: unreadable value")
            return ()
        found: list[tuple[str | None, str]] = []
        for item in items or ():
            reader = self.child(item)
            value = reader.text("PatientID")
            if value:
                found.append((reader.text("IssuerOfPatientID"), value))
        return tuple(found)

    def _character_set_terms(self) -> list[str]:
        element = self._element("SpecificCharacterSet")
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

    def _element(self, keyword: str) -> Any:
        """The element as stored: a RawDataElement when pydicom has not converted it, else a DataElement."""
        try:
            return self.dataset.get_item(tag_for_keyword(keyword) or 0, keep_deferred=True)
        except Exception:
            self.warnings.append(f"{keyword}: unreadable value")
            return None

    def values(self, keyword: str) -> list[str]:
        """The element's values, decoded, NFC, stripped of padding; empty when absent."""
        element = self._element(keyword)
        if element is None:
            return []
        vr = dictionary_VR(keyword)
        problems: list[str] = []
        if isinstance(element, RawDataElement):
            data = (element.value or b"").rstrip(b" \x00")
            charset = self.charset if vr in _CHARSET_VRS else _DEFAULT_REPERTOIRE
            delimiters = _LINE_DELIMITERS + (b"" if vr in _SINGLE_VALUED_VRS else b"\\")
            text = _decode(data, charset, delimiters + (b"^=" if vr == "PN" else b""), problems)
        else:
            text = self._converted(element.value, problems)
        text = _clean(text, problems)
        self.warnings.extend(f"{keyword}: {problem}" for problem in dict.fromkeys(problems))
        parts = [text] if vr in _SINGLE_VALUED_VRS else text.split("\\")
        return [part.strip(" \x00") for part in parts]

    def _converted(self, value: Any, problems: list[str]) -> str:
        """The text of a value pydicom already holds (DICOM JSON, or a dataset built in code)."""
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            items = list(value) if isinstance(value, MultiValue | list | tuple) else [value]
            parts = [
                _decode(item, self.charset, b"\\^=", problems) if isinstance(item, bytes) else str(item)
                for item in items
                if item is not None
            ]
        problems.extend(_warning_text(str(warning.message)) for warning in caught)
        return "\\".join(parts)

    def text(self, keyword: str) -> str | None:
        return "\\".join(value for value in self.values(keyword) if value) or None

    def strings(self, keyword: str) -> tuple[str, ...]:
        return tuple(dict.fromkeys(value for value in self.values(keyword) if value))

    def person_name(self, keyword: str) -> str | None:
        """The Alphabetic component group, else the Ideographic, else the Phonetic one."""
        return next((group for group in self.name_groups(keyword) if group), None)

    def name_groups(self, keyword: str) -> tuple[str, ...]:
        """The component groups of the first value, at most three (trailing empty ones dropped)."""
        values = self.values(keyword)
        groups = person_name_groups(values[0]) if values else ()
        if len(groups) > 3:
            self.warnings.append(f"{keyword}: more than three component groups")
        return groups[:3]

    def date(self, keyword: str) -> dt.date | None:
        text = self.text(keyword)
        if text is None:
            return None
        parsed = parse_da(text)
        if parsed is None:
            self.warnings.append(f"{keyword}: invalid value")
        return parsed

    def time(self, keyword: str) -> dt.time | None:
        text = self.text(keyword)
        if text is None:
            return None
        parsed = parse_tm(text)
        if parsed is None:
            self.warnings.append(f"{keyword}: invalid value")
        return parsed

    def integer(self, keyword: str) -> int | None:
        text = self.text(keyword)
        if text is None:
            return None
        try:
            return int(float(text))
        except ValueError:
            self.warnings.append(f"{keyword}: invalid value")
            return None


def person_name_groups(value: str) -> tuple[str, ...]:
    """The component groups of one decoded PN value (Alphabetic, Ideographic, Phonetic, PS3.5 6.2.1.1).

    Trailing empty components are dropped (``Müller^Anna^^`` is ``Müller^Anna``); a group
    holding nothing but delimiters is empty.
    """
    groups = [group.strip(" ").rstrip("^ ") for group in value.split("=")]
    groups = [group if group.strip("^ ") else "" for group in groups]
    while groups and not groups[-1]:
        groups.pop()
    return tuple(groups)


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


def study_record_from_dataset(
    dataset: Dataset, source_id: str, default_retrieve_ae: str | None = None
) -> StudyRecord | None:
    """The StudyRecord for one identifier, or None when it carries no StudyInstanceUID.

    ``default_retrieve_ae`` stands in for RetrieveAETitle (0008,0054) when the peer leaves it out:
    the AE that answered the C-FIND is then the one to C-MOVE from.
    """
    read = _Reader(dataset)
    uid = read.text("StudyInstanceUID")
    if uid is None:
        return None
    retrieve_ae = read.strings("RetrieveAETitle")
    name_groups = read.name_groups("PatientName")
    return StudyRecord(
        source_id=source_id,
        study_instance_uid=uid,
        patient_id=read.text("PatientID"),
        issuer_of_patient_id=read.text("IssuerOfPatientID"),
        patient_name=next((group for group in name_groups if group), None),
        patient_name_groups=beyond_alphabetic(name_groups),
        patient_birth_date=read.date("PatientBirthDate"),
        patient_sex=read.text("PatientSex"),
        study_date=read.date("StudyDate"),
        study_time=read.time("StudyTime"),
        accession_number=read.text("AccessionNumber"),
        modalities=read.strings("ModalitiesInStudy"),
        description=read.text("StudyDescription"),
        referring_physician_name=read.person_name("ReferringPhysicianName"),
        number_of_series=read.integer("NumberOfStudyRelatedSeries"),
        number_of_instances=read.integer("NumberOfStudyRelatedInstances"),
        retrieve_ae_title=retrieve_ae[0] if retrieve_ae else default_retrieve_ae,
        retrieve_url=read.text("RetrieveURL"),
        specific_character_set=tuple(dict.fromkeys(term for term in read.character_set_terms if term)),
        other_patient_ids=read.other_patient_ids(),
        warnings=tuple(dict.fromkeys(read.warnings)),
    )
