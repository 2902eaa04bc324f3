"""The FHIR view's resources: R4 shapes checked with fhir.resources' R4B models (R4's ImagingStudy shape)."""

from __future__ import annotations

import datetime as dt

import pytest
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.capabilitystatement import CapabilityStatement
from fhir.resources.R4B.diagnosticreport import DiagnosticReport
from fhir.resources.R4B.imagingstudy import ImagingStudy
from fhir.resources.R4B.operationoutcome import OperationOutcome

from federation.models import (
    Exam,
    ExamLocation,
    PatientHistory,
    SourceInfo,
    SourceOutcome,
    SourceStatus,
)
from federation.reports import PDF, Report, ReportCompletion, ReportStatus, ReportVerification
from web.fhir.resources import (
    DCM,
    Identifier,
    bundle,
    capability_statement,
    diagnostic_report,
    diagnostic_report_status,
    imaging_study,
    incompleteness,
    report_issue,
    study_id,
    study_uid_of,
    wado_rs_base,
)

A = SourceInfo(id="hosp-a", name="Hôpital A", kind="dimse")
C = SourceInfo(id="hosp-c", name="Clinique C", kind="dicomweb")
UID = "1.2.826.0.1.3680043.10.1234.1.1"
BASE = "http://pacsfed.test/fhir"
SUBJECT = Identifier("PA-001", "urn:oid:1.2.3.4")

EXAM = Exam(
    study_instance_uid=UID,
    study_date=dt.date(2024, 1, 5),
    study_time=dt.time(10, 30),
    modalities=("CT", "SR"),
    description="CT THORAX",
    accession_number="ACC-1001",
    number_of_series=2,
    number_of_instances=4,
    locations=(
        ExamLocation(source=A, patient_id="PA-001", retrieve_ae_title="HOSPA"),
        ExamLocation(source=C, retrieve_url=f"http://127.0.0.1:8042/dicom-web/studies/{UID}"),
    ),
)


def test_an_exam_is_an_r4_imaging_study_with_its_wado_rs_endpoint() -> None:
    study = ImagingStudy.model_validate(imaging_study(EXAM, SUBJECT))
    assert study.id == UID
    assert study.status == "available"
    assert [(i.system, i.value) for i in study.identifier] == [
        ("urn:dicom:uid", f"urn:oid:{UID}"),
        (None, "ACC-1001"),
    ]
    assert study.identifier[1].type.coding[0].code == "ACSN"
    assert [(m.system, m.code) for m in study.modality] == [(DCM, "CT"), (DCM, "SR")]
    assert str(study.started) == "2024-01-05"
    assert (study.numberOfSeries, study.numberOfInstances, study.description) == (2, 4, "CT THORAX")
    assert study.subject.identifier.system == "urn:oid:1.2.3.4"
    assert study.subject.identifier.value == "PA-001"
    [endpoint] = study.contained
    assert endpoint.get_resource_type() == "Endpoint"
    assert endpoint.connectionType.code == "dicom-wado-rs"
    assert endpoint.address == "http://127.0.0.1:8042/dicom-web"
    assert [ref.reference for ref in study.endpoint] == [f"#{endpoint.id}"]


def test_a_bare_exam_still_validates() -> None:
    bare = Exam(study_instance_uid="1.2.3", locations=(ExamLocation(source=A),))
    study = ImagingStudy.model_validate(imaging_study(bare, Identifier("X")))
    assert study.endpoint is None and study.contained is None and study.modality is None
    assert study.subject.identifier.system is None


@pytest.mark.parametrize(
    ("url", "base"),
    [
        (f"https://pacs/dicom-web/studies/{UID}", "https://pacs/dicom-web"),
        (f"https://pacs/wado/rs/studies/{UID}", "https://pacs/wado/rs"),
        ("https://pacs/other", None),
        (None, None),
    ],
)
def test_the_wado_rs_base_is_the_retrieve_url_without_the_study(url: str | None, base: str | None) -> None:
    assert wado_rs_base(url) == base


