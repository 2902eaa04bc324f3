"""SR content trees rendered as text, encapsulated documents unwrapped, WADO-RS multipart read."""

from __future__ import annotations

import datetime as dt

import pytest
from peers.reportdata import AUTHOR, FINDING, PDF_BYTES, PDF_TITLE, pdf_document, sr_document
from pydicom import config
from pydicom.dataset import Dataset

from connectors.dicomweb_reports import first_part
from connectors.sr_text import answer_from_dataset, document_from_dataset, render_content_tree
from federation.errors import SourceProtocolError
from federation.reports import PDF, ReportCompletion, ReportStatus, ReportVerification


def _item(kind: str, meaning: str, **values: object) -> Dataset:
    item = Dataset()
    item.RelationshipType = "CONTAINS"
    item.ValueType = kind
    concept = Dataset()
    concept.CodeValue, concept.CodingSchemeDesignator, concept.CodeMeaning = "1", "99X", meaning
    item.ConceptNameCodeSequence = [concept]
    for keyword, value in values.items():
        setattr(item, keyword, value)
    return item


def test_a_highdicom_sr_reads_as_indented_text_with_its_author_and_date() -> None:
    answer = answer_from_dataset(sr_document())
    assert answer.status is ReportStatus.AVAILABLE
    assert (answer.author, answer.date, answer.title) == (
        AUTHOR,
        dt.date(2024, 1, 6),
        "Diagnostic imaging report",
    )
    lines = answer.text.splitlines()
    assert lines[0] == "Diagnostic imaging report"
    assert "  Findings" in lines
    assert f"    Finding: {FINDING}" in lines
    assert "    Finding site: Lung" in lines
    assert "    Length: 12.5 mm" in lines
    assert "  Study Date: 2024-01-05" in lines


def test_every_value_type_is_rendered_and_nesting_indents() -> None:
    root = Dataset()
    root.ValueType = "CONTAINER"
    root.ContentSequence = [
        _item("PNAME", "Observer", PersonName="Doe^Jane"),
        _item("DATETIME", "When", DateTime="20240105101500"),
        _item("TIME", "At", Time="101500"),
        _item("UIDREF", "Study", UID="1.2.3"),
        _item("CONTAINER", "Section", ContentSequence=[_item("TEXT", "Note", TextValue="two\nlines")]),
        _item("NUM", "Ratio", MeasuredValueSequence=[]),
        _item("IMAGE", "Key image"),
    ]
    assert render_content_tree(root).splitlines() == [
        "Observer: Doe^Jane",
        "When: 2024-01-05 10:15",
        "At: 10:15",
        "Study: 1.2.3",
        "Section",
        "  Note: two",
        "  lines",
        "Ratio: (no value)",
        "Key image: (reference to a DICOM object)",
    ]


def test_a_hostile_tree_is_cut_at_its_depth_and_item_bounds() -> None:
    deepest = _item("TEXT", "Leaf", TextValue="x")
    for _ in range(200):
        deepest = _item("CONTAINER", "Level", ContentSequence=[deepest])
    root = Dataset()
    root.ContentSequence = [deepest] + [_item("TEXT", "Many", TextValue="y") for _ in range(6000)]
    lines = render_content_tree(root).splitlines()
    assert max(len(line) - len(line.lstrip()) for line in lines) <= 2 * 33
    assert len(lines) <= 5001
    assert lines[-1].startswith("…")


def test_an_encapsulated_pdf_is_a_document_without_its_pad_byte() -> None:
    dataset = pdf_document()
    answer = answer_from_dataset(dataset)
    assert (answer.status, answer.mime_type, answer.text, answer.title) == (
        ReportStatus.AVAILABLE,
        PDF,
        None,
        PDF_TITLE,
    )
    assert answer.document is not None
    assert answer.document.sop_instance_uid == dataset.SOPInstanceUID
    document = document_from_dataset(dataset)
    assert (document.mime_type, document.content) == (PDF, PDF_BYTES)
    del dataset.EncapsulatedDocumentLength
    assert document_from_dataset(dataset).content == PDF_BYTES


