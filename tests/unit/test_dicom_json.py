"""The fast DICOM JSON reader against the reference it replaced, on generated objects, usual and broken."""

from __future__ import annotations

import datetime as dt
import unicodedata
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connectors.dicom import parse_da, parse_tm
from connectors.dicom_json import MalformedObject, record_from_dicom_json
from federation.models import StudyRecord

# -- The reference: record_from_dicom_json as it was before the fast path (commit d30f752) ------

_PN_GROUPS = ("Alphabetic", "Ideographic", "Phonetic")
_EXACT = 2**53


def _nfc(text: str) -> str:
    """NFC, ASCII as it is."""
    return text if text.isascii() else unicodedata.normalize("NFC", text)


class _ReferenceReader:
    """The reader of each attribute, as it was."""

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
        values = attribute.get("Value") if type(attribute) is dict else None
        if type(values) is list and len(values) == 1 and type(values[0]) is str:
            return _nfc(values[0]).strip() or None
        found = self.strings(tag, keyword)
        return "\\".join(found) if found else None

    def person_name(self, tag: str, keyword: str) -> str | None:
        for value in self._values(tag, keyword):
            if isinstance(value, dict):
                groups: list[Any] = [value.get(group) for group in _PN_GROUPS]
            elif isinstance(value, str):
                groups = list(value.split("="))
            else:
                self.warnings.append(f"{keyword}: invalid value")
                continue
            for group in groups:
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
            child = _ReferenceReader(item)
            value = child.text("00100020", "PatientID")
            if value:
                found.append((child.text("00100021", "IssuerOfPatientID"), value))
            self.warnings.extend(child.warnings)
        return tuple(found)


def _reference_groups(item: dict[str, Any]) -> tuple[str, str, str] | None:
    """The PN groups of the first PatientName value that has any, set only beyond Alphabetic."""
    values = (item.get("00100010") or {}).get("Value") or []
    for value in values:
        if isinstance(value, dict):
            text = "=".join(v if isinstance(v, str) else "" for v in (value.get(g) for g in _PN_GROUPS))
        elif isinstance(value, str):
            text = value
        else:
            continue
        parts = [_nfc(p.strip()).rstrip("^ ") for p in text.split("=")][:3]
        groups = [p if p.strip("^ ") else "" for p in parts] + ["", ""]
        if any(groups):
            return (groups[0], groups[1], groups[2]) if groups[1] or groups[2] else None
    return None


def reference_record(item: Any, source_id: str) -> StudyRecord | None:
    """record_from_dicom_json as it was."""
    if not isinstance(item, dict):
        raise MalformedObject("not a JSON object")
    read = _ReferenceReader(item)
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
        patient_name_groups=_reference_groups(item),
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


# -- Generated objects ---------------------------------------------------------------------------

TEXT_TAGS = ("0020000D", "00100020", "00100021", "00100040", "00080050", "00081030", "00081190")
STRINGS_TAGS = ("00080054", "00080061", "00080005")
NAME_TAGS = ("00100010", "00080090")
DATE_TAGS = ("00100030", "00080020")
TIME_TAGS = ("00080030",)
INTEGER_TAGS = ("00201206", "00201208")

# Decomposed and composed letters, full-width and ideographic spaces, PN delimiters, digits of other scripts.
_CHARS = st.sampled_from(
    [*"aZ09 .-:^=\\\t", "e\u0301", "\u00e9", "u\u0308", "\u3000", "\u2000", "山", "ア", "²", "١", "\u00a0"]
)
_text = st.lists(_CHARS, max_size=8).map("".join)
_digits = st.text(alphabet="0123456789", min_size=0, max_size=9)
_dates = st.one_of(
    st.dates(min_value=dt.date(1, 1, 1)).map(lambda d: d.strftime("%Y%m%d").zfill(8)),
    st.dates().map(lambda d: d.isoformat()),
    st.dates().map(lambda d: d.isoformat().replace("-", ".")),
    _digits,
    st.sampled_from(["20210230", "00000101", "20211301", " 19700101 ", "1970O101", "١٩٧٠٠١٠١"]),
)
_times = st.one_of(
    st.times().map(lambda t: t.strftime("%H%M%S")),
    st.times().map(lambda t: t.strftime("%H%M%S.%f")[: 7 + t.microsecond % 7]),
    st.times().map(lambda t: t.strftime("%H:%M:%S")),
    _digits,
    st.sampled_from(["235960", "240000", "126000", "14", "1410", "141005.", "141005.1234567", "¹²3456"]),
)
_numbers = st.one_of(
    st.integers(min_value=-(2**60), max_value=2**60),
    st.sampled_from([2**53, 2**53 + 1, -(2**53) - 1, 10**30, 0, -1]),
    st.floats(allow_nan=True, allow_infinity=False),
    st.integers(0, 99999).map(str),
    st.sampled_from(["5", " 7 ", "3.0", "1e3", "x", "", "12\\13"]),
)
_junk = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 5),
    st.floats(allow_nan=False, allow_infinity=False),
    _text,
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.sampled_from(["Alphabetic", "x"]), st.integers(), max_size=2),
)


def _name_value() -> st.SearchStrategy[Any]:
    """A PN value: an object of groups, the string form, or junk."""
    group = st.one_of(
        _text, st.sampled_from(["Müller^Anna", "Mu\u0308ller^Anna=ミュラー", "^^", " ", "=山田"]), _junk
    )
    return st.one_of(
        st.fixed_dictionaries({}, optional={g: group for g in ("Alphabetic", "Ideographic", "Phonetic")}),
        st.fixed_dictionaries(
            {"Alphabetic": st.sampled_from(["Dubois^Marc", "M\u00fcller^Anna", " Doe^J^^ "])}
        ),
        _text,
        _junk,
    )


