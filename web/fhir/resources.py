"""FHIR R4 resources from a patient history: a searchset Bundle of ImagingStudy, their Endpoints, outcomes.

Plain JSON-ready dicts (FHIR R4, https://hl7.org/fhir/R4/): the tests validate them with the
``fhir.resources`` R4B models, whose ImagingStudy, Endpoint, Bundle and OperationOutcome have the
R4 shape. One ImagingStudy per merged exam; each location whose
source gave a DICOMweb RetrieveURL (0008,1190) adds a contained Endpoint of type ``dicom-wado-rs``
whose address is the WADO-RS base (the URL without ``/studies/{uid}``, as R4 ImagingStudy.endpoint
says). The subject is a logical reference by the identifier that was searched for: nothing about
the patient is sent that the caller did not send (a read, which names no patient, gives the
patient id of the study's first holding source).

Ids: an ImagingStudy's id is its StudyInstanceUID, and so is the id of the DiagnosticReport of
that study (ids are unique per resource type). A DICOM UID is at most 64 digits and dots (PS3.5
9.1), so it is always a valid FHIR id (``[A-Za-z0-9.-]{1,64}``) and readable at
``{base}/ImagingStudy/{uid}``, which is the entry's ``fullUrl``. A UID that is not a DICOM UID
(longer than 64 characters, or other characters: a non-conformant source) cannot be asked for by
StudyInstanceUID: its resources get a stable UUID id (``uuid5`` of the UID) and a ``urn:uuid:``
fullUrl, since they have no address here that a read could answer.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from federation.models import Exam, PatientHistory, SourceOutcome, SourceStatus
from federation.reports import Report, ReportCompletion, ReportStatus, ReportVerification

__all__ = [
    "DCM",
    "JSON",
    "Identifier",
    "bundle",
    "diagnostic_report",
    "diagnostic_report_status",
    "imaging_study",
    "operation_outcome",
    "outcome_issue",
    "report_issue",
    "source_issue",
    "study_id",
    "study_uid_of",
]

JSON = dict[str, Any]

DCM = "http://dicom.nema.org/resources/ontology/DCM"
"""The DICOM code system (PS3.16): modality codes."""
DICOM_UID = "urn:dicom:uid"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
V2_0074 = "http://terminology.hl7.org/CodeSystem/v2-0074"
CONNECTION_TYPE = "http://terminology.hl7.org/CodeSystem/endpoint-connection-type"
ERROR_CODES = "urn:pacsfed:error-code"
"""The system of pacsfed's own error codes (BAD_PATIENT_INPUT, FORBIDDEN, …) in OperationOutcome details."""

_DICOM_UID = re.compile(r"[0-9.]{1,64}")
"""A UID as pacsfed can search for it (PS3.5 9.1: digits and dots, at most 64): also a valid FHIR id."""
_WHY_NOT = {
    SourceStatus.TIMEOUT: "did not answer in time",
    SourceStatus.UNREACHABLE: "could not be reached",
    SourceStatus.ERROR: "answered with an error",
    SourceStatus.NO_IDENTIFIER: "was not asked: no identifier of this patient is known in its domain",
    SourceStatus.SKIPPED: "was not asked: its circuit is open after repeated failures",
    SourceStatus.NOT_CACHED: "was not asked and the cache holds no answer of it",
    SourceStatus.BUSY: "was not asked: pacsfed was at its own limit of requests to it (not the hospital's fault)",
}


@dataclass(frozen=True, slots=True)
class Identifier:
    """The patient identifier a search asked for, as the subject of every resource returned."""

    value: str
    system: str | None = None

    def as_json(self) -> JSON:
        """FHIR Identifier."""
        return {"system": self.system, "value": self.value} if self.system else {"value": self.value}


def study_id(uid: str) -> str:
    """The FHIR resource id of a study (and of its report): its UID when a DICOM UID, else a stable UUID of it."""
    return uid if _DICOM_UID.fullmatch(uid) else str(uuid.uuid5(uuid.NAMESPACE_OID, uid))


def study_uid_of(resource_id: str) -> str | None:
    """The StudyInstanceUID an ImagingStudy or DiagnosticReport id names; None when it names none readable."""
    return resource_id if _DICOM_UID.fullmatch(resource_id) else None


def wado_rs_base(retrieve_url: str | None) -> str | None:
    """The WADO-RS service base of a study's RetrieveURL (``…/studies/{uid}``); None when it has no such shape."""
    if not retrieve_url:
        return None
    cut = retrieve_url.rfind("/studies/")
    return retrieve_url[:cut] if cut > 0 else None


