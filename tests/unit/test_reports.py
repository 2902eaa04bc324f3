"""Exam reports through the service and GraphQL: laziness, statuses, the first location wins, audit, links."""

from __future__ import annotations

import asyncio
import datetime as dt
import types
from typing import Any

import pytest
from unit.test_access_service import ListAuditTrail, _user
from unit.test_engine import Scripted

from federation.access.principals import AccessContext, Principal, PrincipalKind, ShareGrant
from federation.access.share import MemoryShareStore, ShareCodes
from federation.audit.records import AuditAction, AuditOutcome
from federation.engine.engine import FederationEngine
from federation.engine.request import HistoryRequest
from federation.errors import AccessError, AuditUnavailable, SourceUnreachable
from federation.models import Deadline, PatientQuery
from federation.reports import (
    PDF,
    ReportAnswer,
    ReportCompletion,
    ReportDocument,
    ReportInstance,
    ReportStatus,
    ReportVerification,
    StudyRef,
)
from federation.service import HistoryService
from federation.settings import ReportSettings
from federation.settings_security import ShareSettings
from schema import build_schema

PATIENT = PatientQuery(patient_id="PA-001")
DOCUMENT = ReportInstance(series_instance_uid="1.2.3.91", sop_instance_uid="1.2.3.91.1")


class Reporting(Scripted):
    """A scripted source that also gives reports: ``reports`` by study UID, or ``report_error``."""

    supports_reports = True

    def __init__(
        self,
        source_id: str,
        uids: list[str],
        reports: dict[str, ReportAnswer] | None = None,
        report_error: Exception | None = None,
        report_delay: float = 0.0,
    ) -> None:
        super().__init__(source_id, uids=uids)
        self.reports = reports or {}
        self.report_error = report_error
        self.report_delay = report_delay
        self.asked: list[str] = []

    async def fetch_report(self, study: StudyRef, deadline: Deadline) -> ReportAnswer:
        self.asked.append(study.study_instance_uid)
        await asyncio.sleep(self.report_delay)
        if self.report_error is not None:
            raise self.report_error
        return self.reports.get(study.study_instance_uid, ReportAnswer(status=ReportStatus.NOT_FOUND))

    async def fetch_report_document(
        self, study: StudyRef, document: ReportInstance, deadline: Deadline
    ) -> ReportDocument:
        assert document == DOCUMENT
        return ReportDocument(mime_type=PDF, content=b"%PDF-1.4 " + study.study_instance_uid.encode())


def _text(author: str) -> ReportAnswer:
    return ReportAnswer(status=ReportStatus.AVAILABLE, text=f"Findings\n  by {author}", author=author)


PDF_ANSWER = ReportAnswer(
    status=ReportStatus.AVAILABLE, mime_type=PDF, document=DOCUMENT, date=dt.date(2024, 2, 11)
)


def _service(audit: ListAuditTrail, *connectors: Scripted, deadline_ms: int = 10_000) -> HistoryService:
    engine = FederationEngine(list(connectors), None)
    shares = ShareCodes(ShareSettings(), MemoryShareStore())
    return HistoryService(
        engine,
        audit,
        shares,
        emergency_window_s=3600,
        national_issuer="NISS",
        reports=ReportSettings(deadline_ms=deadline_ms),
    )


async def _reports(service: HistoryService, access: AccessContext | None = None) -> dict[str, Any]:
    access = access or _user("history:read")
    history = await service.patient_history(PATIENT, access)
    return {exam.study_instance_uid: await service.exam_report(exam, access) for exam in history.exams}


def _reads(audit: ListAuditTrail) -> list[Any]:
    return [r for r in audit.records if r.action is AuditAction.REPORT_READ]


async def test_the_first_location_in_configuration_order_that_has_a_report_gives_it() -> None:
    audit = ListAuditTrail()
    a = Reporting("hosp-a", ["1.1", "1.2", "1.3"], {"1.2": _text("A^A")})
    b = Reporting("hosp-b", ["1.1", "1.2", "1.3"], {"1.1": _text("B^B"), "1.2": _text("B^B")})
    reports = await _reports(_service(audit, a, b))
    assert (reports["1.1"].status, reports["1.1"].author, reports["1.1"].source.id) == (
        "AVAILABLE",
        "B^B",
        "hosp-b",
    )
    assert (reports["1.2"].author, reports["1.2"].source.id) == ("A^A", "hosp-a")
    assert (reports["1.3"].status, reports["1.3"].text, reports["1.3"].url_path) == ("NOT_FOUND", None, None)


async def test_a_source_without_the_capability_is_not_asked_and_alone_it_is_unsupported() -> None:
    audit = ListAuditTrail()
    plain = Scripted("plain", uids=["1.1", "1.2"])
    reporting = Reporting("rep", ["1.2"], {"1.2": _text("R^R")})
    reports = await _reports(_service(audit, plain, reporting))
    assert reports["1.1"].status is ReportStatus.UNSUPPORTED
    assert "scripted" in reports["1.1"].error
    assert (reports["1.2"].status, reports["1.2"].source.id) == ("AVAILABLE", "rep")


