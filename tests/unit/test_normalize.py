"""Parsing of C-FIND identifiers and DICOM JSON into StudyRecords."""

from __future__ import annotations

import datetime as dt
from io import BytesIO

import pytest
from pydicom import Dataset
from pydicom.dataelem import RawDataElement
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.filewriter import write_dataset
from pydicom.tag import Tag

from connectors.dicom import parse_da, parse_tm, study_record_from_dataset
from connectors.dicom_json import record_from_qido_item


def _wire(ds: Dataset) -> Dataset:
    """Encode and decode like a C-FIND response on the wire (implicit VR little endian)."""
    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, True
    write_dataset(buffer, ds)
    return read_dataset(BytesIO(buffer.getvalue()), is_implicit_VR=True, is_little_endian=True)


def _identifier(charset: str, name: str) -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = charset
    ds.QueryRetrieveLevel = "STUDY"
    ds.PatientID = "PA-001"
    ds.PatientName = name
    ds.StudyInstanceUID = "1.2.3.4"
    ds.StudyDate = "20240105"
    ds.StudyTime = "103000.25"
    ds.ModalitiesInStudy = ["CT", "SR"]
    ds.NumberOfStudyRelatedSeries = "2"
    ds.NumberOfStudyRelatedInstances = "4"
    ds.RetrieveAETitle = "HOSPA"
    return ds


@pytest.mark.parametrize("charset", ["ISO_IR 100", "ISO_IR 192"])
def test_cfind_identifier_decodes_accented_names(charset: str) -> None:
    record = study_record_from_dataset(_wire(_identifier(charset, "Müller^Anna")), "hosp-a")
    assert record is not None
    assert record.patient_name == "Müller^Anna"
    assert record.study_date == dt.date(2024, 1, 5)
    assert record.study_time == dt.time(10, 30, 0, 250000)
    assert record.modalities == ("CT", "SR")
    assert (record.number_of_series, record.number_of_instances) == (2, 4)
    assert record.retrieve_ae_title == "HOSPA"
    assert record.warnings == ()


def test_latin1_bytes_are_decoded_as_declared() -> None:
    ds = _identifier("ISO_IR 100", "Dupré^Élodie")
    raw = _wire(ds)
    # The wire holds one byte per accented letter (Latin-1), not UTF-8.
    assert b"Dupr\xe9" in raw.get_item("PatientName").value
    record = study_record_from_dataset(raw, "s")
    assert record is not None and record.patient_name == "Dupré^Élodie"


def test_undecodable_name_yields_a_record_with_a_warning() -> None:
    ds = _identifier("ISO_IR 192", "X")
    raw = _wire(ds)
    element = raw.get_item("PatientName")
    raw[0x00100010] = element._replace(value=b"\xff\xfeAnna", length=6)
    record = study_record_from_dataset(raw, "s")
    assert record is not None
    assert "\ufffd" in (record.patient_name or "")
    assert any("PatientName" in warning for warning in record.warnings)


def test_missing_optional_keys_still_yield_a_record() -> None:
    ds = Dataset()
    ds.StudyInstanceUID = "1.2.3"
    record = study_record_from_dataset(ds, "s")
    assert record is not None
    assert record.modalities == () and record.number_of_instances is None and record.study_date is None


def test_identifier_without_study_uid_is_not_a_record() -> None:
    ds = Dataset()
    ds.PatientID = "X"
    assert study_record_from_dataset(ds, "s") is None