def _endpoints(exam: Exam) -> list[JSON]:
    endpoints: dict[str, JSON] = {}
    for location in exam.locations:
        base = wado_rs_base(location.retrieve_url)
        if base is None or location.source.id in endpoints:
            continue
        endpoints[location.source.id] = {
            "resourceType": "Endpoint",
            "id": f"ep-{location.source.id}",
            "status": "active",
            "connectionType": {"system": CONNECTION_TYPE, "code": "dicom-wado-rs"},
            "name": location.source.name,
            "payloadType": [{"text": "DICOM"}],
            "payloadMimeType": ["application/dicom"],
            "address": base,
        }
    return list(endpoints.values())


def _subject(subject: Identifier | None) -> JSON:
    """A logical reference to the patient; without an identifier (a source that named none), a display."""
    if subject is None:
        return {"type": "Patient", "display": "patient not identified by the source"}
    return {"type": "Patient", "identifier": subject.as_json()}


def imaging_study(exam: Exam, subject: Identifier | None) -> JSON:
    """One merged exam as an R4 ImagingStudy (status ``available``: it was found in a PACS)."""
    identifiers: list[JSON] = [
        {"use": "official", "system": DICOM_UID, "value": f"urn:oid:{exam.study_instance_uid}"}
    ]
    if exam.accession_number:
        identifiers.append(
            {
                "use": "usual",
                "type": {"coding": [{"system": V2_0203, "code": "ACSN"}]},
                "value": exam.accession_number,
            }
        )
    study: JSON = {"resourceType": "ImagingStudy", "id": study_id(exam.study_instance_uid)}
    endpoints = _endpoints(exam)
    if endpoints:
        study["contained"] = endpoints
    study |= {
        "identifier": identifiers,
        "status": "available",
        "subject": _subject(subject),
    }
    if exam.modalities:
        study["modality"] = [{"system": DCM, "code": code} for code in exam.modalities]
    if exam.study_date is not None:
        # A DICOM StudyTime has no time zone, and a FHIR dateTime with a time must have one: the date only.
        study["started"] = exam.study_date.isoformat()
    if endpoints:
        study["endpoint"] = [{"reference": f"#{endpoint['id']}"} for endpoint in endpoints]
    if exam.number_of_series is not None:
        study["numberOfSeries"] = exam.number_of_series
    if exam.number_of_instances is not None:
        study["numberOfInstances"] = exam.number_of_instances
    if exam.description:
        study["description"] = exam.description
    return study


def diagnostic_report_status(report: Report) -> str:
    """R4 ``DiagnosticReport.status`` from the SR's flags (PS3.3 C.17.2): ``final`` only when it says so.

    PARTIAL → ``partial``; COMPLETE and VERIFIED → ``final``; UNVERIFIED → ``preliminary``;
    anything else (a document, which has no flags, or an SR that omits them) → ``unknown``, an R4
    code for exactly this ("the authoring system does not know which of the status values currently
    applies"): an EHR must not take a report nobody said was signed for a final one.
    """
    if report.completion is ReportCompletion.PARTIAL:
        return "partial"
    if report.verification is ReportVerification.UNVERIFIED:
        return "preliminary"
    if report.completion is ReportCompletion.COMPLETE and report.verification is ReportVerification.VERIFIED:
        return "final"
    return "unknown"


def diagnostic_report(exam: Exam, report: Report, subject: Identifier | None, server: str) -> JSON:
    """An exam's available report as an R4 DiagnosticReport whose ``imagingStudy`` points back to it.

    Its ``status`` is :func:`diagnostic_report_status` (``final`` only for a complete, verified SR).

    Text reports are the ``conclusion``; a document (a PDF) is a ``presentedForm`` link served
    through pacsfed (``server`` + its path; the same credential opens it, for a short while).
    """
    resource: JSON = {
        "resourceType": "DiagnosticReport",
        "id": study_id(exam.study_instance_uid),
        "status": diagnostic_report_status(report),
        "category": [{"coding": [{"system": V2_0074, "code": "RAD"}]}],
        "code": {"text": report.title or exam.description or "Imaging report"},
        "subject": _subject(subject),
        "imagingStudy": [{"reference": f"ImagingStudy/{study_id(exam.study_instance_uid)}"}],
    }
    if report.date is not None:
        resource["effectiveDateTime"] = report.date.isoformat()
    if report.author:
        resource["resultsInterpreter"] = [{"display": " ".join(report.author.replace("^", " ").split())}]
    if report.text:
        resource["conclusion"] = report.text
    if report.url_path:
        form: JSON = {"url": server.rstrip("/") + report.url_path}
        if report.mime_type:
            form["contentType"] = report.mime_type
        if report.title:
            form["title"] = report.title
        resource["presentedForm"] = [form]
    return resource


_NOT_READ = frozenset({ReportStatus.ERROR, ReportStatus.UNAVAILABLE, ReportStatus.BUSY})