async def test_a_failing_or_late_source_is_an_error_without_patient_data_unless_another_has_it() -> None:
    audit = ListAuditTrail()
    broken = Reporting("broken", ["1.1", "1.2"], report_error=SourceUnreachable("connection refused"))
    late = Reporting("late", ["1.1"], {"1.1": _text("L^L")}, report_delay=30)
    later = Reporting("later", ["1.2"], {"1.2": _text("Z^Z")})
    service = _service(audit, broken, late, later, deadline_ms=300)
    reports = await _reports(service)
    assert (reports["1.1"].status, reports["1.1"].error) == ("ERROR", "broken: connection refused")
    assert (reports["1.2"].status, reports["1.2"].source.id) == ("AVAILABLE", "later")
    outcomes = [r for r in _reads(audit) if r.detail.startswith("report ")]
    assert {(r.detail.split(";")[0], r.outcome) for r in outcomes} == {
        ("report ERROR", AuditOutcome.FAILURE),
        ("report AVAILABLE", AuditOutcome.SUCCESS),
    }


async def test_reading_is_authorized_and_audited_before_any_source_is_asked() -> None:
    audit = ListAuditTrail()
    source = Reporting("hosp-a", ["1.1"], {"1.1": _text("A^A")})
    service = _service(audit, source)
    (exam,) = (await service.patient_history(PATIENT, _user("history:read"))).exams
    audit.records.clear()
    with pytest.raises(AccessError):
        await service.exam_report(exam, _user("share:create"))
    (denied,) = _reads(audit)
    assert (denied.outcome, denied.patient_ids, denied.detail) == (
        AuditOutcome.DENIED,
        ["PA-001^^^"],
        "FORBIDDEN; study 1.1",
    )
    assert source.asked == []
    audit.broken = True
    with pytest.raises(AuditUnavailable):
        await service.exam_report(exam, _user("history:read"))
    assert source.asked == []  # the access could not be recorded: no source was asked
    audit.broken = False
    await service.exam_report(exam, _user("history:read", subject="user:rita"))
    access, outcome = _reads(audit)[-2:]
    assert (access.actor, access.outcome, access.detail, access.sources) == (
        "user:rita",
        AuditOutcome.SUCCESS,
        "access; study 1.1",
        ["hosp-a"],
    )
    assert (outcome.detail, outcome.patient_ids) == ("report AVAILABLE; study 1.1", ["PA-001^^^"])


async def test_a_share_reads_only_its_studies_and_a_source_rule_limits_the_locations() -> None:
    audit = ListAuditTrail()
    a = Reporting("hosp-a", ["1.1", "1.2"], {"1.1": _text("A^A"), "1.2": _text("A^A")})
    b = Reporting("hosp-b", ["1.1"], {"1.1": _text("B^B")})
    service = _service(audit, a, b)
    exams = {
        e.study_instance_uid: e for e in (await service.patient_history(PATIENT, _user("history:read"))).exams
    }
    grant = ShareGrant("s1", PATIENT, frozenset({"1.1"}), dt.datetime.now(dt.UTC) + dt.timedelta(hours=1))
    share = AccessContext(Principal("share:s1", PrincipalKind.SHARE, frozenset(), share=grant))
    assert (await service.exam_report(exams["1.1"], share)).status is ReportStatus.AVAILABLE
    with pytest.raises(AccessError):
        await service.exam_report(exams["1.2"], share)
    only_b = _user("history:read", sources={"hosp-b"})
    assert (await service.exam_report(exams["1.1"], only_b)).source.id == "hosp-b"
    with pytest.raises(AccessError):
        await service.exam_report(exams["1.2"], only_b)


async def test_a_document_report_opens_through_a_link_for_its_caller_only() -> None:
    audit = ListAuditTrail()
    service = _service(audit, Reporting("hosp-a", ["1.9"], {"1.9": PDF_ANSWER}))
    rita = _user("history:read", subject="user:rita")
    report = (await _reports(service, rita))["1.9"]
    assert (report.status, report.mime_type, report.text) == ("AVAILABLE", PDF, None)
    link = report.url_path.removeprefix("/reports/")
    assert report.url_path.startswith("/reports/") and len(link) >= 40
    assert "1.9" not in link and "PA-001" not in link
    assert report.url_expires_at <= dt.datetime.now(dt.UTC) + dt.timedelta(seconds=900)
    document = await service.report_document(link, rita)
    assert (document.mime_type, document.content) == (PDF, b"%PDF-1.4 1.9")
    with pytest.raises(AccessError) as other:
        await service.report_document(link, _user("history:read", subject="user:mallory"))
    assert other.value.status == 403
    with pytest.raises(AccessError) as unknown:
        await service.report_document("nope", rita)
    assert unknown.value.status == 404
    details = [(r.actor, r.outcome, r.detail) for r in _reads(audit)]
    assert ("user:rita", AuditOutcome.SUCCESS, "document; study 1.9") in details
    assert ("user:mallory", AuditOutcome.DENIED, "not its caller; study 1.9") in details
    assert ("user:rita", AuditOutcome.DENIED, "report link unknown or expired") in details


