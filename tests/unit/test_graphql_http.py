"""The GraphQL HTTP surface: error codes, masking, GraphiQL, health endpoints (no peers needed)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from asgi_lifespan import LifespanManager

from federation.app import create_app
from federation.settings import settings_from_mapping


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings_from_mapping({"cache": {"backend": "memory"}, "sources": []}))
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://pacsfed.test") as c:
            yield c


def codes(body: dict) -> list[str]:  # type: ignore[type-arg]
    return [error["extensions"]["code"] for error in body["errors"]]


async def test_sources_query(client: httpx.AsyncClient) -> None:
    response = await client.post("/graphql", json={"query": "{ sources { id name kind } }"})
    assert response.status_code == 200
    assert response.json() == {"data": {"sources": []}}
    assert response.headers["x-request-id"]


@pytest.mark.parametrize(
    ("patient", "code"),
    [
        ({}, "BAD_PATIENT_INPUT"),
        ({"id": "*"}, "BAD_PATIENT_INPUT"),
        ({"id": "A", "issuer": "H*"}, "BAD_PATIENT_INPUT"),
    ],
)
async def test_bad_patient_input(client: httpx.AsyncClient, patient: dict, code: str) -> None:  # type: ignore[type-arg]
    query = "query($p: PatientInput!) { patientHistory(patient: $p) { complete } }"
    body = (await client.post("/graphql", json={"query": query, "variables": {"p": patient}})).json()
    assert codes(body) == [code]
    assert body["errors"][0]["extensions"]["requestId"]


async def test_unknown_source_and_bad_deadline(client: httpx.AsyncClient) -> None:
    query = '{ patientHistory(patient: {id: "A"}, sources: ["nope"]) { complete } }'
    assert codes((await client.post("/graphql", json={"query": query})).json()) == ["UNKNOWN_SOURCE"]
    query = '{ patientHistory(patient: {id: "A"}, deadlineMs: 1) { complete } }'
    assert codes((await client.post("/graphql", json={"query": query})).json()) == ["BAD_DEADLINE"]


async def test_syntax_and_validation_errors_are_graphql_errors(client: httpx.AsyncClient) -> None:
    body = (await client.post("/graphql", json={"query": "{ sources { id "})).json()
    assert codes(body) == ["GRAPHQL_PARSE_FAILED"]
    body = (await client.post("/graphql", json={"query": "{ nothing }"})).json()
    assert codes(body) == ["GRAPHQL_VALIDATION_FAILED"]


@pytest.mark.parametrize(
    ("content", "status"),
    [(b"not json", 400), (b'[{"query": "{ sources { id } }"}]', 400), (b'{"variables": {}}', 400)],
)
async def test_malformed_requests(client: httpx.AsyncClient, content: bytes, status: int) -> None:
    response = await client.post("/graphql", content=content, headers={"content-type": "application/json"})
    assert response.status_code == status
    assert "Traceback" not in response.text
    assert codes(response.json()) == ["BAD_REQUEST"]


async def test_graphiql_for_browsers_and_get_queries(client: httpx.AsyncClient) -> None:
    page = await client.get("/graphql", headers={"accept": "text/html"})
    assert page.status_code == 200 and "graphiql" in page.text.lower()
    response = await client.get("/graphql", params={"query": "{ sources { id } }"})
    assert response.json() == {"data": {"sources": []}}


async def test_health_endpoints(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = (await client.get("/readyz")).json()
    assert ready["status"] == "ready" and ready["cache"]["backend"] == "memory"
