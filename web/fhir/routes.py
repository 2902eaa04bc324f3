"""The ``/fhir`` front end: ImagingStudy search for EHRs, through the same door as GraphQL.

``GET /fhir/ImagingStudy?patient.identifier=[system|]value`` authenticates the caller as
``/graphql`` does (``web.http_access``: a JWT or an API key as a bearer token; 401/403 as
OperationOutcome), calls :meth:`HistoryService.patient_history` (scopes, sources, audit on the
``fhir`` channel, the configured default deadline and freshness) and answers a searchset Bundle.
Sources that did not answer are named in an OperationOutcome entry (``search.mode = outcome``).
Every exam's report is asked for through :meth:`HistoryService.exam_report` (authorized and audited
as a report read, under its own deadline ``reports.deadline_ms``): each one available is a
DiagnosticReport entry (``search.mode = include``, always, with no ``_include`` needed, since an R4
ImagingStudy cannot point to its report); one that a source failed to give is a warning in the
outcome entry. JSON only: ``_format`` or ``Accept`` asking for anything else is a 406.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from typing import Any, ClassVar

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route

from federation.access.principals import AccessContext
from federation.errors import (
    AccessError,
    AuditError,
    AuthenticationError,
    CacheError,
    Overloaded,
    PacsfedError,
    QueryError,
)
from federation.models import Exam, PatientHistory
from federation.reports import Report, ReportStatus
from federation.service import HistoryRequest, HistoryService
from federation.settings import Settings
from web.fhir.resources import (
    JSON,
    bundle,
    capability_statement,
    diagnostic_report,
    imaging_study,
    incompleteness,
    operation_outcome,
    outcome_issue,
    report_issue,
)
from web.fhir.search import PATIENT_IDENTIFIER, PatientSearch, accepts_json, patient_search
from web.http_access import RequestAccess
from web.public_url import as_public, public_base
from web.request_id import current_request_id

log = logging.getLogger(__name__)

MEDIA_TYPE = "application/fhir+json"

_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}
_SEARCH_PARAMS = {
    PATIENT_IDENTIFIER: "[system|]value: a system maps to a pacsfed issuer (identity.issuer_systems)",
}


def fhir_json(resource: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """A FHIR JSON response."""
    body = json.dumps(resource, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return Response(
        body,
        status_code=status,
        media_type=f"{MEDIA_TYPE}; charset=utf-8",
        headers=_HEADERS | (headers or {}),
    )


def error_response(
    status: int, code: str, text: str, error_code: str | None = None, headers: dict[str, str] | None = None
) -> Response:
    """An OperationOutcome with one error issue."""
    issue = outcome_issue("error", code, text, error_code)
    return fhir_json(operation_outcome([issue], current_request_id()), status, headers)


def _failure(exc: PacsfedError) -> Response:
    """A failure of the search as the HTTP status and OperationOutcome it means (messages hold no patient data)."""
    code = getattr(exc, "code", None)
    if isinstance(exc, AuthenticationError):
        error = "invalid_request" if exc.code == "UNAUTHENTICATED" else "invalid_token"
        challenge = {"WWW-Authenticate": f'Bearer realm="pacsfed", error="{error}"'}
        return error_response(401, "login", str(exc), exc.code, challenge)
    if isinstance(exc, AccessError):
        return error_response(exc.status, "forbidden", str(exc), exc.code)
    if isinstance(exc, QueryError):
        return error_response(400, "invalid", str(exc), exc.code)
    if isinstance(exc, Overloaded):
        retry = {"Retry-After": str(exc.retry_after_s)}
        return error_response(503, "transient", "too many queries in progress; try again", exc.code, retry)
    if isinstance(exc, AuditError | CacheError):
        return error_response(503, "transient", "the service cannot answer now; try again", code)
    log.warning("fhir search failed: %s", type(exc).__name__)
    return error_response(500, "exception", "the search failed", code)


class FhirView:
    """The FHIR routes, reading the services from the app's state (set by its lifespan)."""

    api_paths: ClassVar[tuple[str, ...]] = ("/fhir/ImagingStudy", "/fhir/metadata")
    """The paths a browser app (a SMART app in an EHR) may call cross-origin (``server.cors_origins``)."""

    def __init__(self, settings: Settings) -> None:
        self.issuer_systems = dict(settings.identity.issuer_systems)
        self.national_issuer = settings.identity.national_issuer
        self.known_issuers = {s.issuer for s in settings.sources if s.issuer} | set(self.issuer_systems)
        if self.national_issuer:
            self.known_issuers.add(self.national_issuer)

    def routes(self) -> list[BaseRoute]:
        """``/fhir`` and everything under it (unknown paths are a 404 OperationOutcome)."""
        return [
            Mount(
                "/fhir",
                routes=[
                    Route("/metadata", self.metadata, methods=["GET"]),
                    Route("/ImagingStudy", self.search, methods=["GET"]),
                    Route("/{rest:path}", self.not_found, methods=["GET", "POST", "PUT", "DELETE", "PATCH"]),
                ],
            )
        ]

    async def metadata(self, request: Request) -> Response:
        """The CapabilityStatement (no credential needed: it says nothing about patients)."""
        if not accepts_json(request.query_params.get("_format"), request.headers.get("accept")):
            return _not_acceptable()
        try:
            software = version("pacsfed")
        except PackageNotFoundError:  # pragma: no cover - only when run from a source tree without install
            software = "unknown"
        return fhir_json(capability_statement(_base(request), software, _SEARCH_PARAMS))

    async def not_found(self, request: Request) -> Response:
        """Anything else under /fhir."""
        text = "not served here: GET /fhir/ImagingStudy?patient.identifier=… and GET /fhir/metadata"
        return error_response(404, "not-supported", text, "NOT_FOUND")

    async def search(self, request: Request) -> Response:
        """``GET /fhir/ImagingStudy?patient.identifier=[system|]value``: a searchset Bundle."""
        if not accepts_json(request.query_params.get("_format"), request.headers.get("accept")):
            return _not_acceptable()
        access: RequestAccess = request.app.state.services.access
        try:
            caller = await access.access_for(request, "fhir")
            search = self._search(request)
            if search.query is None:
                note = outcome_issue(
                    "information",
                    "not-found",
                    "the identifier system maps to no issuer here: nothing matches",
                )
                return fhir_json(
                    bundle(_base(request), as_public(request, str(request.url)), [], issues=[note])
                )
            history = await access.service.patient_history(search.query, caller, HistoryRequest())
        except PacsfedError as exc:
            return _failure(exc)
        reports, notes = await _reports(access.service, history.exams, caller)
        return fhir_json(_searchset(request, search, history, reports, notes))

    def _search(self, request: Request) -> PatientSearch:
        values = request.query_params.getlist(PATIENT_IDENTIFIER)
        return patient_search(values, self.issuer_systems, self.known_issuers, self.national_issuer)