def test_an_incomplete_federation_is_an_outcome_entry_naming_each_silent_source() -> None:
    history = PatientHistory(
        complete=False,
        exams=(EXAM,),
        sources=(
            SourceOutcome(source=A, status=SourceStatus.OK, latency_ms=3, exam_count=1),
            SourceOutcome(source=C, status=SourceStatus.TIMEOUT, latency_ms=5000, error="timed out"),
        ),
    )
    studies = [imaging_study(EXAM, SUBJECT)]
    result = Bundle.model_validate(
        bundle(BASE, f"{BASE}/ImagingStudy?x", studies, issues=incompleteness(history), request_id="r1")
    )
    assert result.type == "searchset" and result.total == 1
    modes = [entry.search.mode for entry in result.entry]
    assert modes == ["match", "outcome"]
    assert result.entry[0].fullUrl == f"{BASE}/ImagingStudy/{UID}"
    outcome = result.entry[1].resource
    assert isinstance(outcome, OperationOutcome)
    [issue] = outcome.issue
    assert (issue.severity, issue.code) == ("warning", "incomplete")
    assert "hosp-c" in issue.details.text and "TIMEOUT" in issue.details.text
    assert "PA-001" not in issue.details.text


def test_a_complete_federation_has_no_outcome_entry() -> None:
    history = PatientHistory(
        complete=True,
        exams=(EXAM,),
        sources=(SourceOutcome(source=A, status=SourceStatus.OK, latency_ms=3, exam_count=1),),
    )
    assert incompleteness(history) == []
    result = Bundle.model_validate(bundle(BASE, BASE, [imaging_study(EXAM, SUBJECT)]))
    assert [entry.search.mode for entry in result.entry] == ["match"]


TEXT = Report(
    status=ReportStatus.AVAILABLE,
    text="Findings: none.\nImpression: normal.",
    author="House^Gregory",
    date=dt.date(2024, 1, 6),
    source=A,
    completion=ReportCompletion.COMPLETE,
    verification=ReportVerification.VERIFIED,
    verified_by="House^Gregory",
    verified_at=dt.datetime(2024, 1, 6, 12, 0),
)
PDF_REPORT = Report(
    status=ReportStatus.AVAILABLE, mime_type=PDF, url_path="/reports/abc", title="Report", source=C
)


@pytest.mark.parametrize("report", [TEXT, PDF_REPORT])
def test_a_report_is_an_included_diagnostic_report_pointing_back_to_its_study(report: Report) -> None:
    studies = [imaging_study(EXAM, SUBJECT)]
    included = [diagnostic_report(EXAM, report, SUBJECT, "http://pacsfed.test/")]
    result = Bundle.model_validate(bundle(BASE, BASE, studies, included=included))
    assert [entry.search.mode for entry in result.entry] == ["match", "include"]
    resource = result.entry[1].resource
    assert isinstance(resource, DiagnosticReport)
    assert [ref.reference for ref in resource.imagingStudy] == [f"ImagingStudy/{UID}"]
    assert resource.conclusion == report.text
    if report.url_path:
        [form] = resource.presentedForm
        assert (form.contentType, form.url) == (PDF, "http://pacsfed.test/reports/abc")
    else:
        assert resource.resultsInterpreter[0].display == "House Gregory"
        assert str(resource.effectiveDateTime) == "2024-01-06"


COMPLETE, PARTIAL = ReportCompletion.COMPLETE, ReportCompletion.PARTIAL
VERIFIED, UNVERIFIED = ReportVerification.VERIFIED, ReportVerification.UNVERIFIED


@pytest.mark.parametrize(
    ("completion", "verification", "status"),
    [
        (COMPLETE, VERIFIED, "final"),
        (COMPLETE, UNVERIFIED, "preliminary"),
        (PARTIAL, VERIFIED, "partial"),
        (PARTIAL, UNVERIFIED, "partial"),
        (PARTIAL, None, "partial"),
        (None, UNVERIFIED, "preliminary"),
        (None, None, "unknown"),  # a document, or an SR that does not say
        (COMPLETE, None, "unknown"),
        (None, VERIFIED, "unknown"),
    ],
)
def test_a_report_is_final_only_when_its_sr_says_complete_and_verified(
    completion: ReportCompletion | None, verification: ReportVerification | None, status: str
) -> None:
    report = TEXT.model_copy(update={"completion": completion, "verification": verification})
    assert diagnostic_report_status(report) == status
    resource = DiagnosticReport.model_validate(
        diagnostic_report(EXAM, report, SUBJECT, "http://pacsfed.test/")
    )
    assert resource.status == status


