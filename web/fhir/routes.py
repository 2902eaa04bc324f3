"""The ``/fhir`` front end: ImagingStudy search and read for EHRs, through the same door as GraphQL.

``GET /fhir/ImagingStudy?patient.identifier=[system|]value`` authenticates the caller as
``/graphql`` does (``web.http_access``: a JWT or an API key as a bearer token; 401/403 as
OperationOutcome), calls :meth:`HistoryService.patient_history` (scopes, sources, audit on the
``fhir`` channel, the configured default deadline and freshness) and answers a searchset Bundle.
Sources that did not answer are named in an OperationOutcome entry (``search.mode = outcome``).
Every exam's report is asked for through :meth:`HistoryService.exam_report` (authorized and audited
as a report read, under its own deadline ``reports.deadline_ms``): each one available is a
DiagnosticReport entry (``search.mode = include``, always, with no ``_include`` needed, since an R4
ImagingStudy cannot point to its report); one that a source failed to give is a warning in the
outcome entry. ``GET /fhir/ImagingStudy/{id}`` and ``GET /fhir/DiagnosticReport/{id}`` read
what a search gave, at its entries' ``fullUrl`` (:mod:`web.fhir.read`). JSON only: ``_format`` or
``Accept`` asking for anything else is a 406.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from typing import Any, ClassVar

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route

from federation.access.principals import AccessContext
from federation.errors import PacsfedError
from federation.models import Exam, PatientHistory
from federation.reports import Report, ReportStatus
from federation.service import HistoryRequest, HistoryService
from federation.settings import Settings
from web.fhir.read import Reads
from web.fhir.resources import (
    JSON,
    bundle,
    capability_statement,
    diagnostic_report,
    imaging_study,
    incompleteness,
    outcome_issue,
    report_issue,
)
from web.fhir.responses import error_response, failure, fhir_json, not_acceptable
from web.fhir.search import PATIENT_IDENTIFIER, PatientSearch, accepts_json, patient_search
from web.http_access import RequestAccess
from web.public_url import as_public, public_base
from web.request_id import current_request_id

_SEARCH_PARAMS = {
    PATIENT_IDENTIFIER: "[system|]value: a system maps to a pacsfed issuer (identity.issuer_systems)",
}


class FhirView:
    """The FHIR routes, reading the services from the app's state (set by its lifespan)."""

    api_paths: ClassVar[tuple[str, ...]] = (
        "/fhir/ImagingStudy",
        "/fhir/ImagingStudy/",
        "/fhir/DiagnosticReport/",
        "/fhir/metadata",
    )
    """The paths a browser app (a SMART app in an EHR) may call cross-origin (``server.cors_origins``)."""

    def __init__(self, settings: Settings) -> None:
        self.issuer_systems = dict(settings.identity.issuer_systems)
        self.national_issuer = settings.identity.national_issuer
        self.known_issuers = {s.issuer for s in settings.sources if s.issuer} | set(self.issuer_systems)
        if self.national_issuer:
            self.known_issuers.add(self.national_issuer)
        self.reads = Reads(
            self.issuer_systems,
            {s.id: s.issuer for s in settings.sources if s.issuer},
            {s.id: s.circuit.reset_s for s in settings.sources},
        )

    def routes(self) -> list[BaseRoute]:
        """``/fhir`` and everything under it (unknown paths are a 404 OperationOutcome)."""
        return [
            Mount(
                "/fhir",
                routes=[
                    Route("/metadata", self.metadata, methods=["GET"]),
                    Route("/ImagingStudy", self.search, methods=["GET"]),
                    Route("/ImagingStudy/{id}", self.read_study, methods=["GET"]),
                    Route("/DiagnosticReport/{id}", self.read_report, methods=["GET"]),
                    Route("/{rest:path}", self.not_found, methods=["GET", "POST", "PUT", "DELETE", "PATCH"]),
                ],
            )
        ]

    async def metadata(self, request: Request) -> Response:
        """The CapabilityStatement (no credential needed: it says nothing about patients)."""
        if not accepts_json(request.query_params.get("_format"), request.headers.get("accept")):
            return not_acceptable()
        try:
            software = version("pacsfed")
        except PackageNotFoundError:  # pragma: no cover - only when run from a source tree without install
            software = "unknown"
        return fhir_json(capability_statement(_base(request), software, _SEARCH_PARAMS))

    async def not_found(self, request: Request) -> Response:
        """Anything else under /fhir."""
        text = (
            "not served here: GET /fhir/ImagingStudy?patient.identifier=…, GET /fhir/ImagingStudy/{id},"
            " GET /fhir/DiagnosticReport/{id} and GET /fhir/metadata"
        )
        return error_response(404, "not-supported", text, "NOT_FOUND")

    async def search(self, request: Request) -> Response:
        """``GET /fhir/ImagingStudy?patient.identifier=[system|]value``: a searchset Bundle."""
        if not accepts_json(request.query_params.get("_format"), request.headers.get("accept")):
            return not_acceptable()
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
            return failure(exc)
        reports, notes = await _reports(access.service, history.exams, caller)
        return fhir_json(_searchset(request, search, history, reports, notes))

    async def read_study(self, request: Request) -> Response:
        """``GET /fhir/ImagingStudy/{id}``: the study a search gave at that ``fullUrl`` (:mod:`web.fhir.read`)."""
        if not accepts_json(request.query_params.get("_format"), request.headers.get("accept")):
            return not_acceptable()
        access: RequestAccess = request.app.state.services.access
        try:
            caller = await access.access_for(request, "fhir")
            return await self.reads.study(access.service, caller, request.path_params["id"])
        except PacsfedError as exc:
            return failure(exc)

    async def read_report(self, request: Request) -> Response:
        """``GET /fhir/DiagnosticReport/{id}``: a study's report, as a search includes it (:mod:`web.fhir.read`)."""
        if not accepts_json(request.query_params.get("_format"), request.headers.get("accept")):
            return not_acceptable()
        access: RequestAccess = request.app.state.services.access
        try:
            caller = await access.access_for(request, "fhir")
            server = public_base(request) + "/"
            return await self.reads.report(access.service, caller, request.path_params["id"], server)
        except PacsfedError as exc:
            return failure(exc)

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
