"""Reports out of DICOM objects: an SR content tree as readable indented text, or an encapsulated document.

Used by every connector that fetches report instances (DICOMweb WADO-RS, DIMSE C-GET, plugins).
The content tree (PS3.3 C.17.3) is walked depth first: a CONTAINER prints its concept name and its
children one step further in; a value item prints ``Concept name: value`` for TEXT, CODE, NUM (with
its unit), PNAME, DATE, DATETIME, TIME and UIDREF; image and coordinate references are named only.
The walk is bounded (depth, items, characters): a hostile document cannot make it run away.
An SR's CompletionFlag and VerificationFlag (PS3.3 C.17.2) travel with its text, with its latest
verifying observer when it is VERIFIED; a value outside the standard's two is read as not said.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any, TypeVar

from pydicom.dataset import Dataset

from federation.reports import (
    PDF,
    ReportAnswer,
    ReportCompletion,
    ReportDocument,
    ReportInstance,
    ReportStatus,
    ReportVerification,
)

__all__ = [
    "DOCUMENT_SOP_CLASSES",
    "REPORT_MODALITIES",
    "SR_SOP_CLASSES",
    "answer_from_dataset",
    "document_from_dataset",
    "render_content_tree",
]

REPORT_MODALITIES = ("SR", "DOC")
"""Series Modality values that hold reports: Structured Reports and encapsulated documents."""
SR_SOP_CLASSES = (
    "1.2.840.10008.5.1.4.1.1.88.11",  # Basic Text SR
    "1.2.840.10008.5.1.4.1.1.88.22",  # Enhanced SR
    "1.2.840.10008.5.1.4.1.1.88.33",  # Comprehensive SR
    "1.2.840.10008.5.1.4.1.1.88.34",  # Comprehensive 3D SR
    "1.2.840.10008.5.1.4.1.1.88.35",  # Extensible SR
)
"""The SR storage classes whose documents are narrative reports (PS3.4 B.5)."""
DOCUMENT_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.104.1": PDF,  # Encapsulated PDF
    "1.2.840.10008.5.1.4.1.1.104.2": "text/xml",  # Encapsulated CDA
}
_MAX_DEPTH = 32
_MAX_ITEMS = 5000
_MAX_CHARS = 200_000
_INDENT = "  "
_Flag = TypeVar("_Flag", ReportCompletion, ReportVerification)


def render_content_tree(dataset: Dataset) -> str:
    """The SR document as indented text: its title, then its content items one level further in."""
    lines: list[str] = []
    title = _concept_name(dataset)
    budget = [_MAX_ITEMS]
    if title:
        lines.append(title)
    _render_items(dataset.get("ContentSequence", ()), 1 if title else 0, lines, budget)
    if budget[0] <= 0:
        lines.append("… (the rest of the document is not shown)")
    text = "\n".join(lines)
    return text if len(text) <= _MAX_CHARS else text[:_MAX_CHARS] + "\n… (cut)"


def _render_items(items: Iterable[Any], depth: int, lines: list[str], budget: list[int]) -> None:
    for item in items:
        if budget[0] <= 0:
            return
        budget[0] -= 1
        name = _concept_name(item)
        kind = str(item.get("ValueType", "") or "")
        if kind == "CONTAINER":
            if name:
                lines.append(_INDENT * depth + name)
            if depth < _MAX_DEPTH:
                _render_items(item.get("ContentSequence", ()), depth + 1 if name else depth, lines, budget)
            continue
        value = _value_of(item, kind)
        if value is None:
            if "ReferencedContentItemIdentifier" in item:
                continue  # a by-reference relationship: the item it names is printed where it stands
            value = ""
        label = f"{name}: {value}" if name and value else (name or value)
        if label:
            prefix = _INDENT * depth
            lines.extend(prefix + line for line in label.splitlines() or [""])
        children = item.get("ContentSequence", ())
        if children and depth < _MAX_DEPTH:
            _render_items(children, depth + 1, lines, budget)


def _value_of(item: Any, kind: str) -> str | None:
    """The printable value of one content item (PS3.3 C.17.3.2.1, Table C.17.3-7), or None."""
    if kind == "TEXT":
        return str(item.get("TextValue", "") or "").strip()
    if kind == "CODE":
        return _code_meaning(item.get("ConceptCodeSequence"))
    if kind == "NUM":
        measured = item.get("MeasuredValueSequence")
        if not measured:
            return "(no value)"
        number = measured[0].get("NumericValue")
        unit = _unit(measured[0].get("MeasurementUnitsCodeSequence"))
        shown = _number(number)
        return f"{shown} {unit}".strip() if unit else shown
    if kind == "PNAME":
        return str(item.get("PersonName", "") or "")
    if kind == "DATE":
        return _date_text(str(item.get("Date", "") or ""))
    if kind == "DATETIME":
        return _datetime_text(str(item.get("DateTime", "") or ""))
    if kind == "TIME":
        return _time_text(str(item.get("Time", "") or ""))
    if kind == "UIDREF":
        return str(item.get("UID", "") or "")
    if kind in ("IMAGE", "COMPOSITE", "WAVEFORM"):
        return "(reference to a DICOM object)"
    if kind in ("SCOORD", "SCOORD3D", "TCOORD"):
        return "(coordinates)"
    return None


def _concept_name(item: Any) -> str:
    return _code_meaning(item.get("ConceptNameCodeSequence")) or ""


def _code_meaning(sequence: Any) -> str:
    if not sequence:
        return ""
    code = sequence[0]
    meaning = str(code.get("CodeMeaning", "") or "")
    return meaning or str(code.get("CodeValue", "") or "")


def _unit(sequence: Any) -> str:
    """A unit as people write it: UCUM's code value (``mm``), its meaning for unit-less ``1``."""
    if not sequence:
        return ""
    code = sequence[0]
    value = str(code.get("CodeValue", "") or "")
    if value in ("", "1", "{ratio}"):
        return "" if value == "1" else str(code.get("CodeMeaning", "") or "")
    return value


