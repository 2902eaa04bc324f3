"""Report vocabulary: what a front end, the service, the engine and a connector say about an exam's report.

A connector answers :class:`ReportAnswer` for one :class:`StudyRef` of its own source; the service
answers :class:`Report` for a merged exam (the first location, in configuration order, that has one).
A report is text (a DICOM Structured Report rendered, PS3.3 C.17.3) or a document (an encapsulated
PDF, PS3.3 A.45.1) fetched again, when asked for, through a short-lived link.

An SR says how far along it is (SR Document General module, PS3.3 C.17.2): its CompletionFlag
(0040,A491) is PARTIAL or COMPLETE, its VerificationFlag (0040,A493) UNVERIFIED or VERIFIED, and
a verified one names its verifying observer(s) and when they verified it. An encapsulated document
has no such flags (PS3.3 A.45.1): for it, and for an SR that omits them, both are None ("not said"),
never assumed final.
"""

from __future__ import annotations

import datetime as dt
import enum

from pydantic import BaseModel, ConfigDict

from federation.models import SourceInfo

__all__ = [
    "PDF",
    "Report",
    "ReportAnswer",
    "ReportCompletion",
    "ReportDocument",
    "ReportInstance",
    "ReportStatus",
    "ReportVerification",
    "StudyRef",
]

PDF = "application/pdf"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ReportStatus(enum.StrEnum):
    """Whether an exam's report could be read."""

    AVAILABLE = "AVAILABLE"
    NOT_FOUND = "NOT_FOUND"
    """The sources that were asked hold no report (no SR or document series) for the study."""
    UNSUPPORTED = "UNSUPPORTED"
    """No source holding the exam can give reports (its connector kind, or its peer, cannot)."""
    ERROR = "ERROR"
    """A source that may hold the report failed or was late; ``error`` says why (no patient data)."""
    UNAVAILABLE = "UNAVAILABLE"
    """A source that may hold the report was not asked: its circuit is open after repeated failures."""
    BUSY = "BUSY"
    """A source that may hold the report was not asked: pacsfed's own slots for it stayed taken (its load)."""


class ReportCompletion(enum.StrEnum):
    """An SR's CompletionFlag (0040,A491), PS3.3 C.17.2.1: whether its content is complete."""

    COMPLETE = "COMPLETE"
    PARTIAL = "PARTIAL"


class ReportVerification(enum.StrEnum):
    """An SR's VerificationFlag (0040,A493), PS3.3 C.17.2.1: whether an accountable person signed it."""

    VERIFIED = "VERIFIED"
    UNVERIFIED = "UNVERIFIED"


class StudyRef(_Frozen):
    """One study at one source, as a connector is asked about it (from the exam's location there)."""

    study_instance_uid: str
    patient_id: str | None = None
    issuer_of_patient_id: str | None = None
    accession_number: str | None = None
    retrieve_url: str | None = None
    retrieve_ae_title: str | None = None


class ReportInstance(_Frozen):
    """The DICOM instance a document report is in, to fetch it again when its link is opened."""

    series_instance_uid: str
    sop_instance_uid: str


class ReportAnswer(_Frozen):
    """One source's answer about one study's report."""

    status: ReportStatus
    text: str | None = None
    """The report as readable text (a rendered SR content tree); None for a document."""
    author: str | None = None
    date: dt.date | None = None
    mime_type: str | None = None
    """The document's media type (``application/pdf``); None for a text report."""
    document: ReportInstance | None = None
    """Where the document is, for :meth:`connectors.base.Connector.fetch_report_document`."""
    title: str | None = None
    """The SR's concept name or the document's DocumentTitle, when it has one."""
    completion: ReportCompletion | None = None
    """The SR's CompletionFlag; None when the report does not say (a document, or an SR without it)."""
    verification: ReportVerification | None = None
    """The SR's VerificationFlag; None when the report does not say (a document, or an SR without it)."""
    verified_by: str | None = None
    """A VERIFIED SR's verifying observer (DICOM PN), the latest to verify it; else None."""
    verified_at: dt.datetime | None = None
    """When that observer verified it (VerificationDateTime, as written: no time zone); else None."""
    error: str | None = None
    """Why it is not AVAILABLE (no patient data: the source, the step, the reason)."""


class ReportDocument(_Frozen):
    """A document report's bytes, fetched again from its source."""

    mime_type: str
    content: bytes
    title: str | None = None


class Report(_Frozen):
    """An exam's report as the service answers it to every front end."""

    status: ReportStatus
    text: str | None = None
    author: str | None = None
    date: dt.date | None = None
    source: SourceInfo | None = None
    """The location it was read at: the first, in configuration order, that has one."""
    mime_type: str | None = None
    url_path: str | None = None
    """For a document: ``/reports/<opaque id>``, served through pacsfed to the same caller until
    ``url_expires_at`` (the id names no patient; opening it is authorized and audited)."""
    url_expires_at: dt.datetime | None = None
    title: str | None = None
    completion: ReportCompletion | None = None
    """As read: the SR's CompletionFlag; None when the report does not say (a document, or an SR without it)."""
    verification: ReportVerification | None = None
    """As read: the SR's VerificationFlag; None when the report does not say (a document, or an SR without it)."""
    verified_by: str | None = None
    """As read: a VERIFIED SR's verifying observer (DICOM PN), the latest to verify it; else None."""
    verified_at: dt.datetime | None = None
    """As read: when that observer verified it (VerificationDateTime, as written: no time zone); else None."""
    error: str | None = None
