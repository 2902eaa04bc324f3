"""One patient, many hospitals: cross-referenced identifiers and demographic candidates, on real peers.

Marie Janssens is A123 at Orthanc A (issuer HOSP_A), B-77 at dcmqrscp B (HOSP_B), and known by
her national number at the DICOMweb Orthanc C, which keeps it in PatientID. A namesake born
another day is B-99 at dcmqrscp B: she must never reach the exams.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from peers.dicomdata import CATALOGUE

from integration.gql import graphql, running_app

pytestmark = pytest.mark.integration

NATIONAL = "70031512345"
X_A = CATALOGUE.study("X-A-CT").study_uid
X_B = CATALOGUE.study("X-B-MR").study_uid
X_C = CATALOGUE.study("X-C-US").study_uid
NAMESAKE = CATALOGUE.study("N-B-CR").study_uid

LINKS = [
    {"person": "p-janssens", "issuer": "HOSP_A", "patientId": "A123"},
    {"person": "p-janssens", "issuer": "HOSP_B", "patientId": "B-77"},
    {"person": "p-janssens", "issuer": "NISS", "patientId": NATIONAL},
]
ADD_LINKS = "mutation($links: [IdentityLinkInput!]!) { addIdentityLinks(links: $links) { added } }"
HISTORY = """
query($patient: PatientInput!, $candidates: Boolean) {
  patientHistory(patient: $patient, includeCandidates: $candidates, deadlineMs: 8000) {
    complete warnings
    exams { studyInstanceUid patientName locations { source { id } patientId matchedBy { kind issuer value } } }
    sources { source { id } status error warnings }
    candidates { score reasons patientName birthDate source { id } patientId exams { studyInstanceUid } }
  }
}
"""


@pytest.fixture
def identity_sources(peer_sources: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The three hospitals, each with its identifier domain; C keeps the national number in PatientID."""
    domains = {
        "hosp-a": {"issuer": "HOSP_A"},
        "hosp-b": {"issuer": "HOSP_B"},
        "hosp-c": {"issuer": "HOSP_C", "national_id_in": "patient_id"},
    }
    return [{**source, **domains[source["id"]]} for source in peer_sources]


def settings_for(make_settings: Any, sources: list[dict[str, Any]]) -> Any:
    settings = make_settings(sources)
    return settings.model_copy(
        update={"identity": settings.identity.model_copy(update={"national_issuer": "NISS"})}
    )


async def ask(client: Any, patient: dict[str, Any], candidates: bool = False) -> dict[str, Any]:
    body = await graphql(client, HISTORY, patient=patient, candidates=candidates)
    assert "errors" not in body, body["errors"]
    result: dict[str, Any] = body["data"]["patientHistory"]
    return result


def matched(result: dict[str, Any]) -> dict[str, tuple[str, str, str | None, str | None]]:
    """Study UID → (source, kind, issuer, value) of its single location."""
    out = {}
    for exam in result["exams"]:
        [loc] = exam["locations"]
        found_by = loc["matchedBy"]
        out[exam["studyInstanceUid"]] = (
            loc["source"]["id"],
            found_by["kind"],
            found_by["issuer"],
            found_by["value"],
        )
    return out


async def test_one_history_through_cross_references(
    make_settings: Any, identity_sources: list[dict[str, Any]]
) -> None:
    async with running_app(settings_for(make_settings, identity_sources)) as client:
        added = await graphql(client, ADD_LINKS, links=LINKS)
        assert added == {"data": {"addIdentityLinks": {"added": 3}}}
        by_local = await ask(client, {"id": "A123", "issuer": "HOSP_A"})
        by_national = await ask(client, {"nationalId": NATIONAL})
    for result in (by_local, by_national):
        assert result["complete"] is True, result["sources"]
        assert {s["status"] for s in result["sources"]} == {"OK"}
        assert set(matched(result)) == {X_A, X_B, X_C}
        assert NAMESAKE not in matched(result)
        assert result["candidates"] == []
    assert matched(by_local) == {
        X_A: ("hosp-a", "LOCAL_ID", "HOSP_A", "A123"),
        X_B: ("hosp-b", "XREF", "HOSP_B", "B-77"),
        X_C: ("hosp-c", "NATIONAL_ID", "NISS", NATIONAL),
    }
    assert matched(by_national)[X_A] == ("hosp-a", "XREF", "HOSP_A", "A123")


async def test_without_links_other_domains_are_not_guessed(
    make_settings: Any, identity_sources: list[dict[str, Any]]
) -> None:
    async with running_app(settings_for(make_settings, identity_sources)) as client:
        result = await ask(client, {"id": "A123", "issuer": "HOSP_A"})
    statuses = {s["source"]["id"]: s["status"] for s in result["sources"]}
    assert statuses == {"hosp-a": "OK", "hosp-b": "NO_IDENTIFIER", "hosp-c": "NO_IDENTIFIER"}
    assert result["complete"] is False
    assert set(matched(result)) == {X_A}


