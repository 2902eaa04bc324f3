"""End to end: GraphQL → engine → real Orthanc (DIMSE and DICOMweb) and dcmqrscp → Elasticsearch."""

from __future__ import annotations

import time
from typing import Any

import pytest
from fakes import SilentListener, StaticHttpServer, closed_port
from peers.dicomdata import CATALOGUE, DCMQRSCP_B, ORTHANC_A, ORTHANC_C

from integration.gql import history, running_app, statuses

pytestmark = pytest.mark.integration

SHARED_CT = CATALOGUE.study("SHARED-CT").study_uid
A_MR = CATALOGUE.study("A-MR").study_uid
C_US = CATALOGUE.study("C-US").study_uid


async def test_contract_query_merges_the_shared_study(
    peer_sources: list[dict[str, Any]], make_settings: Any
) -> None:
    async with running_app(make_settings(peer_sources)) as client:
        result = await history(client, "PA-001", deadlineMs=5000)
    assert result["complete"] is True
    assert statuses(result) == {"hosp-a": "OK", "hosp-b": "OK", "hosp-c": "OK"}
    exams = result["exams"]
    # Newest first, one per StudyInstanceUID.
    assert [e["studyInstanceUid"] for e in exams] == [SHARED_CT, A_MR, C_US]
    shared = exams[0]
    assert shared["studyDate"] == "2024-01-05"
    assert shared["studyTime"].startswith("10:30:00")
    assert shared["patientName"] == "Müller^Anna"
    assert shared["modalities"] == ["CT"]
    assert shared["description"] == "CT THORAX"
    assert shared["accessionNumber"] == "ACC-1001"
    # dcmqrscp does not return the counts; Orthanc does, and the merge keeps them.
    assert (shared["numberOfSeries"], shared["numberOfInstances"]) == (2, 4)
    locations = {loc["source"]["id"]: loc for loc in shared["locations"]}
    assert set(locations) == {"hosp-a", "hosp-b"}
    assert locations["hosp-a"]["source"]["name"] == "Hôpital A"
    assert locations["hosp-a"]["retrieveAeTitle"] == "HOSPA"
    assert locations["hosp-b"]["patientId"] == "PA-001"
    [us] = [e for e in exams if e["studyInstanceUid"] == C_US]
    [web] = us["locations"]
    assert web["source"]["id"] == "hosp-c"
    assert web["retrieveUrl"].endswith(f"/studies/{C_US}")
    assert {s["source"]["id"]: s["examCount"] for s in result["sources"]} == {
        "hosp-a": 2,
        "hosp-b": 1,
        "hosp-c": 1,
    }


@pytest.mark.parametrize("query_charset", ["ISO_IR 192", None])
@pytest.mark.parametrize(
    ("patient_id", "name"),
    [("PA-001", "Müller^Anna"), ("PA-002", "Dupré^Élodie"), ("PA-003", "Østergård^Søren")],
)
async def test_accented_names_decode_from_every_peer(
    peer_sources: list[dict[str, Any]],
    make_settings: Any,
    query_charset: str | None,
    patient_id: str,
    name: str,
) -> None:
    # PA-001 and PA-003 are stored in ISO_IR 100, PA-002 in ISO_IR 192; with no charset in the
    # query dcmqrscp answers in the stored one, with ISO_IR 192 it converts.
    sources = [{**s, "query_charset": query_charset} if s["kind"] == "dimse" else s for s in peer_sources]
    async with running_app(make_settings(sources)) as client:
        result = await history(client, patient_id)
    assert result["complete"]
    expected_uids = CATALOGUE.study_uids(patient_id=patient_id)
    assert {e["studyInstanceUid"] for e in result["exams"]} == expected_uids
    assert {e["patientName"] for e in result["exams"]} == {name}
    assert all(not s["warnings"] for s in result["sources"])


@pytest.mark.parametrize("kind", ["dimse", "dicomweb"])
async def test_silent_source_times_out_and_the_others_answer(
    peer_sources: list[dict[str, Any]], make_settings: Any, kind: str
) -> None:
    with SilentListener() as silent:
        if kind == "dimse":
            hung = {
                "id": "hung",
                "kind": "dimse",
                "host": "127.0.0.1",
                "port": silent.port,
                "called_ae": "HUNG",
            }
        else:
            hung = {"id": "hung", "kind": "dicomweb", "url": f"http://127.0.0.1:{silent.port}/dicom-web"}
        async with running_app(make_settings([*peer_sources, hung])) as client:
            started = time.monotonic()
            # Roomy enough for real peers under CI load (one took over a second once).
            result = await history(client, "PA-001", deadlineMs=2500)
            elapsed = time.monotonic() - started
    assert elapsed < 2.5 + 0.5, f"answered after {elapsed:.2f} s"
    assert statuses(result) == {"hosp-a": "OK", "hosp-b": "OK", "hosp-c": "OK", "hung": "TIMEOUT"}
    assert result["complete"] is False
    assert {e["studyInstanceUid"] for e in result["exams"]} == {SHARED_CT, A_MR, C_US}


