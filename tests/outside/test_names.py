"""Names in every script through `pacsfed serve`: a kanji search over plain HTTP (httpx), as an EHR sends it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from pacsfed.demo.signer import DemoSigner

QUERY = """
query($patient: PatientInput!) {
  patientHistory(patient: $patient) {
    candidates { patientId reasons source { id } patientNameGroups { alphabetic ideographic phonetic } }
  }
}
"""
YAMADA = {"alphabetic": "Yamada^Tarou", "ideographic": "山田^太郎", "phonetic": "やまだ^たろう"}


def test_a_served_pacsfed_finds_a_patient_searched_in_kanji(
    pacsfed_server: Callable[..., Any],
    serve_config: Callable[..., dict[str, Any]],
    signer: DemoSigner,
    orthanc_c: Any,
) -> None:
    sources = [
        {
            "id": "hosp-c",
            "kind": "dimse",
            "host": orthanc_c.host,
            "port": orthanc_c.dicom_port,
            "called_ae": orthanc_c.aet,
        },
        {"id": "hosp-c-web", "kind": "dicomweb", "url": orthanc_c.dicomweb_url},
    ]
    server = pacsfed_server(serve_config(sources))
    # Born a day later than stored: only the kanji name key (*山田*, sent over DIMSE) finds her.
    patient = {"familyName": "山田", "givenName": "太郎", "birthDate": "1965-03-18"}
    answer = httpx.post(
        server.graphql_url,
        json={"query": QUERY, "variables": {"patient": patient}},
        headers={"authorization": f"Bearer {signer.token()}"},
        timeout=30,
    ).json()
    assert "errors" not in answer, answer
    [candidate] = answer["data"]["patientHistory"]["candidates"]
    assert (candidate["source"]["id"], candidate["patientId"]) == ("hosp-c", "PA-JP1")
    assert candidate["patientNameGroups"] == YAMADA
    assert {"FAMILY_NAME_EQUAL", "GIVEN_NAME_EQUAL"} <= set(candidate["reasons"])
    log = server.log_text()
    assert "山田" not in log and "PA-JP1" not in log
    orthanc_log = orthanc_c.log_path.read_text(encoding="utf-8", errors="replace")
    assert "Unsupported return MIME type" not in orthanc_log
