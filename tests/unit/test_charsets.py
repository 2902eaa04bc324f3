"""Every DICOM character set, decoded through ``study_record_from_dataset`` from identifiers as
they come off the wire (implicit VR little endian bytes).

References: PS3.3 C.12.1.1.2 (defined terms of Specific Character Set), PS3.5 6.1 (character
repertoires, ISO 2022 code extensions) and the worked examples of PS3.5 Annexes H (Japanese),
I (Korean) and J (Chinese); pydicom's charset sample files are real files from the DICOM
community. pytest turns warnings into errors here, so any warning pydicom emitted while a
value is decoded would fail the test: problems must come back as record warnings instead.
"""

from __future__ import annotations

import unicodedata
from io import BytesIO
from pathlib import Path

import pydicom
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydicom import Dataset
from pydicom.data import get_charset_files
from pydicom.dataelem import RawDataElement
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.filewriter import write_dataset
from pydicom.tag import Tag

from connectors.dicom import person_name_groups, study_record_from_dataset
from connectors.dicom_json import record_from_qido_item
from connectors.normalize import DatasetReader
from federation.models import StudyRecord

ESC = b"\x1b"


def _wire(ds: Dataset) -> Dataset:
    """Encode and decode like a C-FIND response on the wire (implicit VR little endian)."""
    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, True
    write_dataset(buffer, ds)
    return read_dataset(BytesIO(buffer.getvalue()), is_implicit_VR=True, is_little_endian=True)


def _encoded(charset: str | list[str], **values: str) -> Dataset:
    """An identifier whose text pydicom encodes in *charset* (it fails the test if it cannot)."""
    ds = Dataset()
    ds.SpecificCharacterSet = charset
    ds.QueryRetrieveLevel = "STUDY"
    ds.StudyInstanceUID = "1.2.3.4"
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    return _wire(ds)


def _raw(charset: str | None, **values: bytes) -> Dataset:
    """An identifier as read off the wire with exactly these bytes (charset values split by ``\\``)."""
    ds = _wire(Dataset())
    elements = {"StudyInstanceUID": b"1.2.3.4\x00", **values}
    if charset is not None:
        elements["SpecificCharacterSet"] = charset.encode("ascii")
    for keyword, data in elements.items():
        if len(data) % 2:
            data += b" "
        tag = Tag(keyword)
        ds[tag] = RawDataElement(tag, None, len(data), data, 0, True, True)
    return ds


def _record(ds: Dataset) -> StudyRecord:
    record = study_record_from_dataset(ds, "s")
    assert record is not None
    return record


def _groups(ds: Dataset, keyword: str = "PatientName") -> tuple[str, ...]:
    """Every component group of the first value, as decoded."""
    return person_name_groups(DatasetReader(ds).values(keyword)[0])


def _jis(text: str) -> bytes:
    """JIS X 0208 text with its escape sequences: ``ESC $ B`` … ``ESC ( B``."""
    return text.encode("iso2022_jp")


# -- Single-byte sets and the stand-alone multi-byte sets, encoded by pydicom ----------------

SINGLE_AND_STANDALONE = [
    # (Specific Character Set, Python codec of the bytes on the wire, PatientName, StudyDescription)
    ("ISO_IR 6", "ascii", "Smith^John", "CT CHEST"),
    ("ISO_IR 100", "latin_1", "Buc^Jérôme", "IRM CÉRÉBRALE"),
    ("ISO_IR 101", "iso8859_2", "Dvořák^Antonín", "MR MOZKU"),
    ("ISO_IR 109", "iso8859_3", "Ħabib^Ġużeppi", "MR TAL-MOĦĦ"),
    ("ISO_IR 110", "iso8859_4", "Šķēle^Ģirts", "GALVAS MR"),
    ("ISO_IR 144", "iso8859_5", "Иванов^Пётр", "МРТ ГОЛОВНОГО МОЗГА"),
    ("ISO_IR 127", "iso8859_6", "قباني^لنزار", "رنين مغناطيسي"),
    ("ISO_IR 126", "iso8859_7", "Παπαδόπουλος^Νίκος", "ΜΑΓΝΗΤΙΚΗ ΕΓΚΕΦΑΛΟΥ"),
    ("ISO_IR 138", "iso8859_8", "שרון^דבורה", "MRI מוח"),
    ("ISO_IR 148", "iso8859_9", "Çelik^Ayşegül", "BEYİN MR"),
    ("ISO_IR 166", "tis_620", "ใจดี^สมชาย", "MRI สมอง"),
    # PS3.5 J.1 (UTF-8), and the Chinese sets; 誠 and 錦 end in 0x5C ("\"), 區 in 0x5E ("^").
    ("ISO_IR 192", "utf_8", "Wang^XiaoDong=王^小東", "頭部 MRI"),
    ("GB18030", "gb18030", "Chen^Cheng=陳^誠", "头部 MRI 㐀"),
    ("GBK", "gbk", "Ou^Jinrong=區^錦榮", "頭部 MRI"),
]