async def test_namesake_is_a_low_candidate_never_an_exam(
    make_settings: Any, identity_sources: list[dict[str, Any]]
) -> None:
    async with running_app(settings_for(make_settings, identity_sources)) as client:
        await graphql(client, ADD_LINKS, links=LINKS)
        result = await ask(client, {"id": "A123", "issuer": "HOSP_A"}, candidates=True)
    assert set(matched(result)) == {X_A, X_B, X_C}
    by_patient = {(c["source"]["id"], c["patientId"]): c for c in result["candidates"]}
    namesake = by_patient[("hosp-b", "B-99")]
    assert namesake["score"] < 0.9
    assert "BIRTH_DATE_MISMATCH" in namesake["reasons"]
    assert namesake["birthDate"] == "1988-01-01"
    assert [e["studyInstanceUid"] for e in namesake["exams"]] == [NAMESAKE]
    # The patient's own records are in exams, not among the candidates.
    assert ("hosp-a", "A123") not in by_patient
    assert ("hosp-b", "B-77") not in by_patient


async def test_demographic_search_gives_candidates_only(
    make_settings: Any, identity_sources: list[dict[str, Any]]
) -> None:
    patient = {"familyName": "Janssens", "givenName": "Marie", "birthDate": "1970-03-15", "sex": "F"}
    async with running_app(settings_for(make_settings, identity_sources)) as client:
        result = await ask(client, patient)
    assert result["exams"] == []
    scores = {(c["source"]["id"], c["patientId"]): c["score"] for c in result["candidates"]}
    assert scores[("hosp-a", "A123")] >= 0.9
    assert scores[("hosp-b", "B-77")] >= 0.9
    assert scores[("hosp-c", NATIONAL)] >= 0.9  # stored as JANSSENS^MARIE: folding matches it
    assert scores[("hosp-b", "B-99")] < 0.9
    assert result["candidates"][-1]["patientId"] == "B-99"


async def test_bad_patient_input_is_a_graphql_error(
    make_settings: Any, identity_sources: list[dict[str, Any]]
) -> None:
    async with running_app(settings_for(make_settings, identity_sources)) as client:
        body = await graphql(client, HISTORY, patient={"id": "A123", "nationalId": NATIONAL})
    assert body["errors"][0]["extensions"]["code"] == "BAD_PATIENT_INPUT"


def test_cli_import_then_query(
    tmp_path: Path, identity_sources: list[dict[str, Any]], elasticsearch: Any
) -> None:
    config = tmp_path / "pacsfed.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "cache": {
                    "backend": "elasticsearch",
                    "url": elasticsearch.url,
                    "index_prefix": "pacsfed-cli-identity",
                },
                "identity": {"national_issuer": "NISS"},
                "sources": identity_sources,
                "audit": {"journal_dir": str(tmp_path / "audit")},
            }
        )
    )
    links = tmp_path / "links.csv"
    links.write_text(
        "person,issuer,patient_id\n"
        + "".join(f"{x['person']},{x['issuer']},{x['patientId']}\n" for x in LINKS)
    )

    def pacsfed(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "pacsfed.cli", *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)

    imported = pacsfed("identity", "import", "--config", str(config), str(links))
    assert imported.returncode == 0, imported.stderr
    assert "imported 3 links for 1 persons" in imported.stdout
    queried = pacsfed("query", "--config", str(config), "--national-id", NATIONAL)
    assert queried.returncode == 0, queried.stdout + queried.stderr
    assert "complete: 3 exams" in queried.stdout


async def test_national_number_in_other_patient_ids(
    tmp_path: Path, dicom_files: dict[str, list[Path]]
) -> None:
    """Orthanc does not match inside OtherPatientIDsSequence but returns it: the check keeps only the patient's."""
    import pydicom
    from peers import OrthancPeer

    from federation.models import PatientQuery
    from federation.settings import settings_from_mapping
    from pacsfed.app import engine_from_settings

    tagged = pydicom.dcmread(dicom_files["X-A-CT"][0])
    item = pydicom.Dataset()
    item.PatientID, item.IssuerOfPatientID = NATIONAL, "NISS"
    tagged.OtherPatientIDsSequence = [item]
    tagged.save_as(tmp_path / "tagged.dcm")
    with OrthancPeer("HOSPD", tmp_path / "orthanc") as hosp_d:
        hosp_d.upload([tmp_path / "tagged.dcm", *dicom_files["A-MR"], *dicom_files["N-B-CR"]])
        source = {
            "id": "hosp-d",
            "kind": "dimse",
            "host": hosp_d.host,
            "port": hosp_d.dicom_port,
            "called_ae": hosp_d.aet,
            "issuer": "HOSP_D",
            "national_id_in": "other_patient_ids",
        }
        settings = settings_from_mapping(
            {"cache": {"backend": "memory"}, "identity": {"national_issuer": "NISS"}, "sources": [source]}
        )
        async with engine_from_settings(settings) as engine:
            result = await engine.patient_history(PatientQuery(national_id=NATIONAL))
    [outcome] = result.sources
    assert outcome.status.value == "OK"
    assert [e.study_instance_uid for e in result.exams] == [X_A]
    [location] = result.exams[0].locations
    assert location.matched_by is not None
    assert (location.matched_by.kind.value, location.matched_by.value) == ("NATIONAL_ID", NATIONAL)
    # The peer ignored the sequence key and answered with every study: the others were discarded.
    assert any("discarded" in w for w in outcome.warnings)
