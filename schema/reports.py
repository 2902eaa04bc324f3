"""GraphQL's view of an exam's report: ``exams { report { status text author date mimeType url } }``.

``completion`` and ``verification`` say whether the report is final: they are the SR's own flags
(PS3.3 C.17.2), null when the report does not say (a PDF has none); only COMPLETE and VERIFIED
together make a final report.

The field resolves only when a query selects it (no source is asked otherwise), through the
service, which authorizes and audits the reading like any access.
"""

from __future__ import annotations

from typing import Any

import graphene

from federation.models import ReportAvailability as ReportAvailabilityModel
from federation.reports import Report as ReportModel
from federation.reports import ReportCompletion as ReportCompletionModel
from federation.reports import ReportStatus as ReportStatusModel
from federation.reports import ReportVerification as ReportVerificationModel
from web.public_url import public_base

ReportStatus = graphene.Enum.from_enum(
    ReportStatusModel,
    description="AVAILABLE; NOT_FOUND (no report at the sources asked); UNSUPPORTED (no source holding"
    " the exam gives reports); ERROR (a source that may hold it failed or was late); UNAVAILABLE (a source"
    " that may hold it was not asked: its circuit breaker is open); BUSY (not asked: pacsfed's own slots"
    " for it stayed taken until the report's deadline).",
)

ReportAvailability = graphene.Enum.from_enum(
    ReportAvailabilityModel,
    description="What the search says of an exam's report without reading it: LIKELY (a source holding"
    " it gives reports and the study lists an SR or DOC series); UNKNOWN (such a source holds it, no"
    " report series listed: only reading tells); UNSUPPORTED (no source holding it gives reports).",
)

ReportCompletion = graphene.Enum.from_enum(
    ReportCompletionModel,
    description="An SR's CompletionFlag (0040,A491): COMPLETE, or PARTIAL (content may be added later).",
)

ReportVerification = graphene.Enum.from_enum(
    ReportVerificationModel,
    description="An SR's VerificationFlag (0040,A493): VERIFIED (signed by an accountable person),"
    " or UNVERIFIED (a preliminary report).",
)


class Report(graphene.ObjectType):
    """An exam's report: a DICOM SR rendered as text, or a document (PDF) served through pacsfed."""

    status = graphene.Field(ReportStatus, required=True)
    text = graphene.String(description="The report as readable, indented text (SR content tree).")
    author = graphene.String(description="DICOM PN of its author or verifying observer.")
    date = graphene.Date(description="ContentDate of the report.")
    title = graphene.String(description="The report's document title, when it has one.")
    source = graphene.Field(
        "schema.types.Source", description="Where it was read: the first location, in configuration order."
    )
    mime_type = graphene.String(description="For a document report: its media type (application/pdf).")
    url = graphene.String(
        description="For a document report: where this caller may fetch it (same credentials), until urlExpiresAt."
    )
    url_expires_at = graphene.DateTime()
    completion = graphene.Field(
        ReportCompletion,
        description="The SR's CompletionFlag; null when the report does not say (a PDF, or an SR without"
        " it). Final only when COMPLETE and verification is VERIFIED.",
    )
    verification = graphene.Field(
        ReportVerification,
        description="The SR's VerificationFlag: UNVERIFIED is a preliminary report; null when the report"
        " does not say (a PDF, or an SR without it): not known to be final.",
    )
    verified_by = graphene.String(
        description="A VERIFIED SR's verifying observer (DICOM PN), the latest to verify it; else null."
    )
    verified_at = graphene.DateTime(
        description="When verifiedBy verified it (VerificationDateTime, as written: no time zone); else null."
    )
    error = graphene.String(description="Why it is not AVAILABLE; never holds patient data.")

    @staticmethod
    def resolve_url(root: ReportModel, info: Any) -> str | None:
        if root.url_path is None:
            return None
        base = public_base(info.context["request"])
        return base + root.url_path


async def resolve_exam_report(root: Any, info: Any, deadline_ms: int | None = None) -> ReportModel:
    """Ask the service for the exam's report (only runs when ``report`` is selected)."""
    from schema.query import access_of, service_of  # the root module imports the types: no cycle

    return await service_of(info).exam_report(root, access_of(info), deadline_ms=deadline_ms)