@pytest.mark.parametrize(("charset", "codec", "name", "description"), SINGLE_AND_STANDALONE)
def test_single_byte_and_standalone_sets(charset: str, codec: str, name: str, description: str) -> None:
    wire = _encoded(charset, PatientName=name, StudyDescription=description)
    # The wire holds the declared set's bytes, not UTF-8 in disguise.
    assert wire.get_item("PatientName").value.rstrip(b" ") == name.encode(codec)
    record = _record(wire)
    assert record.patient_name == name.split("=")[0]
    assert "=".join(_groups(wire)) == name
    assert record.description == description
    assert record.specific_character_set == (charset,)
    assert record.warnings == ()


@pytest.mark.parametrize(
    ("charset", "data", "name"),
    [
        ("ISO_IR 203", b"L\xbdvenbruck^Zo\xe9", "Lœvenbruck^Zoé"),  # ISO 8859-15: œ is 0xBD
        ("ISO_IR 13", b"\xd4\xcf\xc0\xde^\xc0\xdb\xb3", "ﾔﾏﾀﾞ^ﾀﾛｳ"),  # JIS X 0201 Katakana
        ("", b"Smith^John", "Smith^John"),
    ],
)
def test_sets_pydicom_does_not_write(charset: str, data: bytes, name: str) -> None:
    record = _record(_raw(charset, PatientName=data))
    assert (record.patient_name, record.warnings) == (name, ())


def test_iso_ir_13_bytes_beyond_katakana_are_invalid() -> None:
    # JIS X 0201 has Katakana at 0xA1-0xDF only; pydicom reads ISO_IR 13 as Shift JIS, where
    # 0x81 0x40 is an ideographic space.
    record = _record(_raw("ISO_IR 13", PatientName=b"\xd4\xcf\x81\x40"))
    assert record.patient_name is not None and record.patient_name.startswith("ﾔﾏ\ufffd")
    assert any(w.startswith("PatientName:") and "not valid" in w for w in record.warnings)


# -- ISO 2022 code extensions: escape sequences (PS3.5 6.1.2.5, Annexes H, I, J) --------------

YAMADA = "Yamada^Tarou=山田^太郎=やまだ^たろう"
H31 = b"Yamada^Tarou=\x1b$B;3ED\x1b(B^\x1b$BB@O:\x1b(B=\x1b$B$d$^$@\x1b(B^\x1b$B$?$m$&\x1b(B"
H32 = b"\xd4\xcf\xc0\xde^\xc0\xdb\xb3=\x1b$B;3ED\x1b(J^\x1b$BB@O:\x1b(J=\x1b$B$d$^$@\x1b(J^\x1b$B$?$m$&\x1b(J"
I2 = b"Hong^Gildong=\x1b$)C\xfb\xf3^\x1b$)C\xd1\xce\xd4\xd7=\x1b$)C\xc8\xab^\x1b$)C\xb1\xe6\xb5\xbf"
J2 = b"Zhang^XiaoDong=\x1b$)A\xd5\xc5^\x1b$)A\xd0\xa1\xb6\xab="
# 濵 is in JIS X 0212 (ESC $ ( D), 田 and 健 in JIS X 0208.
IR159 = b"Hamada^Ken=\x1b$(DI&\x1b$BED\x1b(B^" + _jis("健") + b"=" + _jis("はまだ") + b"^" + _jis("けん")


