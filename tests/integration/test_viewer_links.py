"""Viewer links through GraphQL against real peers: each location links to its own source's viewer."""

from __future__ import annotations

from typing import Any

import pytest
from peers.dicomdata import CATALOGUE

from integration.gql import graphql, running_app

pytestmark = pytest.mark.integration

SHARED_CT = CATALOGUE.study("SHARED-CT")
C_US = CATALOGUE.study("C-US")

QUERY = """
query Links($patient: PatientInput!, $freshness: Freshness) {
  patientHistory(patient: $patient, freshness: $freshness) {
    complete
    exams { studyInstanceUid locations { source { id } viewerUrl } }
  }
}
"""


async def _links(client: Any, freshness: str) -> dict[tuple[str, str], str | None]:
    body = await graphql(client, QUERY, patient={"id": "PA-001"}, freshness=freshness)
    assert "errors" not in body, body["errors"]
    result = body["data"]["patientHistory"]
    assert result["complete"] is True
    return {
        (exam["studyInstanceUid"], location["source"]["id"]): location["viewerUrl"]
        for exam in result["exams"]
        for location in exam["locations"]
    }


async def test_each_location_links_to_its_sources_viewer_live_and_from_the_cache(
    peer_sources: list[dict[str, Any]], make_settings: Any
) -> None:
    templates = {
        "hosp-a": "https://viewer.example/view?study={studyInstanceUid}",
        "hosp-c": "https://ohif.hosp-c.example/viewer/{patientId}?acc={accessionNumber}",
    }
    sources = [{**s, "viewer_url": templates[s["id"]]} if s["id"] in templates else s for s in peer_sources]
    expected = {
        (SHARED_CT.study_uid, "hosp-a"): f"https://viewer.example/view?study={SHARED_CT.study_uid}",
        (SHARED_CT.study_uid, "hosp-b"): None,  # no template for this source
        (C_US.study_uid, "hosp-c"): f"https://ohif.hosp-c.example/viewer/PA-001?acc={C_US.accession}",
    }
    # The memory cache: what is tested is that cached records get links too, not Elasticsearch.
    async with running_app(make_settings(sources, backend="memory")) as client:
        live = await _links(client, "LIVE")
        cached = await _links(client, "CACHE_ONLY")
    for key, url in expected.items():
        assert live[key] == url
        assert cached[key] == url