def report_issue(report: Report) -> JSON | None:
    """A warning when a report that may exist could not be read (its error names no patient data).

    ``REPORT_ERROR``: the source failed; ``REPORT_UNAVAILABLE``: its circuit is open (not asked);
    ``REPORT_BUSY``: pacsfed's own slots for it stayed taken (not asked).
    """
    if report.status not in _NOT_READ:
        return None
    reason = report.error or report.status.value.lower()
    if report.source is not None:  # the engine's error starts with the source's id: said once
        where, reason = f"source {report.source.id}", reason.removeprefix(f"{report.source.id}: ")
    else:
        where = "a source"
    text = f"a report could not be read from {where}: {reason}"
    return outcome_issue("warning", "incomplete", text, f"REPORT_{report.status.value}")


def outcome_issue(severity: str, code: str, text: str, error_code: str | None = None) -> JSON:
    """One OperationOutcome issue; ``error_code`` is pacsfed's own code, in ``details``."""
    details: JSON = {"text": text}
    if error_code is not None:
        details["coding"] = [{"system": ERROR_CODES, "code": error_code}]
    return {"severity": severity, "code": code, "details": details}


def operation_outcome(issues: Sequence[JSON], request_id: str | None = None) -> JSON:
    """An OperationOutcome; the request id (for support) goes into each issue's diagnostics."""
    if request_id:
        issues = [{**issue, "diagnostics": f"request {request_id}"} for issue in issues]
    return {"resourceType": "OperationOutcome", "id": str(uuid.uuid4()), "issue": list(issues)}


def source_issue(outcome: SourceOutcome, severity: str = "warning", code: str = "incomplete") -> JSON:
    """An issue naming a source that did not answer, and why (its id, name and status only)."""
    why = _WHY_NOT.get(outcome.status, "did not answer")
    if outcome.stale_cached_at is not None:
        why += f"; its older cached answer of {outcome.stale_cached_at.isoformat()} is shown"
    text = f"source {outcome.source.id} ({outcome.source.name}) {why} [{outcome.status.value}]"
    return outcome_issue(severity, code, text, outcome.status.value)


def incompleteness(history: PatientHistory, notes: Iterable[JSON] = ()) -> list[JSON]:
    """Issues for each source that did not answer, the query's warnings, and ``notes``."""
    issues = [source_issue(o) for o in history.sources if o.status is not SourceStatus.OK]
    issues.extend(outcome_issue("information", "informational", warning) for warning in history.warnings)
    issues.extend(notes)
    return issues


def _entry(base: str, resource: JSON, mode: str) -> JSON:
    """A searchset entry; its fullUrl is where a read answers the resource, when it has such an address."""
    url = f"{base}/{resource['resourceType']}/{resource['id']}"
    if resource["resourceType"] == "OperationOutcome" or study_uid_of(resource["id"]) is None:
        url = f"urn:uuid:{resource['id']}"
    return {"fullUrl": url, "resource": resource, "search": {"mode": mode}}


def bundle(
    base: str,
    self_url: str,
    studies: Sequence[JSON],
    *,
    included: Sequence[JSON] = (),
    issues: Sequence[JSON] = (),
    request_id: str | None = None,
) -> JSON:
    """A searchset Bundle: the studies (match), their reports (include), one outcome when there are issues."""
    entries = [_entry(base, study, "match") for study in studies]
    entries.extend(_entry(base, resource, "include") for resource in included)
    if issues:
        entries.append(_entry(base, operation_outcome(issues, request_id), "outcome"))
    return {
        "resourceType": "Bundle",
        "id": str(uuid.uuid4()),
        "meta": {"lastUpdated": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")},
        "type": "searchset",
        "total": len(studies),
        "link": [{"relation": "self", "url": self_url}],
        "entry": entries,
    }


def capability_statement(base: str, software_version: str, params: Mapping[str, str]) -> JSON:
    """What this FHIR view serves: ImagingStudy search by ``patient.identifier`` and read, DiagnosticReport read; JSON only."""
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": dt.date.today().isoformat(),
        "kind": "instance",
        "software": {"name": "pacsfed", "version": software_version},
        "implementation": {"description": "pacsfed FHIR view (read-only, federated)", "url": base},
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json", "json"],
        "rest": [
            {
                "mode": "server",
                "security": {
                    "service": [
                        {
                            "coding": [
                                {
                                    "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                                    "code": "OAuth",
                                }
                            ]
                        }
                    ],
                    "description": "Authorization: Bearer (a JWT or a pacsfed API key), as for /graphql",
                },
                "resource": [
                    {
                        "type": "ImagingStudy",
                        "interaction": [{"code": "read"}, {"code": "search-type"}],
                        "searchParam": [
                            {"name": name, "type": "token", "documentation": text}
                            for name, text in params.items()
                        ],
                    },
                    {
                        "type": "DiagnosticReport",
                        "interaction": [{"code": "read"}],
                        "documentation": "an exam's report, included in ImagingStudy searches; its id is the study's",
                    },
                ],
            }
        ],
    }
