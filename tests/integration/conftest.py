"""Integration fixtures: pacsfed wired to the real peers and the real Elasticsearch node."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager

from federation.app import create_app
from federation.settings import Settings, settings_from_mapping

GraphQL = Callable[..., Any]

HISTORY_QUERY = """
query History($patient: PatientInput!, $deadlineMs: Int, $sources: [ID!]) {
  sources { id name kind }
  patientHistory(patient: $patient, deadlineMs: $deadlineMs, sources: $sources) {
    complete cacheStatus elapsedMs
    exams {
      studyInstanceUid studyDate studyTime modalities description accessionNumber
      patientName numberOfSeries numberOfInstances
      locations { source { id name } patientId retrieveUrl retrieveAeTitle }
    }
    sources { source { id } status latencyMs examCount error warnings }
  }
}
"""


@pytest.fixture
def index_prefix() -> str:
    """A fresh index prefix per test, so document counts never mix."""
    return f"pacsfed-test-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def peer_sources(orthanc_a: Any, dcmqrscp_b: Any, orthanc_c: Any) -> list[dict[str, Any]]:
    """The three real test hospitals as pacsfed sources."""
    return [
        {
            "id": "hosp-a",
            "name": "Hôpital A",
            "kind": "dimse",
            "host": orthanc_a.host,
            "port": orthanc_a.dicom_port,
            "called_ae": orthanc_a.aet,
            "calling_ae": "PACSFED",
            "issuer": "HOSP_A",
        },
        {
            "id": "hosp-b",
            "name": "Ziekenhuis B",
            "kind": "dimse",
            "host": dcmqrscp_b.host,
            "port": dcmqrscp_b.port,
            "called_ae": dcmqrscp_b.aet,
            "calling_ae": "PACSFED",
        },
        {"id": "hosp-c", "name": "Clinique C", "kind": "dicomweb", "url": orthanc_c.dicomweb_url},
    ]


@pytest.fixture
def make_settings(elasticsearch: Any, index_prefix: str) -> Callable[..., Settings]:
    """Settings for the given sources, caching into the test's own index."""

    def build(sources: list[dict[str, Any]], **cache: Any) -> Settings:
        return settings_from_mapping(
            {
                "cache": {"backend": "elasticsearch", "url": elasticsearch.url, "index_prefix": index_prefix, **cache},
                "sources": sources,
            }
        )

    return build


@contextlib.asynccontextmanager
async def running_app(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The ASGI app with its lifespan running, and an HTTP client talking to it in-process."""
    app = create_app(settings)
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://pacsfed.test", timeout=30) as client:
            yield client


async def graphql(client: httpx.AsyncClient, query: str, **variables: Any) -> dict[str, Any]:
    """POST one GraphQL operation; fail on HTTP errors, return the JSON body."""
    response = await client.post("/graphql", json={"query": query, "variables": variables})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def history(client: httpx.AsyncClient, patient_id: str, **variables: Any) -> dict[str, Any]:
    """The patientHistory of one patient; fail on GraphQL errors."""
    body = await graphql(client, HISTORY_QUERY, patient={"id": patient_id}, **variables)
    assert "errors" not in body, body["errors"]
    result: dict[str, Any] = body["data"]["patientHistory"]
    return result


def statuses(result: dict[str, Any]) -> dict[str, str]:
    """Source id → status of one patientHistory result."""
    return {s["source"]["id"]: s["status"] for s in result["sources"]}
