"""Talking GraphQL to an in-process pacsfed app whose lifespan runs."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
from asgi_lifespan import LifespanManager
from dev_app import dev_app

from federation.settings import Settings

HISTORY_QUERY = """
query History($patient: PatientInput!, $deadlineMs: Int, $sources: [ID!], $freshness: Freshness) {
  sources { id name kind circuit }
  patientHistory(patient: $patient, deadlineMs: $deadlineMs, sources: $sources, freshness: $freshness) {
    complete cacheStatus elapsedMs
    exams {
      studyInstanceUid studyDate studyTime modalities description accessionNumber
      patientName numberOfSeries numberOfInstances
      locations { source { id name } patientId retrieveUrl retrieveAeTitle cachedAt }
    }
    sources { source { id } status latencyMs examCount error warnings cached cachedAt }
  }
}
"""


@contextlib.asynccontextmanager
async def running_app(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The ASGI app with its lifespan running, and an HTTP client talking to it in-process."""
    app = dev_app(settings)
    async with LifespanManager(app, startup_timeout=60, shutdown_timeout=60) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://pacsfed.test", timeout=30
        ) as client:
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
