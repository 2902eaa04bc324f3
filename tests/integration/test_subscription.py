"""Progressive results over WebSocket (graphql-transport-ws) against the real peers."""

from __future__ import annotations

from typing import Any

import pytest
from dev_app import dev_app
from fakes import SilentListener
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from schema.ws import MAX_OPERATIONS

pytestmark = pytest.mark.integration

SUBSCRIPTION = """
subscription($patient: PatientInput!, $freshness: Freshness) {
  patientHistoryUpdates(patient: $patient, deadlineMs: 5000, freshness: $freshness) {
    phase
    source { id }
    answeredSources { id }
    history { complete exams { studyInstanceUid } sources { source { id } status cached } }
  }
}
"""
PURGE = 'mutation { purgeCache(patient: {id: "PA-001"}, source: "hosp-b") { purged } }'


def events(client: TestClient, variables: dict[str, Any]) -> list[dict[str, Any]]:
    """Subscribe once and collect every event until complete."""
    with client.websocket_connect("/graphql", subprotocols=["graphql-transport-ws"]) as ws:
        ws.send_json({"type": "connection_init"})
        assert ws.receive_json() == {"type": "connection_ack"}
        ws.send_json(
            {"id": "1", "type": "subscribe", "payload": {"query": SUBSCRIPTION, "variables": variables}}
        )
        received = []
        while True:
            message = ws.receive_json()
            if message["type"] == "complete":
                break
            assert message["type"] == "next", message
            assert "errors" not in message["payload"], message["payload"]
            received.append(message["payload"]["data"]["patientHistoryUpdates"])
        return received


def test_live_events_come_per_source_then_final(
    peer_sources: list[dict[str, Any]], make_settings: Any
) -> None:
    with TestClient(dev_app(make_settings(peer_sources))) as client:
        received = events(client, {"patient": {"id": "PA-001"}, "freshness": "LIVE"})
    *answers, final_event = received
    assert [e["phase"] for e in answers] == ["SOURCE"] * len(answers) and final_event["phase"] == "FINAL"
    # Sources answering in the same turn come as one event that lists them all.
    answered = [[s["id"] for s in e["answeredSources"]] for e in answers]
    assert sorted(s for ids in answered for s in ids) == ["hosp-a", "hosp-b", "hosp-c"]
    assert [e["source"]["id"] for e in answers] == [ids[-1] for ids in answered]
    # Each event carries the history so far: the sources answered up to then.
    counts = [len(e["history"]["sources"]) for e in received]
    assert counts == [sum(len(ids) for ids in answered[: i + 1]) for i in range(len(answers))] + [3]
    final = received[-1]["history"]
    assert final["complete"] is True
    assert len(final["exams"]) == 3


def test_cache_event_first_then_the_sources_not_cached(
    peer_sources: list[dict[str, Any]], make_settings: Any
) -> None:
    with TestClient(dev_app(make_settings(peer_sources))) as client:
        warm = client.post(
            "/graphql", json={"query": '{ patientHistory(patient: {id: "PA-001"}) { complete } }'}
        )
        assert warm.json()["data"]["patientHistory"]["complete"] is True
        assert client.post("/graphql", json={"query": PURGE}).json()["data"]["purgeCache"]["purged"] == 1
        received = events(client, {"patient": {"id": "PA-001"}})
    assert [e["phase"] for e in received] == ["CACHE", "SOURCE", "FINAL"]
    cached = {s["source"]["id"]: s["cached"] for s in received[0]["history"]["sources"]}
    assert cached == {"hosp-a": True, "hosp-c": True}
    assert received[1]["source"]["id"] == "hosp-b"
    final = received[-1]["history"]
    assert {s["source"]["id"]: s["cached"] for s in final["sources"]} == {
        "hosp-a": True,
        "hosp-b": False,
        "hosp-c": True,
    }
    assert len(final["exams"]) == 3


def test_protocol_violations_close_the_socket(make_settings: Any) -> None:
    with TestClient(dev_app(make_settings([]))) as client:
        with client.websocket_connect("/graphql", subprotocols=["graphql-transport-ws"]) as ws:
            ws.send_json({"id": "1", "type": "subscribe", "payload": {"query": SUBSCRIPTION}})
            with pytest.raises(WebSocketDisconnect) as closed:
                ws.receive_json()
        assert closed.value.code == 4401
        with client.websocket_connect("/graphql", subprotocols=["graphql-transport-ws"]) as ws:
            ws.send_json({"type": "connection_init"})
            ws.receive_json()
            ws.send_json({"id": "1", "type": "subscribe", "payload": {"query": "subscription { nope }"}})
            error = ws.receive_json()
        assert error["type"] == "error"
        assert error["payload"][0]["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"


def test_one_connection_runs_a_bounded_number_of_operations(make_settings: Any) -> None:
    with SilentListener() as silent:
        hung = {"id": "hung", "kind": "dicomweb", "url": f"http://127.0.0.1:{silent.port}/dicom-web"}
        with (
            TestClient(dev_app(make_settings([hung]))) as client,
            client.websocket_connect("/graphql", subprotocols=["graphql-transport-ws"]) as ws,
        ):
            ws.send_json({"type": "connection_init"})
            assert ws.receive_json()["type"] == "connection_ack"
            subscription = {
                "query": SUBSCRIPTION,
                "variables": {"patient": {"id": "PA-001"}, "freshness": "LIVE"},
            }
            for n in range(MAX_OPERATIONS + 1):
                ws.send_json({"id": str(n), "type": "subscribe", "payload": subscription})
            refused = ws.receive_json()
            assert refused["id"] == str(MAX_OPERATIONS)
            assert refused["payload"][0]["extensions"]["code"] == "TOO_MANY_OPERATIONS"
            for n in range(MAX_OPERATIONS):
                ws.send_json({"id": str(n), "type": "complete"})
