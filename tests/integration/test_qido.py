"""QIDO-RS at /dicom-web against the three real hospitals (Orthanc A by DIMSE, dcmqrscp B, Orthanc C by QIDO)."""

from __future__ import annotations

from typing import Any

import pytest
from fakes import closed_port
from peers.dicomdata import CATALOGUE

from federation.settings import Settings, settings_from_mapping
from integration.gql import graphql, running_app

pytestmark = pytest.mark.integration

SHARED_CT = CATALOGUE.study("SHARED-CT")
A_MR = CATALOGUE.study("A-MR")
C_US = CATALOGUE.study("C-US")
DICOM_JSON = "application/dicom+json"
BASE = "http://pacsfed.test/dicom-web"
AUDIT = '{ auditEventsPage(patientId: "PA-001") { events { channel action outcome detail examCount } } }'


def _settings(sources: list[dict[str, Any]]) -> Settings:
    return settings_from_mapping({"cache": {"backend": "memory"}, "sources": sources})


def _value(item: dict[str, Any], tag: str) -> Any:
    values = item.get(tag, {}).get("Value", [None])
    return values[0] if len(values) == 1 else values


async def test_a_patients_studies_from_three_hospitals_in_dicom_json(
    peer_sources: list[dict[str, Any]],
) -> None:
    async with running_app(_settings(peer_sources)) as client:
        response = await client.get("/dicom-web/studies", params={"PatientID": "PA-001"})
        narrowed = await client.get(
            "/dicom-web/studies",
            params={
                "00100020": "PA-001",
                "StudyDate": "20230101-",
                "ModalitiesInStudy": "MR,US",
                "limit": "5",
            },
        )
        paged = await client.get(
            "/dicom-web/studies", params={"PatientID": "PA-001", "limit": 1, "offset": 1}
        )
        # dcmqrscp B gives no ModalitiesInStudy and ignores it as a key: its study's series tell
        mr = await client.get("/dicom-web/studies", params={"PatientID": "PA-002", "ModalitiesInStudy": "MR"})
        cr = await client.get("/dicom-web/studies", params={"PatientID": "PA-002", "ModalitiesInStudy": "CR"})
        cr_alone = await client.get(
            "/dicom-web/studies", params={"AccessionNumber": "ACC-2001", "ModalitiesInStudy": "CR"}
        )
        audit = await graphql(client, AUDIT)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith(DICOM_JSON)
    assert "warning" not in response.headers  # every hospital answered
    studies = {_value(item, "0020000D"): item for item in response.json()}
    assert list(studies) == [SHARED_CT.study_uid, A_MR.study_uid, C_US.study_uid]  # newest first
    shared = studies[SHARED_CT.study_uid]
    assert _value(shared, "00100020") == "PA-001"
    assert _value(shared, "00100010") == {"Alphabetic": "Müller^Anna"}
    assert (_value(shared, "00080020"), _value(shared, "00080030")) == ("20240105", "103000")
    assert (_value(shared, "00080050"), _value(shared, "00081030")) == ("ACC-1001", "CT THORAX")
    assert _value(shared, "00080061") == "CT"
    assert _value(shared, "00080080") == "Hôpital A, Ziekenhuis B"
    assert _value(shared, "00081190") == f"{BASE}/studies/{SHARED_CT.study_uid}"
    assert shared["00081190"]["vr"] == "UR"
    assert [_value(item, "0020000D") for item in narrowed.json()] == [A_MR.study_uid]
    assert [_value(item, "0020000D") for item in paged.json()] == [A_MR.study_uid]
    assert "more matches" in paged.headers["warning"]
    assert [_value(item, "0020000D") for item in mr.json()] == [CATALOGUE.study("C-MR").study_uid]
    assert [_value(item, "0020000D") for item in cr.json()] == [CATALOGUE.study("B-CR").study_uid]
    assert [_value(item, "00080061") for item in cr_alone.json()] == ["CR"]
    events = audit["data"]["auditEventsPage"]["events"]
    assert {
        "channel": "dicomweb",
        "action": "PATIENT_QUERY",
        "outcome": "SUCCESS",
        "detail": "study search",
        "examCount": 3,
    } in events