@pytest.mark.parametrize(
    ("charset", "data", "groups"),
    [
        ("\\ISO 2022 IR 87", H31, ("Yamada^Tarou", "山田^太郎", "やまだ^たろう")),  # PS3.5 H.3.1
        ("ISO 2022 IR 13\\ISO 2022 IR 87", H32, ("ﾔﾏﾀﾞ^ﾀﾛｳ", "山田^太郎", "やまだ^たろう")),  # H.3.2
        ("\\ISO 2022 IR 87\\ISO 2022 IR 159", IR159, ("Hamada^Ken", "濵田^健", "はまだ^けん")),
        ("\\ISO 2022 IR 149", I2, ("Hong^Gildong", "洪^吉洞", "홍^길동")),  # PS3.5 I.2
        ("\\ISO 2022 IR 58", J2, ("Zhang^XiaoDong", "张^小东")),  # PS3.5 J.2
        ("ISO 2022 IR 6\\ISO 2022 IR 87", b"\x1b$B$d$^$@\x1b(B^\x1b$B$?$m$&\x1b(B", ("やまだ^たろう",)),
    ],
)
def test_iso2022_person_name_groups(charset: str, data: bytes, groups: tuple[str, ...]) -> None:
    wire = _raw(charset, PatientName=data)
    record = _record(wire)
    assert _groups(wire) == groups
    assert record.patient_name == groups[0]
    assert record.patient_pn == "=".join(groups)
    assert record.warnings == ()


def test_pydicom_writes_the_ps35_h31_example_and_it_reads_back() -> None:
    wire = _encoded(["", "ISO 2022 IR 87"], PatientName=YAMADA, StudyDescription="胸部 CT")
    assert wire.get_item("PatientName").value.rstrip(b" ") == H31
    assert wire.get_item("StudyDescription").value.startswith(ESC + b"$B")
    record = _record(wire)
    assert (record.patient_name, record.description, record.warnings) == ("Yamada^Tarou", "胸部 CT", ())
    assert _groups(wire) == tuple(YAMADA.split("="))


@pytest.mark.parametrize(
    "name",
    [
        "Sone^Tomoyo=曽根^智代=そね^ともよ",  # そ is 0x243D in JIS X 0208: its second byte is "="
        "Kubo^Yoshito=久保^義人=くぼ^よしと",  # ぼ is 0x245C: its second byte is "\"
        YAMADA,  # ま is 0x245E: its second byte is "^"
    ],
)
def test_delimiter_bytes_inside_jis_characters_are_not_delimiters(name: str) -> None:
    wire = _encoded(["", "ISO 2022 IR 87"], PatientName=name)
    assert _groups(wire) == tuple(name.split("="))
    assert _record(wire).warnings == ()


def test_multi_valued_person_name_with_escape_sequences() -> None:
    second = "Kubo^Yoshito=久保^義人=くぼ^よしと"
    wire = _raw("\\ISO 2022 IR 87", PatientName=H31 + b"\\" + _encoded_pn(second))
    assert DatasetReader(wire).values("PatientName") == [YAMADA, second]
    assert _record(wire).patient_name == "Yamada^Tarou"


def _encoded_pn(name: str) -> bytes:
    data: bytes = _encoded(["", "ISO 2022 IR 87"], PatientName=name).get_item("PatientName").value
    return data.rstrip(b" ")


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"=" + _jis("山田") + b"^" + _jis("太郎"), "山田^太郎"),
        (b"==" + _jis("やまだ") + b"^" + _jis("たろう"), "やまだ^たろう"),
        (b"Yamada^Tarou^^^=" + _jis("山田"), "Yamada^Tarou"),
    ],
)
def test_patient_name_is_alphabetic_else_ideographic_else_phonetic(data: bytes, expected: str) -> None:
    record = _record(_raw("\\ISO 2022 IR 87", PatientName=data))
    assert (record.patient_name, record.warnings) == (expected, ())