REPORT_FIELDS = "report { status text author date mimeType url source { id } error }"


async def _graphql(service: HistoryService, selection: str) -> dict[str, Any]:
    query = f'{{ patientHistory(patient: {{id: "PA-001"}}) {{ exams {{ studyInstanceUid {selection} }} }} }}'
    request = types.SimpleNamespace(
        app=types.SimpleNamespace(
            state=types.SimpleNamespace(services=types.SimpleNamespace(history=service))
        ),
        base_url="http://pacsfed.test/",
        state=types.SimpleNamespace(),
    )
    context = {"engine": service.engine, "request": request, "access": _user("history:read")}
    result = await build_schema().execute_async(query, context_value=context)
    assert result.errors is None, result.errors
    return {e["studyInstanceUid"]: e.get("report") for e in result.data["patientHistory"]["exams"]}


async def test_graphql_asks_for_reports_only_when_the_field_is_selected() -> None:
    audit = ListAuditTrail()
    a = Reporting("hosp-a", ["1.1", "1.9"], {"1.1": _text("A^A"), "1.9": PDF_ANSWER})
    service = _service(audit, a)
    assert await _graphql(service, "") == {"1.1": None, "1.9": None}
    assert a.asked == []
    assert _reads(audit) == []
    reports = await _graphql(service, REPORT_FIELDS)
    assert sorted(a.asked) == ["1.1", "1.9"]
    assert reports["1.1"] == {
        "status": "AVAILABLE",
        "text": "Findings\n  by A^A",
        "author": "A^A",
        "date": None,
        "mimeType": None,
        "url": None,
        "source": {"id": "hosp-a"},
        "error": None,
    }
    assert reports["1.9"]["mimeType"] == PDF
    assert reports["1.9"]["url"].startswith("http://pacsfed.test/reports/")
    assert len(_reads(audit)) == 4  # access and outcome, per exam


STATUS_FIELDS = "report { status completion verification verifiedBy verifiedAt }"


async def test_graphql_says_whether_a_report_is_complete_and_verified_and_by_whom() -> None:
    verified = _text("A^A").model_copy(
        update={
            "completion": ReportCompletion.COMPLETE,
            "verification": ReportVerification.VERIFIED,
            "verified_by": "A^A",
            "verified_at": dt.datetime(2024, 1, 6, 12, 30),
        }
    )
    preliminary = _text("B^B").model_copy(
        update={"completion": ReportCompletion.COMPLETE, "verification": ReportVerification.UNVERIFIED}
    )
    partial = _text("C^C").model_copy(
        update={"completion": ReportCompletion.PARTIAL, "verification": ReportVerification.UNVERIFIED}
    )
    a = Reporting(
        "hosp-a",
        ["1.1", "1.2", "1.3", "1.9"],
        {"1.1": verified, "1.2": preliminary, "1.3": partial, "1.9": PDF_ANSWER},
    )
    reports = await _graphql(_service(ListAuditTrail(), a), STATUS_FIELDS)
    assert reports == {
        "1.1": {
            "status": "AVAILABLE",
            "completion": "COMPLETE",
            "verification": "VERIFIED",
            "verifiedBy": "A^A",
            "verifiedAt": "2024-01-06T12:30:00",
        },
        "1.2": {
            "status": "AVAILABLE",
            "completion": "COMPLETE",
            "verification": "UNVERIFIED",
            "verifiedBy": None,
            "verifiedAt": None,
        },
        "1.3": {
            "status": "AVAILABLE",
            "completion": "PARTIAL",
            "verification": "UNVERIFIED",
            "verifiedBy": None,
            "verifiedAt": None,
        },
        "1.9": {
            "status": "AVAILABLE",
            "completion": None,
            "verification": None,
            "verifiedBy": None,
            "verifiedAt": None,
        },
    }


async def test_break_the_glass_reads_a_report_only_within_an_open_window_and_is_flagged() -> None:
    audit = ListAuditTrail()
    service = _service(audit, Reporting("hosp-a", ["1.1"], {"1.1": _text("A^A")}))
    (exam,) = (await service.patient_history(PATIENT, _user("history:read"))).exams
    emergency = _user("history:emergency", subject="user:er")
    with pytest.raises(AccessError) as refused:
        await service.exam_report(exam, emergency)
    assert refused.value.code == "REASON_REQUIRED"
    await service.patient_history(
        PATIENT, emergency, HistoryRequest(reason="unconscious patient, trauma bay")
    )
    report = await service.exam_report(exam, emergency)
    assert report.status is ReportStatus.AVAILABLE
    flagged = [r for r in _reads(audit) if r.outcome is AuditOutcome.SUCCESS]
    assert flagged
    assert all(r.emergency and r.reason == "unconscious patient, trauma bay" for r in flagged)