def _number(value: Any) -> str:
    if value is None or value == "":
        return "(no value)"
    text = str(value).strip()
    try:
        number = float(text)
    except ValueError:
        return text
    return f"{number:g}"


def _date_text(value: str) -> str:
    parsed = _date(value)
    return parsed.isoformat() if parsed else value


def _datetime_text(value: str) -> str:
    if len(value) >= 12 and value[:12].isdigit():
        day = _date(value[:8])
        if day is not None:
            return f"{day.isoformat()} {value[8:10]}:{value[10:12]}"
    return value


def _time_text(value: str) -> str:
    return f"{value[:2]}:{value[2:4]}" if len(value) >= 4 and value[:4].isdigit() else value


def _date(value: str) -> dt.date | None:
    try:
        return dt.datetime.strptime(value.strip()[:8], "%Y%m%d").date()
    except ValueError:
        return None


def _author(dataset: Dataset) -> str | None:
    """Who signed or wrote it: the verifying observer (PS3.3 C.17.2), else the author observer or the
    tree's Person Observer Name (DCM 121008). The referring physician asked for the exam: not the author."""
    for verifier in dataset.get("VerifyingObserverSequence", ()):
        name = str(verifier.get("VerifyingObserverName", "") or "")
        if name:
            return name
    for observer in dataset.get("AuthorObserverSequence", ()):
        name = str(observer.get("PersonName", "") or "")
        if name:
            return name
    return _observer_in_tree(dataset.get("ContentSequence", ()), 0)


def _observer_in_tree(items: Iterable[Any], depth: int) -> str | None:
    for item in items:
        if item.get("ValueType") == "PNAME":
            code = item.get("ConceptNameCodeSequence")
            if code and str(code[0].get("CodeValue", "")) == "121008":
                return str(item.get("PersonName", "") or "") or None
        if depth < 3 and item.get("ValueType") == "CONTAINER":
            found = _observer_in_tree(item.get("ContentSequence", ()), depth + 1)
            if found:
                return found
    return None


def _flag(dataset: Dataset, keyword: str, kind: type[_Flag]) -> _Flag | None:
    """CompletionFlag or VerificationFlag as its enum (trimmed, upper case); None when absent or not a defined term."""
    value = str(dataset.get(keyword, "") or "").strip().upper()
    try:
        return kind(value)
    except ValueError:
        return None