def _attribute(value: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """An attribute: usually one value of the right kind, else several, none, a broken Value, or junk."""
    usual = value.map(lambda v: {"vr": "XX", "Value": [v]})
    return st.one_of(
        usual,
        usual,
        usual,
        st.lists(st.one_of(value, _junk), max_size=4).map(lambda vs: {"vr": "XX", "Value": vs}),
        st.just({"vr": "XX"}),
        _junk.map(lambda v: {"vr": "XX", "Value": v}),
        _junk,
    )


_usual_text = st.one_of(_text, st.sampled_from(["1.2.3", "DEMO-001", "MR", "ISO_IR 192", "IRM cérébrale"]))
_other_ids = st.one_of(
    st.lists(
        st.one_of(
            st.fixed_dictionaries(
                {},
                optional={"00100020": _attribute(_usual_text), "00100021": _attribute(_usual_text)},
            ),
            _junk,
        ),
        max_size=3,
    ).map(lambda items: {"vr": "SQ", "Value": items}),
    _junk,
)


@st.composite
def dicom_json_objects(draw: st.DrawFn) -> Any:
    """A QIDO study object, often well formed, often not."""
    kinds = {
        **dict.fromkeys(TEXT_TAGS + STRINGS_TAGS, _attribute(_usual_text)),
        **dict.fromkeys(NAME_TAGS, _attribute(_name_value())),
        **dict.fromkeys(DATE_TAGS, _attribute(_dates)),
        **dict.fromkeys(TIME_TAGS, _attribute(_times)),
        **dict.fromkeys(INTEGER_TAGS, _attribute(_numbers)),
        "00101002": _other_ids,
    }
    tags = draw(st.lists(st.sampled_from(sorted(kinds)), unique=True, max_size=len(kinds)))
    if draw(st.integers(0, 3)):  # mostly with a StudyInstanceUID, the objects that become records
        tags.insert(draw(st.integers(0, len(tags))), "0020000D")
    item = {tag: draw(kinds[tag]) for tag in dict.fromkeys(tags)}
    return item if draw(st.integers(0, 30)) else draw(_junk)


def _outcome(read: Any, item: Any) -> tuple[str, Any]:
    """What reading *item* gave: the record's fields, or the exception's type and message."""
    try:
        record = read(item, "src")
    except Exception as exc:  # compared, whatever it is
        return ("raised", (type(exc), str(exc)))
    return ("record", None if record is None else (record, record.model_dump()))


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(dicom_json_objects())
def test_fast_reader_matches_the_reference_on_generated_objects(item: Any) -> None:
    assert _outcome(record_from_dicom_json, item) == _outcome(reference_record, item)


@pytest.mark.parametrize(
    "item",
    [
        {"0020000D": {"Value": ["1.2"]}, "00080030": {"Value": ["235960"]}},
        {"0020000D": {"Value": ["1.2"]}, "00080030": {"Value": ["¹²3456"]}, "00081030": []},
        {"0020000D": {"Value": ["1.2"]}, "00201206": {"Value": [float("inf")]}},
        {"0020000D": {"Value": ["1.2"]}, "00201208": {"Value": [2**53 + 1]}, "00201206": {"Value": ["1e3"]}},
        {"0020000D": {"Value": ["1.2"]}, "00100030": {"Value": ["20210230"]}, "00080020": {"Value": [True]}},
        {"0020000D": {"Value": ["1.2", "1.2", " 1.3 "]}, "00080061": {"Value": ["CT", "SR", "CT", None]}},
        {
            "0020000D": {"Value": ["1.2"]},
            "00100010": {"Value": [{"Alphabetic": "^ ", "Ideographic": "山田"}]},
        },
        {"0020000D": {"Value": ["1.2"]}, "00100010": {"Value": None}, "00080054": "AE"},
        {"0020000D": {"Value": ["1.2"]}, "00101002": {"Value": [{"00100020": {"Value": ["X"]}}, 3]}},
        {"0020000D": {"vr": "UI"}, "00100020": []},
        {"0020000D": {"Value": ["CE\u0301"]}, "00100020": {"Value": ["\u3000"]}},
    ],
)
def test_fast_reader_matches_the_reference_on_edge_cases(item: Any) -> None:
    assert _outcome(record_from_dicom_json, item) == _outcome(reference_record, item)


def test_usual_object_is_read_by_the_fast_path_alike() -> None:
    item = {
        "00080005": {"vr": "CS", "Value": ["ISO_IR 192"]},
        "00080020": {"vr": "DA", "Value": ["20210602"]},
        "00080030": {"vr": "TM", "Value": ["141005"]},
        "00080061": {"vr": "CS", "Value": ["MR"]},
        "00080090": {"vr": "PN", "Value": [{"Alphabetic": "Dubois^Marc"}]},
        "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Mu\u0308ller^Anna"}]},
        "00100030": {"vr": "DA", "Value": ["19670312"]},
        "0020000D": {"vr": "UI", "Value": ["1.2.3"]},
        "00201206": {"vr": "IS", "Value": [5]},
    }
    record = record_from_dicom_json(item, "s")
    assert record == reference_record(item, "s")
    assert record is not None
    assert (record.patient_name, record.study_time, record.modalities) == (
        "Müller^Anna",
        dt.time(14, 10, 5),
        ("MR",),
    )
