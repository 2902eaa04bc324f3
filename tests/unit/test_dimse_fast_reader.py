"""A C-FIND identifier read from its bytes gives the record the pydicom Dataset path gives, or is declined.

``study_record_from_bytes`` is the fast path of ``study_record_from_dataset``: for every identifier
it reads, the record (values, warnings, character sets) must be the one the DatasetReader reads
from the Dataset pynetdicom decodes; what it does not read it declines (NotReadFromBytes).
"""

from __future__ import annotations

import struct
import warnings
from io import BytesIO

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pynetdicom.dsutils import decode

from connectors.normalize import NotReadFromBytes, study_record_from_bytes, study_record_from_dataset
from federation.models import StudyRecord

_LONG_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"}
Element = tuple[int, str, bytes]

# (tag, VR) of the study attributes, and some a peer adds that are skipped.
ATTRIBUTES = {
    "SpecificCharacterSet": (0x00080005, "CS"),
    "StudyDate": (0x00080020, "DA"),
    "StudyTime": (0x00080030, "TM"),
    "AccessionNumber": (0x00080050, "SH"),
    "QueryRetrieveLevel": (0x00080052, "CS"),
    "RetrieveAETitle": (0x00080054, "AE"),
    "InstanceAvailability": (0x00080056, "CS"),
    "ModalitiesInStudy": (0x00080061, "CS"),
    "ReferringPhysicianName": (0x00080090, "PN"),
    "StudyDescription": (0x00081030, "LO"),
    "RetrieveURL": (0x00081190, "UR"),
    "PatientName": (0x00100010, "PN"),
    "PatientID": (0x00100020, "LO"),
    "IssuerOfPatientID": (0x00100021, "LO"),
    "PatientBirthDate": (0x00100030, "DA"),
    "PatientSex": (0x00100040, "CS"),
    "StudyInstanceUID": (0x0020000D, "UI"),
    "NumberOfStudyRelatedSeries": (0x00201206, "IS"),
    "NumberOfStudyRelatedInstances": (0x00201208, "IS"),
}
CHARSETS = [
    b"",
    b"ISO_IR 100",
    b"ISO_IR 192",
    b"ISO_IR 13",
    b"ISO_IR 203",
    b"GB18030",
    b"\\ISO 2022 IR 87",
    b"ISO 2022 IR 6\\ISO 2022 IR 87",
    b"ISO 2022 IR 13\\ISO 2022 IR 87",
    b"\\ISO 2022 IR 149",
    b"\\ISO 2022 IR 58",
    b"ISO 2022 IR 100\\ISO 2022 IR 126",
    b"ISO_IR 999",
    b" ",
]
# Fragments values are made of: ASCII, delimiters, padding, Latin-1, UTF-8, ISO 2022 escapes, controls.
FRAGMENTS = [
    b"Doe",
    b"20240131",
    b"20241399",
    b"101530.25",
    b"12:30",
    b"42",
    b"4.0",
    b"x",
    b"CT",
    b"MR",
    b"1.2.840.1",
    b"^",
    b"=",
    b"\\",
    b" ",
    b"\x00",
    b"\t",
    b"\x07",
    b"\x7f",
    "Müller".encode("latin-1"),
    "Müller".encode(),
    "ÆØ".encode(),
    b"\x1b$B;3ED\x1b(B",
    b"\x1b$)C\xc8\xab\xb1\xe6\xb5\xbf",
    b"\x1b$)A\xd6\xd0",
    b"\x1b(J",
    b"\x1b-F\xe1",
    b"\xb1\xa2",
    b"\x1b%G",
]

values = st.lists(st.sampled_from(FRAGMENTS), max_size=6).map(b"".join)


def _element(tag: int, vr: str, value: bytes, implicit: bool) -> bytes:
    group, number = tag >> 16, tag & 0xFFFF
    if implicit:
        return struct.pack("<HHL", group, number, len(value)) + value
    if vr in _LONG_VRS:
        return struct.pack("<HH2s2xL", group, number, vr.encode(), len(value)) + value
    return struct.pack("<HH2sH", group, number, vr.encode(), len(value)) + value


def identifier(elements: list[Element], implicit: bool) -> bytes:
    """The data set, elements in the given order (ascending tags unless a test says otherwise)."""
    return b"".join(_element(tag, vr, value, implicit) for tag, vr, value in elements)


def reference(data: bytes, implicit: bool) -> StudyRecord | None:
    """What the general path reads: the Dataset pynetdicom decodes, read by the DatasetReader."""
    with warnings.catch_warnings():  # pydicom's warnings on an unknown SpecificCharacterSet term
        warnings.simplefilter("ignore", UserWarning)
        dataset = decode(BytesIO(data), implicit, True)
    return study_record_from_dataset(dataset, "a", "AE_A")


def fast(data: bytes, implicit: bool) -> StudyRecord | None:
    """The fast path, under the same warning filters (pydicom's decoding of some bytes depends on them).

    Its record is built without validation: it must be the very record validating its values makes
    (each value of its field's exact type, the same fields set, in the same order).
    """
    record = study_record_from_bytes(data, implicit, "a", "AE_A")
    if record is not None:
        validated = StudyRecord.model_validate(
            {name: getattr(record, name) for name in record.model_fields_set}
        )
        assert validated == record
        assert validated.model_fields_set == record.model_fields_set
        assert [(k, type(v)) for k, v in validated.__dict__.items()] == [
            (k, type(v)) for k, v in record.__dict__.items()
        ]
    return record