def _iso2022_single_byte(final: bytes, codec: str, name: str) -> bytes:
    """*name* under ISO 2022 IR 6 plus one 8-bit set: each component that needs the set designates
    it to G1 again, since a ``^`` restores the initial state (PS3.5 6.1.2.5.3)."""
    parts = []
    for component in name.split("^"):
        encoded = component.encode(codec)
        parts.append(encoded if encoded.isascii() else ESC + b"-" + final + encoded)
    return b"^".join(parts)


@pytest.mark.parametrize(
    ("number", "final", "codec", "name"),
    [
        ("100", b"A", "latin_1", "Buc^Jérôme"),
        ("101", b"B", "iso8859_2", "Dvořák^Antonín"),
        ("109", b"C", "iso8859_3", "Ħabib^Ġużeppi"),
        ("110", b"D", "iso8859_4", "Šķēle^Ģirts"),
        ("144", b"L", "iso8859_5", "Иванов^Пётр"),
        ("127", b"G", "iso8859_6", "قباني^لنزار"),
        ("126", b"F", "iso8859_7", "Παπαδόπουλος^Νίκος"),
        ("138", b"H", "iso8859_8", "שרון^דבורה"),
        ("148", b"M", "iso8859_9", "Çelik^Ayşegül"),
        ("203", b"b", "iso8859_15", "Lœvenbruck^Zoé"),
        ("166", b"T", "tis_620", "ใจดี^สมชาย"),
    ],
)
def test_iso2022_single_byte_extensions(number: str, final: bytes, codec: str, name: str) -> None:
    data = _iso2022_single_byte(final, codec, name)
    assert ESC in data
    record = _record(_raw(f"ISO 2022 IR 6\\ISO 2022 IR {number}", PatientName=data))
    assert (record.patient_name, record.warnings) == (name, ())


def test_a_delimiter_restores_the_initial_g1_set() -> None:
    # Value 1 makes Latin-1 the initial G1 set; ESC - F switches to Greek until the "^".
    # Without the reset, 0xFC after "^" would be read as Greek "ό" instead of "ü".
    greek = "Διονυσιος".encode("iso8859_7")
    data = ESC + b"-F" + greek + b"^M\xfcller=" + ESC + b"-F" + greek
    wire = _raw("ISO 2022 IR 100\\ISO 2022 IR 126", PatientName=data)
    assert _groups(wire) == ("Διονυσιος^Müller", "Διονυσιος")
    assert _record(wire).warnings == ()


def test_a_delimiter_ends_a_g1_designation() -> None:
    # After "^" no G1 set is designated again (value 1 has none): the KS X 1001 bytes that follow
    # without ESC $ ) C are read with the declared extension and a warning, not as Latin-1 "ûó".
    record = _record(_raw("\\ISO 2022 IR 149", PatientName=b"Hong=\x1b$)C\xfb\xf3^\xfb\xf3"))
    assert _groups(_raw("\\ISO 2022 IR 149", PatientName=b"Hong=\x1b$)C\xfb\xf3^\xfb\xf3")) == (
        "Hong",
        "洪^洪",
    )
    assert any(w.startswith("PatientName:") and "KS X 1001" in w for w in record.warnings)


def test_a_g0_designation_leaves_g1_as_it_was() -> None:
    # ESC ( B designates ASCII to G0 only: the Greek set of value 1 stays in G1, so 0xC4 0xE9
    # after it are "Δι", not Latin-1 "Äé".
    data = b"\xc4\xe9\x1b$B;3\x1b(B\xc4\xe9"
    record = _record(_raw("ISO 2022 IR 126\\ISO 2022 IR 87", StudyDescription=data))
    assert (record.description, record.warnings) == ("Δι山Δι", ())


