"""The GraphQL HTTP surface: error codes, masking, request limits, GraphiQL, health (no peers needed)."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import graphene
import httpx
import pytest
from asgi_lifespan import LifespanManager
from dev_app import dev_app
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import HTTPConnection
from starlette.routing import Route

from federation.errors import AccessError, AuthenticationError, CacheError, QueryError
from federation.settings import ServerSettings, Settings, settings_from_mapping
from schema.http import GraphQLHandler
from web.request_id import RequestIdMiddleware

SECRET = "DOE^JANE-19700101"
"""Stands for patient data: it must never come back in an error."""


def app_settings(mode: str = "development", **graphql: Any) -> Settings:
    return settings_from_mapping(
        {"cache": {"backend": "memory"}, "sources": [], "server": {"mode": mode, "graphql": graphql}}
    )


@contextlib.asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = dev_app(settings)
    async with LifespanManager(app, startup_timeout=60, shutdown_timeout=60) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://pacsfed.test") as c:
            yield c


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with serving(app_settings("development")) as c:
        yield c


@pytest.fixture
async def production() -> AsyncIterator[httpx.AsyncClient]:
    async with serving(app_settings("production")) as c:
        yield c


def codes(body: dict[str, Any]) -> list[str]:
    return [error["extensions"]["code"] for error in body["errors"]]


def assert_masked(response: httpx.Response) -> None:
    """A JSON body, every error with a code and the request id, no trace of internals."""
    assert response.status_code < 500, response.text
    assert "Traceback" not in response.text and 'File "' not in response.text
    assert "Did you mean" not in response.text
    assert SECRET not in response.text
    for error in response.json().get("errors", []):
        assert error["extensions"]["code"]
        assert error["extensions"]["requestId"] == response.headers["x-request-id"]


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
async def test_bad_patient_input(client: httpx.AsyncClient, patient: dict[str, Any], code: str) -> None:
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
    response = await client.post("/graphql", json={"query": "{ sources { id "})
    assert response.status_code == 200 and codes(response.json()) == ["GRAPHQL_PARSE_FAILED"]
    response = await client.post("/graphql", json={"query": "{ nothing }"})
    assert response.status_code == 200 and codes(response.json()) == ["GRAPHQL_VALIDATION_FAILED"]
    assert_masked(response)


@pytest.mark.parametrize(
    "query",
    [
        "{ sourcs { id } }",  # a field one letter away from `sources`
        "{ sources { nam } }",
        '{ patientHistory(patient: {id: "A"}, freshnes: LIVE) { complete } }',
        '{ patientHistory(patient: {id: "A"}, freshness: LIV) { complete } }',
        '{ patientHistory(patient: {idd: "A"}) { complete } }',
    ],
)
async def test_no_did_you_mean_suggestions(client: httpx.AsyncClient, query: str) -> None:
    response = await client.post("/graphql", json={"query": query})
    assert codes(response.json()) == ["GRAPHQL_VALIDATION_FAILED"]
    assert_masked(response)


@pytest.mark.parametrize(
    ("variables", "where"),
    [
        ({"p": {"id": "A", "birthDate": SECRET}}, "p.birthDate"),
        ({"p": {"id": 1970010112345, "familyName": SECRET}}, "p.id"),
        ({"p": {"idd": SECRET}}, None),
        ({"p": SECRET}, None),
        ({"p": {"id": "A"}, "f": SECRET}, None),
    ],
)
async def test_variable_errors_do_not_echo_values(
    client: httpx.AsyncClient, variables: dict[str, Any], where: str | None
) -> None:
    query = (
        "query($p: PatientInput!, $f: Freshness) { patientHistory(patient: $p, freshness: $f) { complete } }"
    )
    response = await client.post("/graphql", json={"query": query, "variables": variables})
    assert_masked(response)
    assert "1970010112345" not in response.text
    assert codes(response.json()) == ["BAD_USER_INPUT"]
    if where is not None:
        assert f"at '{where}'" in response.json()["errors"][0]["message"]


async def test_literal_errors_do_not_echo_values(client: httpx.AsyncClient) -> None:
    query = '{ patientHistory(patient: {familyName: "X", birthDate: "SECRET"}) { complete } }'
    query = query.replace("SECRET", SECRET)
    response = await client.post("/graphql", json={"query": query})
    assert codes(response.json()) == ["GRAPHQL_VALIDATION_FAILED"]
    assert_masked(response)


@pytest.mark.parametrize(
    ("content", "status"),
    [
        (b"not json", 400),
        (b'[{"query": "{ sources { id } }"}]', 400),
        (b'{"variables": {}}', 400),
        (b'{"query": "{ sources { id } }", "variables": [1]}', 400),
        (b'{"query": "{ sources { id } }", "operationName": 7}', 400),
        (b"[" * 30_000 + b"]" * 30_000, 400),  # nested past the JSON parser's recursion limit
        (b"\xff\xfe{", 400),
        (b'"{ sources { id } }"', 400),
    ],
)
async def test_malformed_requests(client: httpx.AsyncClient, content: bytes, status: int) -> None:
    response = await client.post("/graphql", content=content, headers={"content-type": "application/json"})
    assert response.status_code == status
    assert_masked(response)
    assert codes(response.json()) == ["BAD_REQUEST"]


async def test_batching_is_refused_with_a_clear_message(client: httpx.AsyncClient) -> None:
    response = await client.post("/graphql", json=[{"query": "{ sources { id } }"}] * 2)
    assert response.status_code == 400
    assert "batching" in response.json()["errors"][0]["message"]


async def test_wrong_content_type(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/graphql", content=b"query=x", headers={"content-type": "application/x-www-form-urlencoded"}
    )
    assert response.status_code == 415
    assert codes(response.json()) == ["BAD_REQUEST"]


async def test_oversized_body_is_refused_while_it_streams() -> None:
    async with serving(app_settings("development", max_body_bytes=4096)) as client:
        big = json.dumps({"query": "{ sources { id } }", "variables": {"x": "a" * 5000}}).encode()
        response = await client.post("/graphql", content=big, headers={"content-type": "application/json"})
        assert response.status_code == 413
        assert_masked(response)

        async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: the stream is counted
            for _ in range(10):
                yield b" " * 1000

        response = await client.post(
            "/graphql", content=chunks(), headers={"content-type": "application/json"}
        )
        assert response.status_code == 413
        assert codes(response.json()) == ["BAD_REQUEST"]
        just_fits = await client.post("/graphql", json={"query": "{ sources { id } }"})
        assert just_fits.json() == {"data": {"sources": []}}


async def test_graphiql_and_introspection_in_development(client: httpx.AsyncClient) -> None:
    page = await client.get("/graphql", headers={"accept": "text/html"})
    assert page.status_code == 200 and "graphiql" in page.text.lower()
    response = await client.get("/graphql", params={"query": "{ sources { id } }"})
    assert response.json() == {"data": {"sources": []}}
    body = (await client.post("/graphql", json={"query": "{ __schema { queryType { name } } }"})).json()
    assert body == {"data": {"__schema": {"queryType": {"name": "Query"}}}}


async def test_no_graphiql_and_no_introspection_in_production(production: httpx.AsyncClient) -> None:
    page = await production.get("/graphql", headers={"accept": "text/html"})
    assert page.status_code == 400 and "graphiql" not in page.text.lower()
    for query in (
        "{ __schema { queryType { name } } }",
        '{ __type(name: "Query") { fields { name } } }',
        '{ __type(name: "Query") { name kind } }',
        '{ __type(name: "Query") { ...T } } fragment T on __Type { fields { name } }',
    ):
        response = await production.post("/graphql", json={"query": query})
        assert response.status_code == 200
        assert set(codes(response.json())) == {"GRAPHQL_VALIDATION_FAILED"}
        assert "data" not in response.json()
    typename = await production.post("/graphql", json={"query": "{ __typename }"})
    assert typename.json() == {"data": {"__typename": "Query"}}
    # Whether a type exists (what schema.graphql says anyway): the GraphQL-over-HTTP audit's probe.
    probe = "query($n: String!) { __type(name: $n) { name __typename } }"
    for name, found in (("Query", {"name": "Query", "__typename": "__Type"}), ("sometype", None)):
        response = await production.post("/graphql", json={"query": probe, "variables": {"n": name}})
        assert response.json() == {"data": {"__type": found}}


async def test_get_cannot_mutate(client: httpx.AsyncClient) -> None:
    query = 'mutation { purgeCache(patient: {id: "A"}) { purged } }'
    response = await client.get("/graphql", params={"query": query})
    assert response.status_code == 405 and response.headers["allow"] == "POST"
    assert codes(response.json()) == ["BAD_REQUEST"]


async def test_health_endpoints(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = (await client.get("/readyz")).json()
    assert ready["status"] == "ready" and ready["cache"]["backend"] == "memory"


# The masking itself, on a small schema whose resolvers fail in every way a resolver can.


class _Failing(graphene.ObjectType):
    crash = graphene.String()
    cache_down = graphene.String()
    bad_query = graphene.String()
    forbidden = graphene.String()
    not_null = graphene.NonNull(graphene.String)

    @staticmethod
    def resolve_crash(_root: Any, _info: Any) -> str:
        raise ValueError(f"no exam for {SECRET}")

    @staticmethod
    def resolve_cache_down(_root: Any, _info: Any) -> str:
        raise CacheError(f"index write failed for {SECRET}")  # ours, but without a code: masked

    @staticmethod
    def resolve_bad_query(_root: Any, _info: Any) -> str:
        raise QueryError("deadlineMs must be positive", code="BAD_DEADLINE")

    @staticmethod
    def resolve_forbidden(_root: Any, _info: Any) -> str:
        raise AccessError("not allowed to read this source", code="FORBIDDEN")

    @staticmethod
    def resolve_not_null(_root: Any, _info: Any) -> None:
        return None


def failing_app(mode: str, context: Any = None) -> Starlette:
    async def plain_context(connection: HTTPConnection) -> dict[str, Any]:
        return {"request": connection}

    handler = GraphQLHandler(
        graphene.Schema(query=_Failing), ServerSettings(mode=mode), context=context or plain_context
    )
    return Starlette(
        routes=[Route("/graphql", handler.handle, methods=["GET", "POST"])],
        middleware=[Middleware(RequestIdMiddleware)],
    )


@contextlib.asynccontextmanager
async def plain_client(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://pacsfed.test") as c:
        yield c


@pytest.mark.parametrize("mode", ["production", "development"])
async def test_unexpected_errors_are_masked_and_logged_without_values(
    mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    query = "{ crash cacheDown badQuery forbidden }"
    async with plain_client(failing_app(mode)) as client:
        with caplog.at_level(logging.ERROR, logger="schema.http"):
            response = await client.post("/graphql", json={"query": query, "variables": None})
    assert_masked(response)
    errors = {e["path"][0]: e for e in response.json()["errors"]}
    assert errors["crash"]["message"] == "internal error"
    assert errors["crash"]["extensions"]["code"] == "INTERNAL_ERROR"
    assert errors["cacheDown"]["extensions"]["code"] == "INTERNAL_ERROR"
    assert errors["badQuery"]["message"] == "deadlineMs must be positive"
    assert errors["badQuery"]["extensions"]["code"] == "BAD_DEADLINE"
    assert errors["forbidden"]["extensions"]["code"] == "FORBIDDEN"
    assert ("exception" in errors["crash"]["extensions"]) is (mode == "development")
    request_id = response.headers["x-request-id"]
    logged = [r.getMessage() for r in caplog.records]
    assert any("ValueError" in line and request_id in line for line in logged)
    assert any("CacheError" in line for line in logged)
    assert SECRET not in "\n".join(logged) + caplog.text


async def test_a_broken_non_null_field_is_masked() -> None:
    async with plain_client(failing_app("production")) as client:
        response = await client.post("/graphql", json={"query": "{ notNull }"})
    assert_masked(response)
    assert codes(response.json()) == ["INTERNAL_ERROR"]
    assert response.json()["data"] is None


async def test_access_errors_from_the_context_keep_their_status() -> None:
    async def refuse(_connection: HTTPConnection) -> dict[str, Any]:
        raise AuthenticationError("the bearer token has expired", code="TOKEN_EXPIRED")

    async with plain_client(failing_app("production", refuse)) as client:
        response = await client.post("/graphql", json={"query": "{ crash }"})
    assert response.status_code == 401
    assert codes(response.json()) == ["TOKEN_EXPIRED"]
    assert_masked(response)


async def test_a_bug_in_the_handler_is_a_masked_500() -> None:
    async def broken(_connection: HTTPConnection) -> dict[str, Any]:
        raise KeyError(SECRET)

    async with plain_client(failing_app("production", broken)) as client:
        response = await client.post("/graphql", json={"query": "{ crash }"})
    assert response.status_code == 500
    assert codes(response.json()) == ["INTERNAL_ERROR"]
    assert SECRET not in response.text and "Traceback" not in response.text