@st.composite
def identifiers(draw: st.DrawFn) -> list[Element]:
    """A study-level identifier: a character set, each attribute absent, empty or of some bytes."""
    elements: list[Element] = []
    for keyword, (tag, vr) in ATTRIBUTES.items():
        if keyword == "SpecificCharacterSet":
            charset = draw(st.sampled_from(CHARSETS))
            if charset or draw(st.booleans()):
                elements.append((tag, vr, charset))
        elif keyword == "StudyInstanceUID":
            elements.append((tag, vr, draw(st.sampled_from([b"1.2.3", b"1.2.3\x00", b"", b" 1.2 "]))))
        elif draw(st.booleans()):
            elements.append((tag, vr, draw(values)))
    return elements


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(identifiers(), st.booleans())
@example(
    [
        (0x00080005, "CS", b"\\ISO 2022 IR 87"),
        (0x00080061, "CS", b"CT\\MR\\CT\\"),
        (0x00100010, "PN", b"Yamada^Tarou=\x1b$B;3ED\x1b(B^\x1b$BB@O:\x1b(B= "),
        (0x0020000D, "UI", b"1.2.3\x00"),
    ],
    True,
)
def test_the_fast_path_reads_what_the_dataset_reader_reads(elements: list[Element], implicit: bool) -> None:
    data = identifier(elements, implicit)
    try:
        got = fast(data, implicit)
    except NotReadFromBytes:  # declined only for a SpecificCharacterSet beyond ASCII, never drawn here
        pytest.fail("an identifier of defined lengths and ascending tags was declined")
    assert got == reference(data, implicit)


CT_STUDY: list[Element] = [
    (0x00080052, "CS", b"STUDY "),
    (0x00080061, "CS", b"CT\\MR"),
    (0x00100010, "PN", b"Doe^Jane"),
    (0x0020000D, "UI", b"1.2.3\x00"),
]
_ITEM_CONTENT = _element(0x00100020, "LO", b"OTHER-ID", True)
SEQUENCE_ITEM = b"\xfe\xff\x00\xe0" + struct.pack("<L", len(_ITEM_CONTENT)) + _ITEM_CONTENT


@pytest.mark.parametrize("implicit", [True, False], ids=["implicit", "explicit"])
@pytest.mark.parametrize(
    "elements",
    [
        pytest.param(CT_STUDY, id="usual"),
        pytest.param([*CT_STUDY[:3], (0x00101002, "SQ", b""), CT_STUDY[3]], id="empty-sequence"),
        pytest.param(
            [*CT_STUDY[:2], (0x00081110, "SQ", SEQUENCE_ITEM), *CT_STUDY[2:]], id="sequence-skipped"
        ),
        pytest.param([*CT_STUDY[:2], (0x00091010, "LO", b"private"), *CT_STUDY[2:]], id="private-element"),
        pytest.param([(0x00100010, "PN", b"Doe^Jane")], id="no-study-uid"),
        pytest.param([(0x00080054, "AE", b"PACS\\OTHER"), *CT_STUDY[1:]], id="retrieve-ae"),
        pytest.param([(0x0020000D, "UI", b"1.2.3"), (0x00201206, "IS", b"three")], id="invalid-is"),
        pytest.param([(0x00100010, "PN", b"A=B=C=D"), (0x0020000D, "UI", b"1.2")], id="four-groups"),
        pytest.param([(0x00100010, "PN", b"Doe^Jan"), (0x0020000D, "UI", b"1.23")], id="odd-lengths"),
    ],
)
def test_identifiers_read_from_bytes(elements: list[Element], implicit: bool) -> None:
    data = identifier(elements, implicit)
    assert fast(data, implicit) == reference(data, implicit)


@pytest.mark.parametrize(
    ("elements", "implicit"),
    [
        pytest.param([*CT_STUDY[:3], (0x00101002, "SQ", SEQUENCE_ITEM), CT_STUDY[3]], True, id="other-ids"),
        pytest.param([CT_STUDY[3], CT_STUDY[0]], True, id="tags-out-of-order"),
        pytest.param([CT_STUDY[0], CT_STUDY[0], CT_STUDY[3]], True, id="tag-twice"),
        pytest.param([(0x00100010, "LO", b"Doe"), CT_STUDY[3]], False, id="another-vr"),
        pytest.param(
            [(0x00080005, "CS", "Ä".encode("latin-1")), CT_STUDY[3]], True, id="charset-beyond-ascii"
        ),
    ],
)
def test_what_the_fast_path_declines(elements: list[Element], implicit: bool) -> None:
    with pytest.raises(NotReadFromBytes):
        study_record_from_bytes(identifier(elements, implicit), implicit, "a")


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"\x08\x00\x50\x00\xff\xff\xff\xff", id="undefined-length"),
        pytest.param(identifier(CT_STUDY, True)[:-3], id="truncated-value"),
        pytest.param(identifier(CT_STUDY, True) + b"\x10\x00", id="truncated-header"),
        pytest.param(identifier(CT_STUDY, False), id="explicit-as-implicit"),
        pytest.param(b"\xfe\xff\x0d\xe0\x00\x00\x00\x00" + identifier(CT_STUDY, True), id="delimiter"),
    ],
)
def test_what_the_fast_path_declines_in_implicit_vr(data: bytes) -> None:
    with pytest.raises(NotReadFromBytes):
        study_record_from_bytes(data, True, "a")