def test_gb2312_without_its_escape_sequence_is_read_with_a_warning() -> None:
    # pydicom writes ISO 2022 IR 58 text without ESC $ ) A; the declared extension is assumed.
    wire = _encoded(["", "ISO 2022 IR 58"], PatientName="Zhang^XiaoDong=张^小东")
    assert ESC not in wire.get_item("PatientName").value
    record = _record(wire)
    assert _groups(wire) == ("Zhang^XiaoDong", "张^小东")
    assert any("PatientName" in w and "GB 2312" in w for w in record.warnings)


# -- Real files from the DICOM community (pydicom's charset samples) -------------------------

SAMPLES = {
    "chrArab.dcm": "قباني^لنزار",
    "chrFren.dcm": "Buc^Jérôme",
    "chrFrenMulti.dcm": "Buc^Jérôme",
    "chrGerm.dcm": "Äneas^Rüdiger",
    "chrGreek.dcm": "Διονυσιος",
    "chrH31.dcm": YAMADA,
    "chrH32.dcm": "ﾔﾏﾀﾞ^ﾀﾛｳ=山田^太郎=やまだ^たろう",
    "chrHbrw.dcm": "שרון^דבורה",
    "chrI2.dcm": "Hong^Gildong=洪^吉洞=홍^길동",
    "chrJapMulti.dcm": "やまだ^たろう",
    "chrJapMultiExplicitIR6.dcm": "やまだ^たろう",
    "chrKoreanMulti.dcm": "김희중",
    "chrRuss.dcm": "Люкceмбypг",
    "chrX1.dcm": "Wang^XiaoDong=王^小東",
    "chrX2.dcm": "Wang^XiaoDong=王^小东",
}


@pytest.mark.parametrize(("filename", "name"), sorted(SAMPLES.items()))
def test_pydicom_charset_sample_files(filename: str, name: str) -> None:
    [path] = [p for p in get_charset_files(filename) if Path(p).name == filename]
    ds = pydicom.dcmread(path, force=True)
    record = _record(ds)
    assert "=".join(_groups(ds)) == name
    assert record.patient_name == next(group for group in name.split("=") if group)
    assert record.patient_pn == name.rstrip("=")
    groups = (*name.split("="), "", "")[:3]
    assert record.patient_name_groups == (groups if any(groups[1:]) else None)
    assert record.warnings == ()


# -- What cannot be decoded: replacement characters and a warning, never an exception ---------


@pytest.mark.parametrize(
    ("charset", "keyword", "data"),
    [
        ("ISO_IR 192", "PatientName", b"\xff\xfeAnna"),
        ("ISO_IR 192", "PatientName", b"M\xc3^Anna"),  # a truncated two-byte sequence
        ("ISO_IR 126", "PatientName", b"\xc4\xe9\xd2"),  # 0xD2 is not assigned in ISO 8859-7
        ("\\ISO 2022 IR 87", "PatientName", b"Yamada\x1b$B;3E\x1b(B"),  # half a JIS character
        ("\\ISO 2022 IR 87", "PatientName", b"Yamada\xe9"),  # no G1 set to read 0xE9 with
        ("\\ISO 2022 IR 149", "PatientName", b"Hong\x1b$)C\xfb"),  # half a KS X 1001 character
        ("GB18030", "PatientName", b"Wang\x81\x30"),  # half a four-byte sequence
        ("GBK", "StudyDescription", b"MRI \xff\xff"),
        ("ISO_IR 100", "ModalitiesInStudy", b"CT\\M\xd2"),  # CS: ASCII only, whatever is declared
        ("ISO_IR 100", "StudyDate", b"2024\xb701"),
    ],
)
def test_undecodable_bytes_give_a_replacement_character_and_a_warning(
    charset: str, keyword: str, data: bytes
) -> None:
    record = _record(_raw(charset, **{keyword: data}))
    values = DatasetReader(_raw(charset, **{keyword: data})).values(keyword)
    assert any("\ufffd" in value for value in values)
    assert any(w.startswith(f"{keyword}:") for w in record.warnings), record.warnings
    if keyword == "PatientName":
        assert "\ufffd" in (record.patient_name or "")