async def _reports(
    service: HistoryService, exams: Sequence[Exam], caller: AccessContext
) -> tuple[dict[str, Report], list[JSON]]:
    """The available reports of the exams (by StudyInstanceUID), and issues for those that failed."""

    async def one(exam: Exam) -> Report | PacsfedError:
        try:
            return await service.exam_report(exam, caller)
        except PacsfedError as exc:  # audited by the service; the studies are still worth sending
            return exc

    answers = await asyncio.gather(*(one(exam) for exam in exams))
    reports: dict[str, Report] = {}
    notes: dict[str, JSON] = {}
    for exam, answer in zip(exams, answers, strict=True):
        if isinstance(answer, PacsfedError):
            code = getattr(answer, "code", type(answer).__name__)
            notes[code] = outcome_issue("warning", "incomplete", f"reports could not be read ({code})", code)
        elif answer.status is ReportStatus.AVAILABLE:
            reports[exam.study_instance_uid] = answer
        elif (issue := report_issue(answer)) is not None:
            notes[issue["details"]["text"]] = issue
    return reports, list(notes.values())


def _searchset(
    request: Request,
    search: PatientSearch,
    history: PatientHistory,
    reports: dict[str, Report],
    notes: list[JSON],
) -> dict[str, Any]:
    server = public_base(request) + "/"
    studies = [imaging_study(exam, search.subject) for exam in history.exams]
    included = [
        diagnostic_report(exam, reports[exam.study_instance_uid], search.subject, server)
        for exam in history.exams
        if exam.study_instance_uid in reports
    ]
    return bundle(
        _base(request),
        as_public(request, str(request.url)),
        studies,
        included=included,
        issues=incompleteness(history, notes),
        request_id=current_request_id(),
    )


def _base(request: Request) -> str:
    """This server's FHIR base URL, as callers reach it (``server.public_url``, else the request's Host)."""
    return public_base(request) + "/fhir"


def _not_acceptable() -> Response:
    return error_response(
        406, "not-supported", "only FHIR JSON is served: application/fhir+json", "NOT_ACCEPTABLE"
    )
