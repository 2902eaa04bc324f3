"""FHIR read through the service door: the search's resource at its fullUrl, 404 and 503 told apart, access and audit."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
from fhir.resources.R4B.imagingstudy import ImagingStudy
from fhir.resources.R4B.operationoutcome import OperationOutcome
from starlette.responses import Response
from unit.test_access_service import ListAuditTrail, _user
from unit.test_search_service import Catalog, make, study

from federation.access.principals import AccessContext, Principal, PrincipalKind, ShareGrant
from federation.audit.records import AuditAction, AuditOutcome
from federation.errors import AccessError, SourceUnreachable
from federation.models import PatientQuery, SourceInfo, SourceOutcome, SourceStatus
from federation.service import HistoryRequest, HistoryService
from web.fhir.read import RETRY_AFTER_S, Reads
from web.fhir.resources import Identifier, imaging_study, study_id
from web.fhir.responses import failure

JAN = dt.date(2024, 1, 10)
UID, OTHER = "1.2.826.0.1.3680043.10.9.1", "1.2.826.0.1.3680043.10.9.2"
_FAR = dt.datetime(2999, 1, 1, tzinfo=dt.UTC)
READS = Reads({"HOSP_A": "urn:oid:1.2.3.4"}, {"a": "HOSP_A", "b": "HOSP_A"}, {"a": 30.0, "b": 45.0})


def fhir(*scopes: str, sources: set[str] | None = None) -> AccessContext:
    access = _user(*scopes, sources=sources)
    return AccessContext(access.principal, access.client_address, access.request_id, channel="fhir")


def shared(studies: frozenset[str] | None, patient: str = "P1") -> AccessContext:
    grant = ShareGrant("s1", PatientQuery(patient_id=patient), studies, expires_at=_FAR)
    principal = Principal("share:s1", PrincipalKind.SHARE, frozenset(), share=grant)
    return AccessContext(principal, None, "req-2", channel="fhir")


def body(response: Response) -> Any:
    return json.loads(bytes(response.body))


def two_sources(b_error: Exception | None = None) -> tuple[HistoryService, ListAuditTrail]:
    a = Catalog("a", [study(UID, "P1", JAN, description="CT THORAX"), study(OTHER, "P2", JAN)])
    b = Catalog("b", [study(UID, "P1", JAN)], error=b_error)
    return make(a, b)


async def test_a_read_answers_the_resource_the_search_gave_and_is_audited_as_a_study_search() -> None:
    service, audit = two_sources()
    history = await service.patient_history(
        PatientQuery(patient_id="P1"), fhir("history:read"), HistoryRequest()
    )
    [exam] = [e for e in history.exams if e.study_instance_uid == UID]
    searched = imaging_study(exam, Identifier("P1", "urn:oid:1.2.3.4"))  # a search by HOSP_A|P1
    del audit.records[:]
    response = await READS.study(service, fhir("history:read"), study_id(UID))
    assert response.status_code == 200
    read = body(response)
    assert read == searched
    assert ImagingStudy.model_validate(read).id == UID
    assert [(r.action, r.channel, r.outcome) for r in audit.records] == [
        (AuditAction.PATIENT_QUERY, "fhir", AuditOutcome.SUCCESS)
    ] * 2  # the access before any source is asked, the outcome after: as every search
    assert audit.records[0].detail == f"study search; study {UID}; access"
    assert audit.records[1].patient_ids == ["P1^^^"]


@pytest.mark.parametrize("resource_id", ["1.2.3.404", "not-a-uid", "0b5e9d4e-2f5b-5c9e-9a57-1f0e2c3d4b5a"])
async def test_an_id_no_source_holds_or_that_is_no_uid_is_a_404_not_found(resource_id: str) -> None:
    service, audit = two_sources()
    response = await READS.study(service, fhir("history:read"), resource_id)
    assert response.status_code == 404
    outcome = OperationOutcome.model_validate(body(response))
    assert (outcome.issue[0].code, outcome.issue[0].details.coding[0].code) == ("not-found", "NOT_FOUND")
    asked = resource_id == "1.2.3.404"
    assert bool(audit.records) is asked  # an id that names no study asks no source


async def test_an_unreachable_holder_is_a_503_naming_it_not_a_404() -> None:
    service, _ = two_sources(b_error=SourceUnreachable("connection refused"))
    missing = await READS.study(service, fhir("history:read"), "1.2.3.404")
    assert missing.status_code == 503
    assert missing.headers["retry-after"] == str(RETRY_AFTER_S)
    outcome = OperationOutcome.model_validate(body(missing))
    assert {issue.code for issue in outcome.issue} == {"transient"}
    assert any("source b" in i.details.text and "UNREACHABLE" in i.details.text for i in outcome.issue)
    assert "P1" not in json.dumps(body(missing))
    found = await READS.study(service, fhir("history:read"), UID)  # held by a, which answered
    assert found.status_code == 200 and body(found)["id"] == UID


def test_an_open_circuit_makes_retry_after_its_reset() -> None:
    b = SourceInfo(id="b", name="B", kind="dimse")
    response = READS._unanswered([SourceOutcome(source=b, status=SourceStatus.SKIPPED, latency_ms=0)])
    assert (response.status_code, response.headers["retry-after"]) == (503, "45")


async def test_share_codes_read_only_their_studies() -> None:
    service, audit = two_sources()
    with pytest.raises(AccessError) as refused:
        await READS.study(service, shared(frozenset({OTHER})), UID)
    assert failure(refused.value).status_code == 403  # as QIDO-RS and WADO-RS refuse it
    assert audit.records[-1].outcome is AuditOutcome.DENIED
    assert (await READS.study(service, shared(frozenset({UID})), UID)).status_code == 200
    assert (
        await READS.study(service, shared(None), UID)
    ).status_code == 200  # a whole history: its patient's
    assert (await READS.study(service, shared(None), OTHER)).status_code == 404  # another patient's study


async def test_callers_are_held_to_their_scopes_sources_and_windows() -> None:
    service, _ = two_sources()
    with pytest.raises(AccessError):
        await READS.study(service, fhir("audit:read"), UID)
    only_b = await READS.study(service, fhir("history:read", sources={"b"}), OTHER)
    assert only_b.status_code == 404  # OTHER is held by a only
    glass = await READS.study(service, fhir("history:emergency"), UID)
    assert glass.status_code == 404  # no break-the-glass window open for its patient


async def test_a_report_read_of_a_study_without_one_is_a_404() -> None:
    service, _ = two_sources()
    response = await READS.report(service, fhir("history:read"), UID, "http://pacsfed.test/")
    assert response.status_code == 404  # these sources read no reports (UNSUPPORTED)
    assert body(response)["issue"][0]["code"] == "not-found"
