"""Reports over DICOMweb: SR and DOC series found with QIDO-RS, their instance fetched with WADO-RS.

PS3.18 10.6 (QIDO-RS ``/studies/{study}/series?Modality=SR``, then the series' instances) and
10.4 (WADO-RS ``/studies/{study}/series/{series}/instances/{instance}`` as
``multipart/related; type="application/dicom"``, PS3.18 8.7.3.3). The instance is parsed with
pydicom and rendered by :mod:`connectors.sr_text`.
"""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urlencode

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from connectors.http_source import HttpSource
from connectors.sr_text import (
    DOCUMENT_SOP_CLASSES,
    REPORT_MODALITIES,
    SR_SOP_CLASSES,
    answer_from_dataset,
    document_from_dataset,
)
from federation.errors import SourceAuthError, SourceProtocolError
from federation.models import Deadline
from federation.reports import ReportAnswer, ReportDocument, ReportInstance, ReportStatus, StudyRef

__all__ = ["fetch_document", "fetch_report"]

_DICOM_JSON = "application/dicom+json"
_MULTIPART_DICOM = 'multipart/related; type="application/dicom"'
_MAX_JSON_BYTES = 4 * 1024 * 1024
_MAX_INSTANCE_BYTES = 64 * 1024 * 1024
"""Largest report instance read (a PDF of a few hundred pages)."""
_REPORT_CLASSES = frozenset(SR_SOP_CLASSES) | frozenset(DOCUMENT_SOP_CLASSES)
_SERIES_FIELDS = ["SeriesInstanceUID", "Modality", "SeriesDate", "SeriesTime", "SeriesNumber"]
_INSTANCE_FIELDS = ["SOPInstanceUID", "SOPClassUID", "InstanceNumber"]


async def fetch_report(web: HttpSource, study: StudyRef, deadline: Deadline) -> ReportAnswer:
    """The study's newest SR (text) or, without one, its newest encapsulated document (to fetch again)."""
    study_path = f"studies/{_segment(study.study_instance_uid)}"
    found = await asyncio.gather(
        *(_series(web, study_path, modality, deadline) for modality in REPORT_MODALITIES)
    )
    if found[0] is None and found[1] is None:
        return ReportAnswer(status=ReportStatus.NOT_FOUND, error="the study is not known at the source")
    for series in _ordered([*(found[0] or []), *(found[1] or [])]):
        series_path = f"{study_path}/series/{_segment(series['uid'])}"
        instance = await _report_instance(web, series_path, deadline)
        if instance is None:
            continue
        dataset = await _instance(web, f"{series_path}/instances/{_segment(instance)}", deadline)
        return answer_from_dataset(dataset)
    return ReportAnswer(status=ReportStatus.NOT_FOUND)


async def fetch_document(
    web: HttpSource, study: StudyRef, document: ReportInstance, deadline: Deadline
) -> ReportDocument:
    """The document report's bytes, fetched again with WADO-RS."""
    path = (  # relative to the source's base URL, as fetch_report's paths are: no leading slash
        f"studies/{_segment(study.study_instance_uid)}/series/{_segment(document.series_instance_uid)}"
        f"/instances/{_segment(document.sop_instance_uid)}"
    )
    dataset = await _instance(web, path, deadline)
    if "EncapsulatedDocument" not in dataset:
        raise SourceProtocolError("the report instance holds no encapsulated document")
    return document_from_dataset(dataset)


async def _series(
    web: HttpSource, study_path: str, modality: str, deadline: Deadline
) -> list[dict[str, str]] | None:
    """The study's series of one modality (QIDO-RS); None when the source does not know the study."""
    params: dict[str, str | list[str]] = {"Modality": modality, "includefield": _SERIES_FIELDS}
    status, _, body = await _get(web, f"{study_path}/series", params, _DICOM_JSON, deadline, _MAX_JSON_BYTES)
    if status == 404:
        return None
    found = []
    for item in _json_array(status, body, "QIDO series"):
        uid = _first(item, "0020000E")
        if uid and _first(item, "00080060") in (modality, ""):
            found.append(
                {
                    "uid": uid,
                    "modality": modality,
                    "when": _first(item, "00080021") + _first(item, "00080031"),
                    "number": _first(item, "00200011"),
                }
            )
    return found


def _ordered(series: list[dict[str, str]]) -> list[dict[str, str]]:
    """SR before documents (text is shown inline), then the newest first."""
    return sorted(
        series,
        key=lambda s: (s["modality"] != "SR", _negated(s["when"]), -_int(s["number"])),
    )