@pytest.mark.parametrize(
    ("charset", "data", "expected", "warning"),
    [
        ("ISO_IR 999", b"Smith^John", "Smith^John", "unknown term 'ISO_IR 999'"),
        ("\\ISO 2022 IR 999", b"Smith^John", "Smith^John", "unknown term 'ISO 2022 IR 999'"),
        ("ISO-IR 126", b"\xc4\xe9\xef\xed\xf5\xf3\xe9\xef\xf2", "Διονυσιος", "read as 'ISO_IR 126'"),
        ("ISO_2022_IR_87", b"\x1b$B;3ED\x1b(B", "山田", "read as 'ISO 2022 IR 87'"),
        ("ISO_IR 192\\ISO 2022 IR 87", "Dupré".encode(), "Dupré", "allows no code extensions"),
    ],
)
def test_unknown_or_misspelt_character_set_terms_give_a_warning(
    charset: str, data: bytes, expected: str, warning: str
) -> None:
    record = _record(_raw(charset, PatientName=data))
    assert record.patient_name == expected
    assert any(w.startswith("SpecificCharacterSet:") and warning in w for w in record.warnings), (
        record.warnings
    )


def test_unknown_term_and_undecodable_bytes_together() -> None:
    record = _record(_raw("ISO_IR 999", PatientName=b"M\xfcller"))
    assert record.patient_name is not None
    assert any(w.startswith("SpecificCharacterSet:") for w in record.warnings)
    assert any(w.startswith("PatientName:") for w in record.warnings)


@pytest.mark.parametrize(
    ("data", "expected", "read_as"),
    [(b"M\xfcller^Anna", "Müller^Anna", "Latin-1"), ("Müller^Anna".encode(), "Müller^Anna", "UTF-8")],
)
def test_text_beyond_ascii_without_a_declared_set_is_guessed_with_a_warning(
    data: bytes, expected: str, read_as: str
) -> None:
    record = _record(_raw(None, PatientName=data))
    assert record.patient_name == expected
    assert any(w.startswith("PatientName:") and read_as in w for w in record.warnings)


def test_escape_to_an_undeclared_set_is_decoded_with_a_warning() -> None:
    record = _record(_raw("ISO_IR 100", PatientName=b"Yamada=" + _jis("山田")))
    assert _groups(_raw("ISO_IR 100", PatientName=b"Yamada=" + _jis("山田"))) == ("Yamada", "山田")
    assert any("JIS X 0208" in w and "does not declare" in w for w in record.warnings)


def test_unknown_escape_sequence_is_replaced_with_a_warning() -> None:
    record = _record(_raw("\\ISO 2022 IR 87", PatientName=b"Yamada^\x1b(Zxyz^Tarou"))
    assert record.patient_name is not None and record.patient_name.startswith("Yamada^\ufffd")
    assert record.patient_name.endswith("^Tarou")  # the delimiter restored the initial set
    assert any(w.startswith("PatientName:") and "escape sequence" in w for w in record.warnings)


def test_control_characters_are_replaced_with_a_warning() -> None:
    record = _record(_raw("ISO_IR 192", PatientName=b"Anna\x1b$B^Smith"))
    assert record.patient_name == "Anna\ufffd$B^Smith"
    assert any(w.startswith("PatientName:") and "control" in w for w in record.warnings)


# -- NFC ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("decomposed", "composed"),
    [
        ("Mu\u0308ller^Zoe\u0301", "Müller^Zoé"),
        ("\u1112\u1169\u11bc^\u1100\u1175\u11af\u1103\u1169\u11bc", "홍^길동"),  # Hangul jamo
        ("Παπαδο\u0301πουλος", "Παπαδόπουλος"),
    ],
)
def test_names_come_out_nfc(decomposed: str, composed: str) -> None:
    record = _record(
        _raw("ISO_IR 192", PatientName=decomposed.encode(), StudyDescription=decomposed.encode())
    )
    assert (record.patient_name, record.description, record.warnings) == (composed, composed, ())