def test_a_pdf_report_has_no_flags_and_is_unknown_not_final() -> None:
    resource = DiagnosticReport.model_validate(diagnostic_report(EXAM, PDF_REPORT, SUBJECT, "http://x.test/"))
    assert resource.status == "unknown"


def test_a_report_a_source_failed_to_give_is_a_warning_without_patient_data() -> None:
    failed = Report(status=ReportStatus.ERROR, source=C, error="WADO-RS timed out")
    issue = report_issue(failed)
    assert issue is not None and issue["code"] == "incomplete"
    assert "hosp-c" in issue["details"]["text"]
    assert report_issue(Report(status=ReportStatus.NOT_FOUND)) is None


def test_a_report_warning_names_its_source_once() -> None:
    """The engine's report error starts with the source's id (``hosp-c: ...``): the outcome says it once."""
    failed = Report(status=ReportStatus.ERROR, source=C, error="hosp-c: SERIES-level C-FIND failed (0xC000)")
    issue = report_issue(failed)
    assert issue is not None
    text = issue["details"]["text"]
    assert text == "a report could not be read from source hosp-c: SERIES-level C-FIND failed (0xC000)"


@pytest.mark.parametrize("status", [ReportStatus.UNAVAILABLE, ReportStatus.BUSY])
def test_a_report_its_source_was_not_asked_for_is_a_warning_with_its_own_code(status: ReportStatus) -> None:
    issue = report_issue(Report(status=status, source=C, error="circuit open"))
    assert issue is not None and issue["code"] == "incomplete"
    assert issue["details"]["coding"][0]["code"] == f"REPORT_{status.value}"


def test_the_capability_statement_validates_and_declares_the_reads() -> None:
    statement = CapabilityStatement.model_validate(
        capability_statement(BASE, "0.1.0", {"patient.identifier": "[system|]value"})
    )
    interactions = {r.type: [i.code for i in r.interaction] for r in statement.rest[0].resource}
    assert interactions == {"ImagingStudy": ["read", "search-type"], "DiagnosticReport": ["read"]}


def test_every_full_url_of_a_study_or_report_is_readable_by_its_id() -> None:
    included = [diagnostic_report(EXAM, TEXT, SUBJECT, "http://pacsfed.test/")]
    result = bundle(BASE, BASE, [imaging_study(EXAM, SUBJECT)], included=included)
    for entry in result["entry"]:
        resource = entry["resource"]
        assert entry["fullUrl"] == f"{BASE}/{resource['resourceType']}/{resource['id']}"
        assert study_uid_of(resource["id"]) == UID  # the read asks the sources for this UID
    longest = "1." + "2" * 62  # a DICOM UID is at most 64 characters (PS3.5 9.1): always a FHIR id
    assert study_id(longest) == longest and study_uid_of(longest) == longest


@pytest.mark.parametrize("uid", ["1." + "2" * 70, "1.2.abc", "1.2.3-4"])
def test_a_uid_that_is_no_dicom_uid_gets_a_uuid_id_and_a_urn_full_url(uid: str) -> None:
    odd = Exam(study_instance_uid=uid, locations=(ExamLocation(source=A, patient_id="PA-001"),))
    resource = imaging_study(odd, SUBJECT)
    assert resource["id"] == study_id(uid) != uid and len(resource["id"]) == 36
    assert study_uid_of(resource["id"]) is None  # no address a read could answer: none is claimed
    [entry] = Bundle.model_validate(bundle(BASE, BASE, [resource])).entry
    assert entry.fullUrl == f"urn:uuid:{resource['id']}"


def test_a_study_whose_source_names_no_patient_still_validates() -> None:
    study = ImagingStudy.model_validate(imaging_study(EXAM, None))
    assert study.subject.identifier is None and study.subject.display