async def _report_instance(web: HttpSource, series_path: str, deadline: Deadline) -> str | None:
    """The series' report instance with the highest InstanceNumber (dose reports and key images are skipped)."""
    params: dict[str, str | list[str]] = {"includefield": _INSTANCE_FIELDS}
    status, _, body = await _get(
        web, f"{series_path}/instances", params, _DICOM_JSON, deadline, _MAX_JSON_BYTES
    )
    if status == 404:
        return None
    best: tuple[int, str] | None = None
    for item in _json_array(status, body, "QIDO instances"):
        uid, sop_class = _first(item, "00080018"), _first(item, "00080016")
        if not uid or (sop_class and sop_class not in _REPORT_CLASSES):
            continue
        rank = (_int(_first(item, "00200013")), uid)
        if best is None or rank > best:
            best = rank
    return best[1] if best else None


async def _instance(web: HttpSource, path: str, deadline: Deadline) -> Dataset:
    """One instance through WADO-RS, parsed."""
    status, headers, body = await _get(web, path, {}, _MULTIPART_DICOM, deadline, _MAX_INSTANCE_BYTES)
    if status == 404:
        raise SourceProtocolError("WADO-RS: the report instance is gone from the source")
    if status != 200:
        raise SourceProtocolError(f"WADO-RS answered HTTP {status}")
    content_type = headers.get("content-type", "")
    part = first_part(body, content_type) if content_type.lower().startswith("multipart/") else body
    try:
        return dcmread(io.BytesIO(part), force=True)
    except (InvalidDicomError, ValueError, EOFError, OSError, KeyError, TypeError) as exc:
        raise SourceProtocolError("WADO-RS answer is not a DICOM instance") from exc


def first_part(body: bytes, content_type: str) -> bytes:
    """The first body part of a ``multipart/related`` answer (RFC 2046 5.1.1)."""
    boundary = _boundary(content_type)
    if not boundary:
        raise SourceProtocolError("WADO-RS multipart answer without a boundary")
    delimiter = b"--" + boundary.encode("ascii", "replace")
    start = body.find(delimiter)
    if start < 0:
        raise SourceProtocolError("WADO-RS multipart answer without a body part")
    start = body.find(b"\r\n\r\n", start + len(delimiter))
    end = body.find(b"\r\n" + delimiter, start + 4) if start >= 0 else -1
    if start < 0 or end < 0:
        raise SourceProtocolError("WADO-RS multipart answer is cut short")
    return body[start + 4 : end]


def _boundary(content_type: str) -> str | None:
    for parameter in content_type.split(";")[1:]:
        name, _, value = parameter.strip().partition("=")
        if name.strip().lower() == "boundary":
            return value.strip().strip('"')
    return None


async def _get(
    web: HttpSource,
    path: str,
    params: Mapping[str, str | list[str]],
    accept: str,
    deadline: Deadline,
    max_bytes: int,
) -> tuple[int, Mapping[str, str], bytes]:
    """One GET through the source's request path (its auth, error mapping and size cap); never the URL in errors."""
    query = urlencode(params, doseq=True).encode("ascii")
    answer = await web.get(path, query, accept=accept, deadline=deadline, max_body=max_bytes, what="report")
    if answer.status in (401, 403):
        raise SourceAuthError(f"the source refused our credentials (HTTP {answer.status})")
    return answer.status, answer.headers, answer.body


def _json_array(status: int, body: bytes, what: str) -> list[Any]:
    if status == 204 or (status == 200 and not body.strip()):
        return []
    if status != 200:
        raise SourceProtocolError(f"{what} answered HTTP {status}")
    try:
        items = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise SourceProtocolError(f"{what} answer is not valid JSON") from exc
    if not isinstance(items, list):
        raise SourceProtocolError(f"{what} answer is not a JSON array")
    return [item for item in items if isinstance(item, dict)]


def _first(item: Mapping[str, Any], tag: str) -> str:
    """The first value of one attribute of a DICOM JSON object (PS3.18 F.2), as a string."""
    element = item.get(tag)
    values = element.get("Value") if isinstance(element, dict) else None
    if not isinstance(values, list) or not values:
        return ""
    value = values[0]
    return str(value) if isinstance(value, str | int | float) else ""


def _segment(uid: str) -> str:
    return quote(uid, safe="")


def _int(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        return 0


def _negated(when: str) -> tuple[int, ...]:
    """A sort key putting later SeriesDate+SeriesTime first (missing ones last)."""
    digits = "".join(ch for ch in when if ch.isdigit())[:14].ljust(14, "0")
    return tuple(-int(ch) for ch in digits) if when else (1,)