def _verifier(dataset: Dataset) -> tuple[str | None, dt.datetime | None]:
    """The latest verifying observer with a name (PS3.3 C.17.2.2) and when they verified it.

    A document verified more than once lists each verifier; the latest VerificationDateTime is the
    one whose signature the current content carries. Without any date, the first named one.
    """
    best: tuple[str, dt.datetime | None] | None = None
    for verifier in dataset.get("VerifyingObserverSequence", ()):
        name = str(verifier.get("VerifyingObserverName", "") or "")
        if not name:
            continue
        when = _datetime(str(verifier.get("VerificationDateTime", "") or ""))
        if best is None or (when is not None and (best[1] is None or when > best[1])):
            best = (name, when)
    return best if best is not None else (None, None)


def _datetime(value: str) -> dt.datetime | None:
    """A DICOM DT (PS3.5 6.2) to the second, its offset dropped (as written); None when no date is in it."""
    digits = value.strip()[:14]
    if len(digits) < 8 or not digits.isdigit():
        return None
    digits = digits[: len(digits) - len(digits) % 2].ljust(14, "0")
    try:
        return dt.datetime.strptime(digits, "%Y%m%d%H%M%S")
    except ValueError:
        return None


def _content_date(dataset: Dataset) -> dt.date | None:
    for keyword in ("ContentDate", "InstanceCreationDate", "SeriesDate", "StudyDate"):
        value = _date(str(dataset.get(keyword, "") or ""))
        if value is not None:
            return value
    return None


def answer_from_dataset(dataset: Dataset) -> ReportAnswer:
    """An SR as AVAILABLE text, an encapsulated document as AVAILABLE with its media type to fetch again.

    Only an SR has CompletionFlag and VerificationFlag: a document's (the Encapsulated PDF and CDA
    IODs, PS3.3 A.45, have neither) are None, which front ends show as not known, never as final.
    """
    sop_class = str(dataset.get("SOPClassUID", "") or "")
    author, date = _author(dataset), _content_date(dataset)
    if "EncapsulatedDocument" in dataset or sop_class in DOCUMENT_SOP_CLASSES:
        mime = str(dataset.get("MIMETypeOfEncapsulatedDocument", "") or "") or DOCUMENT_SOP_CLASSES.get(
            sop_class, "application/octet-stream"
        )
        return ReportAnswer(
            status=ReportStatus.AVAILABLE,
            author=author,
            date=date,
            mime_type=mime,
            title=str(dataset.get("DocumentTitle", "") or "") or None,
            document=ReportInstance(
                series_instance_uid=str(dataset.get("SeriesInstanceUID", "")),
                sop_instance_uid=str(dataset.get("SOPInstanceUID", "")),
            ),
        )
    if "ContentSequence" not in dataset and "ConceptNameCodeSequence" not in dataset:
        return ReportAnswer(
            status=ReportStatus.ERROR, error="the report instance is neither an SR nor a document"
        )
    verification = _flag(dataset, "VerificationFlag", ReportVerification)
    verified_by, verified_at = (
        _verifier(dataset) if verification is ReportVerification.VERIFIED else (None, None)
    )
    return ReportAnswer(
        status=ReportStatus.AVAILABLE,
        text=render_content_tree(dataset),
        author=author,
        date=date,
        title=_concept_name(dataset) or None,
        completion=_flag(dataset, "CompletionFlag", ReportCompletion),
        verification=verification,
        verified_by=verified_by,
        verified_at=verified_at,
    )


def document_from_dataset(dataset: Dataset) -> ReportDocument:
    """The encapsulated document's bytes (its pad byte removed, PS3.3 C.24.2.1) and media type."""
    content = bytes(dataset.get("EncapsulatedDocument", b"") or b"")
    length = dataset.get("EncapsulatedDocumentLength")
    if isinstance(length, int) and 0 <= length <= len(content):
        content = content[:length]
    elif content.endswith(b"\0") and str(dataset.get("MIMETypeOfEncapsulatedDocument", "")) == PDF:
        content = content[:-1]  # an odd-length PDF padded to even length, its length not given
    sop_class = str(dataset.get("SOPClassUID", "") or "")
    mime = str(dataset.get("MIMETypeOfEncapsulatedDocument", "") or "") or DOCUMENT_SOP_CLASSES.get(
        sop_class, "application/octet-stream"
    )
    return ReportDocument(
        mime_type=mime, content=content, title=str(dataset.get("DocumentTitle", "") or "") or None
    )
