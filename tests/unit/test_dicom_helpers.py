"""connectors.dicom: the public DICOM helpers a connector (a plugin too) builds its records with."""

from __future__ import annotations

import datetime as dt

import pytest
from pydicom.dataset import Dataset

import connectors.dicom as dicom


@pytest.mark.parametrize(
    ("data", "terms", "vr", "text"),
    [
        ("Müller^Anna".encode("latin-1"), ["ISO_IR 100"], "PN", "Müller^Anna"),
        (b"\x1b$B;3ED\x1b(B^\x1b$BB@O:\x1b(B", ["", "ISO 2022 IR 87"], "PN", "山田^太郎"),  # PS3.5 H.3.1
        ("山田\\太郎".encode(), ["ISO_IR 192"], "LO", "山田\\太郎"),
    ],
)
def test_decode_text_follows_the_specific_character_set(
    data: bytes, terms: list[str], vr: str, text: str
) -> None:
    assert dicom.decode_text(data, terms, vr) == (text, ())


def test_decode_text_reports_undeclared_bytes_without_the_value() -> None:
    text, problems = dicom.decode_text(b"Gr\xfcn")
    assert text == "Grün"
    assert problems and all("Grün" not in problem for problem in problems)


def test_a_record_is_built_from_a_dataset_and_from_dicom_json_alike() -> None:
    dataset = Dataset()
    dataset.StudyInstanceUID = "1.2.3"
    dataset.StudyDate = "20240105"
    dataset.PatientName = "Yamada^Tarou=山田^太郎"
    dataset.SpecificCharacterSet = "ISO_IR 192"
    from_dataset = dicom.study_record_from_dataset(dataset, "src")
    from_json = dicom.record_from_dicom_json(
        {
            "0020000D": {"vr": "UI", "Value": ["1.2.3"]},
            "00080020": {"vr": "DA", "Value": ["20240105"]},
            "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Yamada^Tarou", "Ideographic": "山田^太郎"}]},
        },
        "src",
    )
    assert from_dataset is not None and from_json is not None
    for record in (from_dataset, from_json):
        assert record.study_date == dicom.parse_da("20240105") == dt.date(2024, 1, 5)
        assert record.patient_name_groups == dicom.beyond_alphabetic(
            dicom.person_name_groups("Yamada^Tarou=山田^太郎")
        )
