"""FHIR read: ``GET /fhir/ImagingStudy/{id}`` and ``GET /fhir/DiagnosticReport/{id}``, what a search gave.

An id is a StudyInstanceUID (:func:`web.fhir.resources.study_id`; a report's id is its study's).
The study is found through :meth:`HistoryService.find_study`, the search by StudyInstanceUID that
WADO-RS and QIDO-RS use: the same scopes, ``principal.sources``, a share code reaching only its
studies (or its patient's), ``history:emergency`` alone only the patients of the caller's open
break-the-glass windows; audited as that search is (PATIENT_QUERY on the ``fhir`` channel: the
access before any source is asked, the outcome after). A DiagnosticReport read then reads the
study's report as the search does (:meth:`HistoryService.exam_report`, audited as a report read).

The answer:

- 200: the resource as a search gives it, but for its subject: a read names no patient, so the
  subject is the patient id of the study's first holding source, with its issuer's system
  (``identity.issuer_systems``), as a search by that identifier would name it.
- 404 ``not-found``: the id names no readable study (not a DICOM UID: a UUID id, given to a
  study whose UID is not one, cannot be asked for), or every source that may hold it answered and
  none open to this caller does; for a report, the study has no report (or no source of it reads
  reports).
- 503 ``transient``: not found, and a source that may hold it did not answer (unreachable, late,
  failed, circuit open, pacsfed's own slots busy): "not found" would be false, and a client that
  follows a search's ``fullUrl`` should try again rather than drop the study. The OperationOutcome
  names those sources and their status, nothing of the patient; ``Retry-After`` is the longest
  circuit reset among the sources whose circuit is open, else 5 s. A report a source failed to give
  (``ERROR``, ``UNAVAILABLE``, ``BUSY``) is the same. A study found while other sources failed is
  answered (200) from those that hold it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from starlette.responses import Response

from federation.access.principals import AccessContext
from federation.models import SourceOutcome, SourceStatus
from federation.reports import ReportStatus
from federation.search import StudyMatch
from federation.service import HistoryService
from web.fhir.resources import (
    JSON,
    Identifier,
    diagnostic_report,
    imaging_study,
    operation_outcome,
    outcome_issue,
    report_issue,
    source_issue,
    study_uid_of,
)
from web.fhir.responses import error_response, fhir_json
from web.request_id import current_request_id

__all__ = ["Reads"]

NOT_ANSWERED = frozenset(
    {
        SourceStatus.TIMEOUT,
        SourceStatus.UNREACHABLE,
        SourceStatus.ERROR,
        SourceStatus.SKIPPED,
        SourceStatus.BUSY,
        SourceStatus.NOT_CACHED,
    }
)
"""Statuses of a source that may hold the study but did not say (NO_IDENTIFIER and UNSUPPORTED: it cannot)."""
RETRY_AFTER_S = 5
"""``Retry-After`` of a 503 when no source's circuit is open: about one query's time."""


class Reads:
    """The read interactions, over the service; what they need of the settings given once."""

    def __init__(
        self,
        issuer_systems: Mapping[str, str],
        source_issuers: Mapping[str, str],
        circuit_reset_s: Mapping[str, float],
    ) -> None:
        self.issuer_systems = dict(issuer_systems)
        self.source_issuers = dict(source_issuers)
        """Each source's configured issuer: its patients' identifier domain when a record names none."""
        self.circuit_reset_s = dict(circuit_reset_s)

    async def study(self, service: HistoryService, caller: AccessContext, resource_id: str) -> Response:
        """``GET /fhir/ImagingStudy/{id}``: the ImagingStudy, or a 404/503 OperationOutcome."""
        found = await self._find(service, caller, "ImagingStudy", resource_id)
        if isinstance(found, Response):
            return found
        return fhir_json(imaging_study(found.exam, self._subject(found)))

    async def report(
        self, service: HistoryService, caller: AccessContext, resource_id: str, server: str
    ) -> Response:
        """``GET /fhir/DiagnosticReport/{id}``: the study's report, or a 404/503 OperationOutcome."""
        found = await self._find(service, caller, "DiagnosticReport", resource_id)
        if isinstance(found, Response):
            return found
        report = await service.exam_report(found.exam, caller)
        if report.status is ReportStatus.AVAILABLE:
            return fhir_json(diagnostic_report(found.exam, report, self._subject(found), server))
        issue = report_issue(report)
        if issue is None:  # NOT_FOUND, UNSUPPORTED: every source that may have it said, or none can
            return _not_found("DiagnosticReport", "this study has no report in a source open to this caller")
        retry = RETRY_AFTER_S
        if report.status is ReportStatus.UNAVAILABLE and report.source is not None:
            retry = max(retry, math.ceil(self.circuit_reset_s.get(report.source.id, 0)))
        issues = [issue | {"severity": "error", "code": "transient"}]
        return fhir_json(operation_outcome(issues, current_request_id()), 503, {"Retry-After": str(retry)})

    async def _find(
        self, service: HistoryService, caller: AccessContext, resource_type: str, resource_id: str
    ) -> StudyMatch | Response:
        """The study the id names, found as a viewer finds it; a 404 or 503 when it cannot be given."""
        uid = study_uid_of(resource_id)
        if uid is None:
            return _not_found(
                resource_type, f"no {resource_type} has this id here (ids are StudyInstanceUIDs)"
            )
        result = await service.find_study(uid, caller)
        for match in result.studies:
            if match.exam.study_instance_uid == uid:
                return match
        unanswered = [outcome for outcome in result.sources if outcome.status in NOT_ANSWERED]
        if unanswered:
            return self._unanswered(unanswered)
        return _not_found(resource_type, "no source open to this caller holds this study")

    def _unanswered(self, outcomes: Sequence[SourceOutcome]) -> Response:
        """503: the study was not found, and these sources, which may hold it, did not answer."""
        lead = outcome_issue(
            "error",
            "transient",
            "the study was not found in the sources that answered; some that may hold it did not: try again",
            "SOURCES_UNANSWERED",
        )
        issues: list[JSON] = [lead, *(source_issue(o, "error", "transient") for o in outcomes)]
        retry = RETRY_AFTER_S
        for outcome in outcomes:
            if outcome.status is SourceStatus.SKIPPED:
                retry = max(retry, math.ceil(self.circuit_reset_s.get(outcome.source.id, 0)))
        return fhir_json(operation_outcome(issues, current_request_id()), 503, {"Retry-After": str(retry)})

    def _subject(self, match: StudyMatch) -> Identifier | None:
        """The patient as the holding source names it (the searched one, for a search by patient)."""
        if not match.patient_id:
            return None
        issuer = match.issuer_of_patient_id
        if issuer is None and match.exam.locations:
            issuer = self.source_issuers.get(match.exam.locations[0].source.id)
        return Identifier(match.patient_id, self.issuer_systems.get(issuer, issuer) if issuer else None)


def _not_found(resource_type: str, text: str) -> Response:
    return error_response(404, "not-found", f"{resource_type} not found: {text}", "NOT_FOUND")