def test_dicom_json_names_come_out_nfc_and_split_into_groups() -> None:
    item = {
        "00080005": {"vr": "CS", "Value": ["ISO_IR 192"]},
        "0020000D": {"vr": "UI", "Value": ["1.2.3"]},
        "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Mu\u0308ller^Anna=ミュラー^アンナ"}]},
        "00081030": {"vr": "LO", "Value": ["IRM CE\u0301RE\u0301BRALE"]},
    }
    warnings: list[str] = []
    record = record_from_qido_item(item, "s", warnings)
    assert record is not None and warnings == []
    assert (record.patient_name, record.description, record.warnings) == ("Müller^Anna", "IRM CÉRÉBRALE", ())


def test_person_name_groups_drop_trailing_empty_components() -> None:
    assert person_name_groups("Müller^Anna^^^") == ("Müller^Anna",)
    assert person_name_groups("Wang^XiaoDong=王^小東=") == ("Wang^XiaoDong", "王^小東")
    assert person_name_groups("^=^=") == ()
    assert person_name_groups("=山田^太郎") == ("", "山田^太郎")


# -- Property: whatever pydicom encodes in a set comes back as it was (NFC) -------------------


def _alphabet(codec: str, byte_ranges: list[range], width: int = 1) -> str:
    """The characters *codec* decodes from these bytes (or byte pairs), delimiters and spaces excluded."""
    chars: set[str] = set()
    units = (
        [bytes([b]) for r in byte_ranges for b in r]
        if width == 1
        else [bytes([a, b]) for a in byte_ranges[0] for b in byte_ranges[1]]
    )
    for unit in units:
        try:
            char = (
                (b"\x1b$B" + unit + b"\x1b(B").decode(codec) if codec == "iso2022_jp" else unit.decode(codec)
            )
        except UnicodeDecodeError:
            continue
        if len(char) == 1 and char not in "^=\\" and not char.isspace() and char.isprintable():
            chars.add(char)
    return "".join(sorted(chars))


_GL, _GR = range(0x21, 0x7F), range(0xA0, 0x100)
_ALPHABETS = {
    "ISO_IR 100": _alphabet("latin_1", [_GL, _GR]),
    "ISO_IR 101": _alphabet("iso8859_2", [_GL, _GR]),
    "ISO_IR 126": _alphabet("iso8859_7", [_GL, _GR]),
    "ISO_IR 127": _alphabet("iso8859_6", [_GL, _GR]),
    "ISO_IR 144": _alphabet("iso8859_5", [_GL, _GR]),
    "ISO_IR 166": _alphabet("tis_620", [_GL, _GR]),
    # JIS X 0208 rows 4 and 5 (kana, whose second bytes include "=", "\\" and "^") and 16-20
    # (kanji), with ASCII letters.
    "\\ISO 2022 IR 87": "ABCXYZabcxyz"
    + _alphabet("iso2022_jp", [range(0x24, 0x26), _GL], 2)
    + _alphabet("iso2022_jp", [range(0x30, 0x35), _GL], 2),
    "GBK": _alphabet("gbk", [range(0x81, 0x90), range(0x40, 0xFF)], 2) + "AZaz",
    "GB18030": _alphabet("gb18030", [range(0xB0, 0xB8), range(0xA1, 0xFF)], 2) + "㐀䷀AZ",
}


def _person_names(alphabet: str) -> st.SearchStrategy[str]:
    component = st.text(alphabet, min_size=1, max_size=6)
    group = st.lists(component, min_size=1, max_size=3).map("^".join)
    return st.lists(group, min_size=1, max_size=3).map("=".join)


@pytest.mark.parametrize("charset", sorted(_ALPHABETS))
def test_what_pydicom_encodes_decodes_back(charset: str) -> None:
    values = charset.split("\\") if "\\" in charset else charset

    @settings(max_examples=60, deadline=None)
    @given(name=_person_names(_ALPHABETS[charset]))
    def round_trip(name: str) -> None:
        wire = _encoded(values, PatientName=name)
        read = DatasetReader(wire)
        assert read.values("PatientName") == [unicodedata.normalize("NFC", name)]
        assert read.warnings == []

    round_trip()
