"""SR content trees rendered as text, encapsulated documents unwrapped, WADO-RS multipart read."""

from __future__ import annotations

import datetime as dt

import pytest
from peers.reportdata import AUTHOR, FINDING, PDF_BYTES, PDF_TITLE, pdf_document, sr_document
from pydicom.dataset import Dataset

from connectors.dicomweb_reports import first_part
from connectors.sr_text import answer_from_dataset, document_from_dataset, render_content_tree
from federation.errors import SourceProtocolError
from federation.reports import PDF, ReportStatus


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