@pytest.mark.parametrize("kind", ["dimse", "dicomweb"])
async def test_closed_port_is_unreachable(
    peer_sources: list[dict[str, Any]], make_settings: Any, kind: str
) -> None:
    port = closed_port()
    if kind == "dimse":
        dead = {"id": "dead", "kind": "dimse", "host": "127.0.0.1", "port": port, "called_ae": "DEAD"}
    else:
        dead = {"id": "dead", "kind": "dicomweb", "url": f"http://127.0.0.1:{port}/dicom-web"}
    async with running_app(make_settings([*peer_sources, dead])) as client:
        started = time.monotonic()
        result = await history(client, "PA-001", deadlineMs=5000)
        elapsed = time.monotonic() - started
    assert statuses(result)["dead"] == "UNREACHABLE"
    assert elapsed < 2.5, "a refused connection must not wait for the deadline"
    assert len(result["exams"]) == 3


async def test_malformed_json_is_an_error_not_a_crash(
    peer_sources: list[dict[str, Any]], make_settings: Any
) -> None:
    with StaticHttpServer(b'[{"0020000D": {"vr": "UI", "Value": ["1.2') as broken:
        bad = {"id": "broken", "kind": "dicomweb", "url": f"http://127.0.0.1:{broken.port}/dicom-web"}
        async with running_app(make_settings([*peer_sources, bad])) as client:
            result = await history(client, "PA-001")
    outcome = next(s for s in result["sources"] if s["source"]["id"] == "broken")
    assert outcome["status"] == "ERROR"
    assert "JSON" in outcome["error"]
    assert len(result["exams"]) == 3


async def test_unregistered_calling_ae_is_reported(orthanc_a: Any, make_settings: Any) -> None:
    # Orthanc answers C-FIND only from AEs in DicomModalities: a real-world misconfiguration.
    stranger = {
        "id": "stranger",
        "kind": "dimse",
        "host": orthanc_a.host,
        "port": orthanc_a.dicom_port,
        "called_ae": orthanc_a.aet,
        "calling_ae": "STRANGER",
    }
    async with running_app(make_settings([stranger])) as client:
        result = await history(client, "PA-001")
    [outcome] = result["sources"]
    assert outcome["status"] in ("ERROR", "UNREACHABLE")
    assert "STRANGER" in outcome["error"]
    assert result["exams"] == []


async def test_a_peer_stopped_between_queries_is_reported(
    peer_sources: list[dict[str, Any]], make_settings: Any, dcmqrscp_b: Any
) -> None:
    async with running_app(make_settings(peer_sources)) as client:
        before = await history(client, "PA-001")
        assert statuses(before)["hosp-b"] == "OK"
        dcmqrscp_b.stop()
        try:
            after = await history(client, "PA-001", freshness="LIVE")
        finally:
            dcmqrscp_b.start()
        again = await history(client, "PA-001", freshness="LIVE")
    assert statuses(after) == {"hosp-a": "OK", "hosp-b": "UNREACHABLE", "hosp-c": "OK"}
    assert after["complete"] is False
    # The shared study is still listed, now only at hospital A.
    shared = next(e for e in after["exams"] if e["studyInstanceUid"] == SHARED_CT)
    assert [loc["source"]["id"] for loc in shared["locations"]] == ["hosp-a"]
    assert statuses(again)["hosp-b"] == "OK"


async def test_restricting_the_fan_out(peer_sources: list[dict[str, Any]], make_settings: Any) -> None:
    async with running_app(make_settings(peer_sources)) as client:
        result = await history(client, "PA-001", sources=["hosp-c"])
    assert statuses(result) == {"hosp-c": "OK"}
    assert [e["studyInstanceUid"] for e in result["exams"]] == [C_US]


def test_catalogue_matches_the_peers() -> None:
    """The seed catalogue says what each peer holds; the assertions above rely on it."""
    assert CATALOGUE.study_uids(peer=ORTHANC_A, patient_id="PA-001") == {SHARED_CT, A_MR}
    assert CATALOGUE.study_uids(peer=DCMQRSCP_B, patient_id="PA-001") == {SHARED_CT}
    assert CATALOGUE.study_uids(peer=ORTHANC_C, patient_id="PA-001") == {C_US}
