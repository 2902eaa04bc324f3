"""The FHIR view against real peers: ImagingStudy from Orthanc (DIMSE and DICOMweb) and dcmqrscp, R4-valid."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fakes import closed_port
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.imagingstudy import ImagingStudy
from fhir.resources.R4B.operationoutcome import OperationOutcome
from peers.dicomdata import CATALOGUE

from federation.settings import Settings, settings_from_mapping
from integration.gql import graphql, running_app

pytestmark = pytest.mark.integration

SHARED_CT = CATALOGUE.study("SHARED-CT")
A_MR = CATALOGUE.study("A-MR")
C_US = CATALOGUE.study("C-US")
AUDIT = '{ auditEventsPage(patientId: "PA-001") { events { channel action outcome examCount } } }'


def _settings(sources: list[dict[str, Any]]) -> Settings:
    return settings_from_mapping(
        {
            "cache": {"backend": "memory"},
            "sources": sources,
            "identity": {"issuer_systems": {"HOSP_A": "urn:oid:1.2.3.4"}},
        }
    )


def _studies(bundle: Bundle) -> dict[str, ImagingStudy]:
    found: dict[str, ImagingStudy] = {}
    for entry in bundle.entry or []:
        if entry.search.mode == "match":
            assert isinstance(entry.resource, ImagingStudy)
            found[entry.resource.id] = entry.resource
    return found


async def test_a_patients_studies_come_back_as_an_r4_searchset_with_wado_rs_endpoints_and_are_audited(
    peer_sources: list[dict[str, Any]], orthanc_c: Any
) -> None:
    async with running_app(_settings(peer_sources)) as client:
        response = await client.get(
            "/fhir/ImagingStudy",
            params={"patient.identifier": "PA-001"},
            headers={"accept": "application/fhir+json"},
        )
        audit = await graphql(client, AUDIT)
    assert response.status_code == 200, response.text
    bundle = Bundle.model_validate_json(response.content)
    assert (bundle.type, bundle.total) == ("searchset", 3)
    assert [entry.search.mode for entry in bundle.entry] == ["match"] * 3  # complete: no outcome entry
    studies = _studies(bundle)
    assert list(studies) == [SHARED_CT.study_uid, A_MR.study_uid, C_US.study_uid]  # newest first
    shared = studies[SHARED_CT.study_uid]
    assert {(i.system, i.value) for i in shared.identifier} == {
        ("urn:dicom:uid", f"urn:oid:{SHARED_CT.study_uid}"),
        (None, "ACC-1001"),
    }
    assert [m.code for m in shared.modality] == ["CT"]
    assert (str(shared.started), shared.description) == ("2024-01-05", "CT THORAX")
    assert (shared.numberOfSeries, shared.numberOfInstances) == (2, 4)
    assert shared.subject.identifier.value == "PA-001"
    assert shared.endpoint is None  # held by DIMSE sources only: no WADO-RS base known
    us = studies[C_US.study_uid]
    [endpoint] = us.contained
    assert endpoint.connectionType.code == "dicom-wado-rs"
    assert endpoint.address.rstrip("/").endswith("/dicom-web")
    assert [ref.reference for ref in us.endpoint] == [f"#{endpoint.id}"]
    events = audit["data"]["auditEventsPage"]["events"]
    assert {"channel": "fhir", "action": "PATIENT_QUERY", "outcome": "SUCCESS", "examCount": 3} in events


async def test_a_source_that_does_not_answer_is_named_in_an_outcome_entry(
    peer_sources: list[dict[str, Any]],
) -> None:
    dead = {"id": "hosp-x", "name": "Dead", "kind": "dicomweb", "url": f"http://127.0.0.1:{closed_port()}/dw"}
    async with running_app(_settings([*peer_sources, dead])) as client:
        response = await client.get(
            "/fhir/ImagingStudy", params={"patient.identifier": "PA-001", "_format": "json"}
        )
    assert response.status_code == 200, response.text
    bundle = Bundle.model_validate_json(response.content)
    assert bundle.total == 3
    [outcome] = [entry for entry in bundle.entry if entry.search.mode == "outcome"]
    assert isinstance(outcome.resource, OperationOutcome)
    [issue] = outcome.resource.issue
    assert (issue.severity, issue.code) == ("warning", "incomplete")
    assert "hosp-x" in issue.details.text and "UNREACHABLE" in issue.details.text
    assert "PA-001" not in outcome.resource.model_dump_json()


async def test_a_mapped_system_asks_with_its_issuer(peer_sources: list[dict[str, Any]]) -> None:
    async with running_app(_settings(peer_sources)) as client:
        mapped = await client.get(
            "/fhir/ImagingStudy", params={"patient.identifier": "urn:oid:1.2.3.4|PA-001"}
        )
        by_name = await client.get("/fhir/ImagingStudy", params={"patient.identifier": "HOSP_A|PA-001"})
    assert mapped.status_code == by_name.status_code == 200
    first, second = Bundle.model_validate_json(mapped.content), Bundle.model_validate_json(by_name.content)
    assert set(_studies(first)) == set(_studies(second))
    assert SHARED_CT.study_uid in _studies(first)
    subject = _studies(first)[SHARED_CT.study_uid].subject.identifier
    assert (subject.system, subject.value) == ("urn:oid:1.2.3.4", "PA-001")


async def test_each_entry_is_read_back_at_its_full_url_and_the_read_is_audited(
    peer_sources: list[dict[str, Any]],
) -> None:
    async with running_app(_settings(peer_sources)) as client:
        searched = await client.get("/fhir/ImagingStudy", params={"patient.identifier": "PA-001"})
        entries = [entry for entry in searched.json()["entry"] if entry["search"]["mode"] == "match"]
        reads = [await client.get(httpx.URL(entry["fullUrl"]).path) for entry in entries]
        missing = await client.get("/fhir/ImagingStudy/1.2.3.404")
        audit = await graphql(client, AUDIT)
    assert len(entries) == 3
    for entry, read in zip(entries, reads, strict=True):
        assert read.status_code == 200, read.text
        resource = ImagingStudy.model_validate_json(read.content)
        # The same resource; its subject is the holding source's id of the patient (a read names none).
        assert read.json() | {"subject": None} == entry["resource"] | {"subject": None}
        assert resource.subject.identifier.value
    not_found = OperationOutcome.model_validate_json(missing.content)
    assert (missing.status_code, not_found.issue[0].code) == (404, "not-found")
    events = audit["data"]["auditEventsPage"]["events"]
    assert {"channel": "fhir", "action": "PATIENT_QUERY", "outcome": "SUCCESS", "examCount": 1} in events


async def test_a_read_not_found_while_a_source_did_not_answer_is_a_503_naming_it(
    peer_sources: list[dict[str, Any]],
) -> None:
    dead = {"id": "hosp-x", "name": "Dead", "kind": "dicomweb", "url": f"http://127.0.0.1:{closed_port()}/dw"}
    async with running_app(_settings([*peer_sources, dead])) as client:
        missing = await client.get("/fhir/ImagingStudy/1.2.3.404")
        found = await client.get(f"/fhir/ImagingStudy/{A_MR.study_uid}")
    assert missing.status_code == 503, missing.text
    assert missing.headers["retry-after"].isdigit()
    outcome = OperationOutcome.model_validate_json(missing.content)
    assert any("hosp-x" in i.details.text and "UNREACHABLE" in i.details.text for i in outcome.issue)
    assert found.status_code == 200 and found.json()["id"] == A_MR.study_uid