def test_invalid_values_become_warnings_not_failures() -> None:
    ds = Dataset()
    ds.StudyInstanceUID = "1.2.3"
    # As read off the wire: raw bytes, converted (and found invalid) only when accessed.
    ds[0x00080020] = RawDataElement(Tag(0x00080020), "DA", 10, b"2024-13-45", 0, False, True)
    ds[0x00201206] = RawDataElement(Tag(0x00201206), "IS", 4, b"lots", 0, False, True)
    record = study_record_from_dataset(ds, "s")
    assert record is not None and record.study_date is None and record.number_of_series is None
    assert len(record.warnings) == 2


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("20240105", dt.date(2024, 1, 5)),
        ("2024.01.05", dt.date(2024, 1, 5)),
        ("20240230", None),
        ("2024", None),
        ("", None),
    ],
)
def test_parse_da(text: str, expected: dt.date | None) -> None:
    assert parse_da(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("103000", dt.time(10, 30)),
        ("1030", dt.time(10, 30)),
        ("10", dt.time(10)),
        ("103000.5", dt.time(10, 30, 0, 500000)),
        ("10:30:00", dt.time(10, 30)),
        ("235960", dt.time(23, 59, 59)),
        ("2561", None),
        ("abc", None),
    ],
)
def test_parse_tm(text: str, expected: dt.time | None) -> None:
    assert parse_tm(text) == expected


DICOM_JSON_STUDY = {
    "00080005": {"vr": "CS", "Value": ["ISO_IR 192"]},
    "00080020": {"vr": "DA", "Value": ["20231124"]},
    "00080030": {"vr": "TM", "Value": ["081500"]},
    "00080050": {"vr": "SH", "Value": ["ACC-9"]},
    "00080061": {"vr": "CS", "Value": ["MR", "SR"]},
    "00080090": {"vr": "PN"},
    "00081030": {"vr": "LO", "Value": ["IRM CÉRÉBRALE"]},
    "00081190": {"vr": "UR", "Value": ["http://pacs/dicom-web/studies/1.2.9"]},
    "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Yamada^Tarou", "Ideographic": "山田^太郎"}]},
    "00100020": {"vr": "LO", "Value": ["PA-9"]},
    "00100030": {"vr": "DA", "Value": ["19700101"]},
    "0020000D": {"vr": "UI", "Value": ["1.2.9"]},
    "00201206": {"vr": "IS", "Value": [3]},
    "00201208": {"vr": "IS", "Value": [42]},
}


def test_dicom_json_study_is_parsed() -> None:
    warnings: list[str] = []
    record = record_from_qido_item(DICOM_JSON_STUDY, "hosp-b", warnings)
    assert record is not None and warnings == []
    assert record.patient_name == "Yamada^Tarou"
    assert record.modalities == ("MR", "SR")
    assert record.description == "IRM CÉRÉBRALE"
    assert record.retrieve_url == "http://pacs/dicom-web/studies/1.2.9"
    assert record.referring_physician_name is None
    assert (record.number_of_series, record.number_of_instances) == (3, 42)
    assert record.patient_birth_date == dt.date(1970, 1, 1)


def test_dicom_json_ideographic_only_name_is_kept() -> None:
    item = dict(DICOM_JSON_STUDY)
    item["00100010"] = {"vr": "PN", "Value": [{"Ideographic": "山田^太郎"}]}
    record = record_from_qido_item(item, "s", [])
    assert record is not None and record.patient_name == "山田^太郎"


@pytest.mark.parametrize(
    "item",
    [[], "x", {"0020000D": {"vr": "UI", "Value": "not-a-list"}}, {"00100020": {"vr": "LO", "Value": ["X"]}}],
)
def test_malformed_dicom_json_items_are_skipped_with_a_warning(item: object) -> None:
    warnings: list[str] = []
    assert record_from_qido_item(item, "s", warnings) is None
    assert warnings


def test_other_patient_ids_are_read_with_the_parents_character_set() -> None:
    ds = _identifier("ISO_IR 100", "Müller^Anna")
    item = Dataset()
    item.PatientID = "70031512345"
    item.IssuerOfPatientID = "NISS"
    other = Dataset()
    other.PatientID = "Ü-7"
    ds.OtherPatientIDsSequence = [item, other]
    record = study_record_from_dataset(_wire(ds), "s")
    assert record is not None
    assert record.other_patient_ids == (("NISS", "70031512345"), (None, "Ü-7"))
