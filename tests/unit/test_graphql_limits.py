"""Document limits (tokens, depth, aliases, fields) and the production rules, over HTTP and WebSocket."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from dev_app import dev_app
from graphql import DocumentNode, GraphQLError, get_introspection_query
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect
from test_graphql_http import app_settings, assert_masked, codes, serving

from federation.settings import ServerSettings
from federation.settings_security import GraphqlLimits
from schema.limits import DocumentChecker
from schema.query import build_schema

SCHEMA = build_schema()
PROTOCOL = "graphql-transport-ws"
DEEP_REAL = '{ patientHistory(patient: {id: "A"}) { exams { locations { source { id } } } } }'  # depth 5


def checker(mode: str = "production", **limits: Any) -> DocumentChecker:
    return DocumentChecker(SCHEMA, ServerSettings(mode=mode, graphql=GraphqlLimits(**limits)))


def error_codes(checked: DocumentNode | list[GraphQLError]) -> list[str]:
    assert not isinstance(checked, DocumentNode), "the document was accepted"
    return [(e.extensions or {}).get("code", type(e).__name__) for e in checked]


def nested(depth: int, field: str = "a") -> str:
    return "{" + f"{field} {{" * (depth - 1) + field + "}" * depth


def aliased(count: int, field: str = "__typename", operation: str = "query") -> str:
    return f"{operation} {{ " + " ".join(f"a{i}: {field}" for i in range(count)) + " }"


# The rule, on the real schema.


def test_depth_up_to_the_limit_passes_and_one_more_is_refused() -> None:
    assert isinstance(checker(max_depth=5).check(DEEP_REAL), DocumentNode)
    assert error_codes(checker(max_depth=4).check(DEEP_REAL)) == ["QUERY_TOO_DEEP"]


def test_depth_is_checked_before_the_fields_exist() -> None:
    assert error_codes(checker().check(nested(13))) == ["QUERY_TOO_DEEP"]
    assert "QUERY_TOO_DEEP" not in error_codes(checker().check(nested(12)))  # unknown fields, not depth


def test_depth_follows_fragments_and_inline_fragments() -> None:
    query = """
    { patientHistory(patient: {id: "A"}) { ...H } }
    fragment H on PatientHistory { exams { ... on Exam { locations { ...L } } } }
    fragment L on ExamLocation { source { id } }
    """
    assert isinstance(checker(max_depth=5).check(query), DocumentNode)
    assert error_codes(checker(max_depth=4).check(query)) == ["QUERY_TOO_DEEP"]


def test_fragment_cycles_terminate() -> None:
    query = "{ sources { ...A } } fragment A on Source { id ...B } fragment B on Source { name ...A }"
    started = time.monotonic()
    result = checker().check(query)
    assert time.monotonic() - started < 1
    assert "NoFragmentCyclesRule" not in error_codes(result)  # reported by graphql-core's own rule
    assert any("Cannot spread fragment" in e.message for e in result if isinstance(e, GraphQLError))


def test_a_fragment_bomb_is_cut_at_the_field_limit() -> None:
    # 2**30 fields once expanded; the walk stops as soon as it passes 300.
    fragments = " ".join(f"fragment F{i} on Query {{ ...F{i + 1} ...F{i + 1} }}" for i in range(30))
    query = "{ ...F0 } " + fragments + " fragment F30 on Query { __typename }"
    started = time.monotonic()
    assert error_codes(checker(max_tokens=5000).check(query)) == ["TOO_MANY_FIELDS"]
    assert time.monotonic() - started < 1


def test_field_count_counts_every_spread() -> None:
    query = "{ sources { ...S } a: sources { ...S } b: sources { ...S } } fragment S on Source { id name kind circuit }"
    assert isinstance(checker(max_fields=15).check(query), DocumentNode)
    assert error_codes(checker(max_fields=14).check(query)) == ["TOO_MANY_FIELDS"]


@pytest.mark.parametrize("operation", ["query", "mutation"])
def test_alias_flood_is_refused_on_queries_and_mutations(operation: str) -> None:
    assert isinstance(checker().check(aliased(15, operation=operation)), DocumentNode)
    assert error_codes(checker().check(aliased(16, operation=operation))) == ["TOO_MANY_ALIASES"]


def test_aliases_in_fragments_count_once_per_spread() -> None:
    query = "mutation { ...M ...M } fragment M on Mutation { " + " ".join(
        f'r{i}: redeemShareCode(code: "{i:08d}") {{ __typename }}' for i in range(8)
    )
    query += " }"
    assert error_codes(checker().check(query)) == ["TOO_MANY_ALIASES"]


def test_token_limit_stops_the_parser() -> None:
    query = "{ " + "__typename " * 2500 + "}"
    result = checker().check(query)
    assert error_codes(result) == ["GraphQLSyntaxError"]
    assert "tokens" in result[0].message  # type: ignore[index]
    comments = "{ __typename }" + "\n#" * 2500
    assert error_codes(checker().check(comments)) == ["GraphQLSyntaxError"]


def test_a_document_nested_past_the_parser_is_a_syntax_error() -> None:
    result = checker(max_tokens=100_000).check("{" + "a{" * 5000 + "a" + "}" * 5001)
    assert error_codes(result) == ["GraphQLSyntaxError"]


def test_introspection_is_refused_in_production_only() -> None:
    introspection = get_introspection_query()
    refused = checker("production").check(introspection)
    assert not isinstance(refused, DocumentNode)
    assert "introspection has been disabled" in refused[0].message
    # GraphiQL's (and schemathesis') full introspection query fits the default limits.
    assert isinstance(checker("development").check(introspection), DocumentNode)
    assert isinstance(checker("production").check("{ __typename }"), DocumentNode)


def test_suggestions_are_hidden() -> None:
    result = checker().check("{ sourcs { id } }")
    assert not isinstance(result, DocumentNode)
    assert all("Did you mean" not in e.message for e in result)


# Over HTTP: a GraphQL error (200), never a 500.


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with serving(app_settings("production")) as c:
        yield c


@pytest.mark.parametrize(
    ("query", "code"),
    [
        (nested(40), "QUERY_TOO_DEEP"),
        (nested(200), "QUERY_TOO_DEEP"),
        (aliased(100), "TOO_MANY_ALIASES"),
        (aliased(16, 'redeemShareCode(code: "00000000") { __typename }', "mutation"), "TOO_MANY_ALIASES"),
        ("{ " + "sources { id } " * 400 + "}", "TOO_MANY_FIELDS"),
        ("{ " + "__typename " * 3000 + "}", "GRAPHQL_PARSE_FAILED"),
        ("{" * 20_000, "GRAPHQL_PARSE_FAILED"),
    ],
)
async def test_limits_over_http(client: httpx.AsyncClient, query: str, code: str) -> None:
    response = await client.post("/graphql", json={"query": query})
    assert response.status_code == 200
    assert codes(response.json()) == [code]
    assert "data" not in response.json()
    assert_masked(response)


async def test_limits_apply_to_get_queries(client: httpx.AsyncClient) -> None:
    response = await client.get("/graphql", params={"query": nested(20)})
    assert codes(response.json()) == ["QUERY_TOO_DEEP"]
    assert_masked(response)


async def test_configured_limits_are_used() -> None:
    async with serving(app_settings("production", max_depth=4, max_aliases=1)) as client:
        deep = await client.post("/graphql", json={"query": DEEP_REAL})
        assert codes(deep.json()) == ["QUERY_TOO_DEEP"]
        two = await client.post("/graphql", json={"query": "{ a: __typename b: __typename }"})
        assert codes(two.json()) == ["TOO_MANY_ALIASES"]


# Over WebSocket: the same checks, the same masking.


def ws_errors(client: TestClient, query: str) -> list[dict[str, Any]]:
    with client.websocket_connect("/graphql", subprotocols=["graphql-transport-ws"]) as ws:
        ws.send_json({"type": "connection_init"})
        assert ws.receive_json() == {"type": "connection_ack"}
        ws.send_json({"id": "1", "type": "subscribe", "payload": {"query": query}})
        message = ws.receive_json()
    assert message["type"] == "error", message
    errors: list[dict[str, Any]] = message["payload"]
    return errors


@pytest.mark.parametrize(
    ("query", "code"),
    [
        (nested(30), "QUERY_TOO_DEEP"),
        (aliased(16), "TOO_MANY_ALIASES"),
        ("{ " + "__typename " * 3000 + "}", "GRAPHQL_PARSE_FAILED"),
        ("{ __schema { queryType { name } } }", "GRAPHQL_VALIDATION_FAILED"),
        ('subscription { patientHistoryUpdate(patient: {id: "A"}) { phase } }', "GRAPHQL_VALIDATION_FAILED"),
    ],
)
def test_limits_over_websocket(query: str, code: str) -> None:
    with TestClient(dev_app(app_settings("production"))) as client:
        errors = ws_errors(client, query)
    assert {e["extensions"]["code"] for e in errors} == {code}
    assert all(e["extensions"]["requestId"] for e in errors)
    assert all("Did you mean" not in e["message"] for e in errors)


def test_an_oversized_websocket_message_closes_the_socket() -> None:
    app = dev_app(app_settings("production", max_body_bytes=2048))
    with TestClient(app) as client, client.websocket_connect("/graphql", subprotocols=[PROTOCOL]) as ws:
        ws.send_json({"type": "connection_init"})
        ws.receive_json()
        ws.send_json(
            {"id": "1", "type": "subscribe", "payload": {"query": "{ __typename }", "x": "a" * 4096}}
        )
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
    assert closed.value.code == 1009


def test_a_query_over_websocket_still_runs() -> None:
    app = dev_app(app_settings("production"))
    with TestClient(app) as client, client.websocket_connect("/graphql", subprotocols=[PROTOCOL]) as ws:
        ws.send_json({"type": "connection_init"})
        ws.receive_json()
        ws.send_json({"id": "1", "type": "subscribe", "payload": {"query": "{ sources { id } }"}})
        assert ws.receive_json() == {"id": "1", "type": "next", "payload": {"data": {"sources": []}}}
        assert ws.receive_json() == {"id": "1", "type": "complete"}