def test_the_first_part_of_a_multipart_answer_is_the_instance() -> None:
    body = (
        b"--b1\r\nContent-Type: application/dicom\r\n\r\nDICM\r\n--data\r\n--b1\r\n\r\nsecond\r\n--b1--\r\n"
    )
    assert first_part(body, 'multipart/related; type="application/dicom"; boundary=b1') == b"DICM\r\n--data"
    with pytest.raises(SourceProtocolError):
        first_part(body, "multipart/related")
    with pytest.raises(SourceProtocolError):
        first_part(b"--b1\r\n\r\ncut", "multipart/related; boundary=b1")


def test_a_verified_complete_sr_says_so_and_names_its_verifier() -> None:
    answer = answer_from_dataset(sr_document())
    assert (answer.completion, answer.verification) == (
        ReportCompletion.COMPLETE,
        ReportVerification.VERIFIED,
    )
    assert answer.verified_by == AUTHOR
    assert answer.verified_at is not None


def test_an_unverified_partial_sr_says_so_and_names_no_verifier() -> None:
    sr = sr_document(verified=False, complete=False)
    assert (sr.CompletionFlag, sr.VerificationFlag) == ("PARTIAL", "UNVERIFIED")
    answer = answer_from_dataset(sr)
    assert (answer.completion, answer.verification) == (
        ReportCompletion.PARTIAL,
        ReportVerification.UNVERIFIED,
    )
    assert (answer.verified_by, answer.verified_at) == (None, None)
    assert answer.text is not None and FINDING in answer.text


def _as_sent(dataset: Dataset, keyword: str, value: str | None) -> None:
    """Set a value as a non-conformant peer may send it (pydicom would warn), or remove it (None)."""
    if keyword in dataset:
        delattr(dataset, keyword)
    if value is not None:
        with config.disable_value_validation():
            setattr(dataset, keyword, value)


@pytest.mark.parametrize("value", [None, "", "FINAL", "maybe"])
def test_a_flag_that_is_absent_or_not_a_defined_term_is_not_said(value: str | None) -> None:
    sr = sr_document()
    for keyword in ("CompletionFlag", "VerificationFlag"):
        _as_sent(sr, keyword, value)
    with config.disable_value_validation():
        answer = answer_from_dataset(sr)
    assert (answer.completion, answer.verification, answer.verified_by) == (None, None, None)


def test_flags_are_read_trimmed_and_in_any_case() -> None:
    sr = sr_document()
    _as_sent(sr, "CompletionFlag", " complete")
    _as_sent(sr, "VerificationFlag", "verified ")
    with config.disable_value_validation():
        answer = answer_from_dataset(sr)
    assert (answer.completion, answer.verification) == (
        ReportCompletion.COMPLETE,
        ReportVerification.VERIFIED,
    )


def test_the_latest_verifier_is_the_one_named() -> None:
    sr = sr_document()
    first, second, unnamed = Dataset(), Dataset(), Dataset()
    first.VerifyingObserverName, first.VerificationDateTime = "First^Fay", "20240106120000"
    second.VerifyingObserverName, second.VerificationDateTime = "Second^Sam", "20240107083000.5+0100"
    unnamed.VerifyingObserverName, unnamed.VerificationDateTime = "", "20250101000000"
    sr.VerifyingObserverSequence = [first, second, unnamed]
    answer = answer_from_dataset(sr)
    assert (answer.verified_by, answer.verified_at) == ("Second^Sam", dt.datetime(2024, 1, 7, 8, 30))
    _as_sent(second, "VerificationDateTime", "garbage")
    with config.disable_value_validation():
        assert answer_from_dataset(sr).verified_by == "First^Fay"


def test_a_document_has_no_completion_or_verification() -> None:
    ds = pdf_document()
    assert "VerificationFlag" not in ds and "CompletionFlag" not in ds  # the Encapsulated PDF IOD has neither
    answer = answer_from_dataset(ds)
    assert (answer.completion, answer.verification, answer.verified_by, answer.verified_at) == (None,) * 4
