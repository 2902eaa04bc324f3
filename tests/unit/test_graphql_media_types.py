"""GraphQL over HTTP media types: application/graphql-response+json and its status codes, JSON as before."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from dev_app import dev_app

from federation.settings import settings_from_mapping
from schema.http import wants_graphql_response

GRAPHQL_RESPONSE = "application/graphql-response+json"


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    settings = settings_from_mapping(
        {"cache": {"backend": "memory"}, "sources": [], "server": {"mode": "production"}}
    )
    async with LifespanManager(dev_app(settings), startup_timeout=60, shutdown_timeout=60) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://pacsfed.test") as c:
            yield c


def codes(body: dict[str, Any]) -> list[str]:
    return [error["extensions"]["code"] for error in body.get("errors", [])]


CASES = [
    # (what, body, code, executed: whether the answer has data)
    ("parse failure", {"query": "{"}, "GRAPHQL_PARSE_FAILED", False),
    ("validation failure", {"query": "{ nothing }"}, "GRAPHQL_VALIDATION_FAILED", False),
    ("unused variable", {"query": "query($x: Int) { __typename }"}, "GRAPHQL_VALIDATION_FAILED", False),
    (
        "variable of the wrong type",
        {"query": 'query($x: Boolean) { patientHistory(patient: {id: "A"}, deadlineMs: $x) { complete } }'},
        "GRAPHQL_VALIDATION_FAILED",
        False,
    ),
    (
        "null for a non-null variable",
        {
            "query": "query($id: String!) { patientHistory(patient: {id: $id}) { complete } }",
            "variables": {"id": None},
        },
        "BAD_USER_INPUT",
        False,
    ),
    (
        "a variable that does not coerce",
        {
            "query": "query($p: PatientInput!) { patientHistory(patient: $p) { complete } }",
            "variables": {"p": "not an object"},
        },
        "BAD_USER_INPUT",
        False,
    ),
    (
        "a resolver's error (execution started: data is null)",
        {"query": "{ patientHistory(patient: {}) { complete } }"},
        "BAD_PATIENT_INPUT",
        True,
    ),
    (
        "a subscription sent over HTTP (WebSocket only)",
        {"query": 'subscription { patientHistoryUpdates(patient: {id: "A"}) { phase } }'},
        "BAD_REQUEST",
        False,
    ),
    ("success", {"query": "{ __typename }"}, None, True),
]


@pytest.mark.parametrize(("what", "body", "code", "executed"), CASES, ids=[c[0] for c in CASES])
async def test_graphql_response_json_has_4xx_for_request_errors(
    client: httpx.AsyncClient, what: str, body: dict[str, Any], code: str | None, executed: bool
) -> None:
    response = await client.post("/graphql", json=body, headers={"accept": GRAPHQL_RESPONSE})
    assert response.headers["content-type"].startswith(GRAPHQL_RESPONSE), what
    assert response.status_code == (200 if executed else 400), what
    assert ("data" in response.json()) is executed
    assert codes(response.json()) == ([code] if code else [])


@pytest.mark.parametrize(("what", "body", "code", "executed"), CASES, ids=[c[0] for c in CASES])
async def test_application_json_keeps_200_for_graphql_errors(
    client: httpx.AsyncClient, what: str, body: dict[str, Any], code: str | None, executed: bool
) -> None:
    response = await client.post("/graphql", json=body, headers={"accept": "application/json"})
    assert response.headers["content-type"] == "application/json", what
    assert response.status_code == 200, what
    assert ("data" in response.json()) is executed
    assert codes(response.json()) == ([code] if code else [])


async def test_get_and_malformed_requests_with_graphql_response_json(client: httpx.AsyncClient) -> None:
    headers = {"accept": GRAPHQL_RESPONSE}
    response = await client.get("/graphql", params={"query": "{ nothing }"}, headers=headers)
    assert response.status_code == 400 and codes(response.json()) == ["GRAPHQL_VALIDATION_FAILED"]
    response = await client.get("/graphql", params={"query": "{ __typename }"}, headers=headers)
    assert response.status_code == 200 and response.json() == {"data": {"__typename": "Query"}}
    assert response.headers["content-type"].startswith(GRAPHQL_RESPONSE)
    assert "accept" in response.headers["vary"].lower()  # a cache keeps the two media types apart
    for content in (b"{ not json", b'{"query": "{ __typename }", "extensions": "x"}'):
        response = await client.post(
            "/graphql", content=content, headers={**headers, "content-type": "application/json"}
        )
        assert response.status_code == 400 and codes(response.json()) == ["BAD_REQUEST"]
        assert response.headers["content-type"].startswith(GRAPHQL_RESPONSE)
    response = await client.post("/graphql", json={"query": "{ __typename }", "extensions": {"a": 1}})
    assert response.json() == {"data": {"__typename": "Query"}}


@pytest.mark.parametrize(
    ("accept", "graphql_response"),
    [
        ("", False),
        ("*/*", False),
        ("application/json", False),
        ("application/*", False),
        (GRAPHQL_RESPONSE, True),
        (f"{GRAPHQL_RESPONSE}, application/json;q=0.9", True),
        (f"application/json, {GRAPHQL_RESPONSE}", True),  # equal q: the one that says more wins
        (f"application/json, {GRAPHQL_RESPONSE};q=0.5", False),
        (f"{GRAPHQL_RESPONSE};q=0", False),
        (f"{GRAPHQL_RESPONSE};q=oops", False),
        (f"{GRAPHQL_RESPONSE.upper()}; charset=utf-8", True),
        (f"text/html, {GRAPHQL_RESPONSE};q=0.1", True),
    ],
)
def test_accept_negotiation(accept: str, graphql_response: bool) -> None:
    assert wants_graphql_response(accept) is graphql_response