async def test_a_study_by_its_uid_its_series_and_instances_merged_across_hospitals(
    peer_sources: list[dict[str, Any]],
) -> None:
    uid = SHARED_CT.study_uid
    async with running_app(_settings(peer_sources)) as client:
        study = await client.get("/dicom-web/studies", params={"StudyInstanceUID": uid})
        series = await client.get(f"/dicom-web/studies/{uid}/series")
        by_key = await client.get("/dicom-web/series", params={"StudyInstanceUID": uid, "Modality": "MR"})
        instances = await client.get(f"/dicom-web/studies/{uid}/series/{SHARED_CT.series_uid(2)}/instances")
        whole = await client.get(f"/dicom-web/studies/{uid}/instances")
        narrowed = await client.get(
            f"/dicom-web/studies/{uid}/instances", params={"SeriesInstanceUID": SHARED_CT.series_uid(2)}
        )
    (found,) = study.json()
    assert _value(found, "00080080") == "Hôpital A, Ziekenhuis B"
    assert [_value(item, "0020000E") for item in series.json()] == [
        SHARED_CT.series_uid(1),
        SHARED_CT.series_uid(2),
    ]
    first = series.json()[0]
    assert (_value(first, "00080060"), _value(first, "00200011")) == ("CT", 1)
    assert _value(first, "00201209") == 2
    assert _value(first, "00081190") == f"{BASE}/studies/{uid}/series/{SHARED_CT.series_uid(1)}"
    assert by_key.json() == []
    assert [_value(item, "00080018") for item in instances.json()] == [
        SHARED_CT.sop_instance_uid(2, 1),
        SHARED_CT.sop_instance_uid(2, 2),
    ]
    assert _value(instances.json()[0], "00080016") == SHARED_CT.sop_class_uid
    assert _value(instances.json()[0], "00200013") == 1
    assert [(_value(item, "0020000E"), _value(item, "00080018")) for item in whole.json()] == [
        (SHARED_CT.series_uid(n), SHARED_CT.sop_instance_uid(n, i)) for n in (1, 2) for i in (1, 2)
    ]
    assert _value(whole.json()[0], "00081190") == (
        f"{BASE}/studies/{uid}/series/{SHARED_CT.series_uid(1)}/instances/{SHARED_CT.sop_instance_uid(1, 1)}"
    )
    assert narrowed.json() == instances.json()
    for answer in (study, series, instances, whole, narrowed):
        assert "warning" not in answer.headers, answer.headers["warning"]


async def test_a_name_search_keeps_each_hospitals_patient(peer_sources: list[dict[str, Any]]) -> None:
    async with running_app(_settings(peer_sources)) as client:
        response = await client.get("/dicom-web/studies", params={"PatientName": "Janssens*"})
    assert response.status_code == 200, response.text
    found = {(_value(item, "00100020"), _value(item, "00080080")) for item in response.json()}
    # Marie Janssens at A and at B, her namesake at B, Marie again at C: four patients as the hospitals know them
    assert found == {
        ("A123", "Hôpital A"),
        ("B-77", "Ziekenhuis B"),
        ("B-99", "Ziekenhuis B"),
        ("70031512345", "Clinique C"),
    }


async def test_failed_sources_are_named_in_warning_headers_and_bad_searches_refused(
    peer_sources: list[dict[str, Any]],
) -> None:
    dead = {
        "id": "hosp-dead",
        "name": "Dead",
        "kind": "dicomweb",
        "url": f"http://127.0.0.1:{closed_port()}/dicom-web",
    }
    async with running_app(_settings([*peer_sources, dead])) as client:
        partial = await client.get(
            "/dicom-web/studies",
            params={"PatientID": "PA-001", "fuzzymatching": "true", "StudyDescription": "CT*"},
        )
        everything = await client.get("/dicom-web/studies", params={"StudyDate": "20240101-"})
        wildcard = await client.get("/dicom-web/studies", params={"PatientID": "PA-*"})
        xml = await client.get(
            "/dicom-web/studies", params={"PatientID": "PA-001"}, headers={"accept": "application/xml"}
        )
        study_wide = await client.get(f"/dicom-web/studies/{SHARED_CT.study_uid}/instances")
    assert len(study_wide.json()) == 4  # what the live hospitals hold
    assert any("source hosp-dead UNREACHABLE" in w for w in study_wide.headers.get_list("warning"))
    assert partial.status_code == 200
    assert len(partial.json()) == 3
    warnings = partial.headers.get_list("warning")
    assert any(w.startswith(f'299 {BASE}: "source hosp-dead UNREACHABLE') for w in warnings), warnings
    assert any("fuzzymatching is not supported" in w for w in warnings), warnings
    assert any("StudyDescription is not a matching key" in w for w in warnings), warnings
    assert (everything.status_code, everything.json()["error"]["code"]) == (400, "BAD_QUERY")
    assert (wildcard.status_code, wildcard.json()["error"]["code"]) == (400, "BAD_PATIENT_INPUT")
    assert xml.status_code == 406
