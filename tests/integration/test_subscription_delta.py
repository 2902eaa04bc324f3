"""Progressive updates that grow with N, against the real peers: delta events and coalescing.

A slow reader is a WebSocket client that has not finished reading the previous event: here the
ASGI ``send`` of each message waits until the test has read it, as a socket's does when the
client's buffers are full.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from dev_app import dev_app
from starlette.testclient import TestClient

pytestmark = pytest.mark.integration

SUBSCRIPTION = """
subscription($patient: PatientInput!, $delta: Boolean) {
  patientHistoryUpdates(patient: $patient, deadlineMs: 10000, freshness: LIVE, delta: $delta) {
    phase
    source { id }
    answeredSources { id }
    history { complete exams { studyInstanceUid locations { source { id } } } sources { source { id } status } }
  }
}
"""
ONE_SHOT = """{ patientHistory(patient: {id: "PA-001"}, deadlineMs: 5000, freshness: LIVE) {
  complete exams { studyInstanceUid } } }"""
ALL = {"hosp-a", "hosp-b", "hosp-c"}


def _events(client: TestClient, variables: dict[str, Any]) -> list[dict[str, Any]]:
    with client.websocket_connect("/graphql", subprotocols=["graphql-transport-ws"]) as ws:
        ws.send_json({"type": "connection_init"})
        assert ws.receive_json() == {"type": "connection_ack"}
        ws.send_json(
            {"id": "1", "type": "subscribe", "payload": {"query": SUBSCRIPTION, "variables": variables}}
        )
        received = []
        while (message := ws.receive_json())["type"] != "complete":
            assert message["type"] == "next" and "errors" not in message["payload"], message
            received.append(message["payload"]["data"]["patientHistoryUpdates"])
        return received


def _answered(event: dict[str, Any]) -> list[str]:
    return [s["id"] for s in event["answeredSources"]]


def _held_at(exam: dict[str, Any]) -> set[str]:
    return {location["source"]["id"] for location in exam["locations"]}


def test_delta_source_events_hold_only_the_exams_they_added_or_changed(
    peer_sources: list[dict[str, Any]], make_settings: Any
) -> None:
    with TestClient(dev_app(make_settings(peer_sources))) as client:
        received = _events(client, {"patient": {"id": "PA-001"}, "delta": True})
    *sources, final = received
    assert final["phase"] == "FINAL" and final["answeredSources"] == [] and final["history"]["complete"]
    exams = {exam["studyInstanceUid"]: exam for exam in final["history"]["exams"]}
    assert len(exams) == 3  # SHARED-CT (hosp-a and hosp-b), A-MR (hosp-a), C-US (hosp-c)
    answered: list[str] = []
    for event in sources:
        assert event["phase"] == "SOURCE"
        assert event["source"]["id"] == _answered(event)[-1]
        answered += _answered(event)
        # Its sources stay complete: every source answered so far, with its status.
        assert {s["source"]["id"] for s in event["history"]["sources"]} == set(answered)
        # Its exams: exactly those held by a source it covers (added, or given a location).
        expected = {uid for uid, exam in exams.items() if _held_at(exam) & set(_answered(event))}
        assert {e["studyInstanceUid"] for e in event["history"]["exams"]} == expected
    assert sorted(answered) == sorted(ALL)  # each source in exactly one SOURCE event
    # Without delta the same events carry the whole history so far.
    with TestClient(dev_app(make_settings(peer_sources))) as client:
        whole = _events(client, {"patient": {"id": "PA-001"}, "delta": False})
    assert whole[-2]["phase"] == "SOURCE" and len(whole[-2]["history"]["exams"]) == 3


class _SlowReader:
    """The client side of one in-process WebSocket whose every message waits until it is read."""

    def __init__(self) -> None:
        self.inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.outbox: asyncio.Queue[tuple[dict[str, Any], asyncio.Event]] = asyncio.Queue()

    async def send(self, message: dict[str, Any]) -> None:
        read = asyncio.Event()
        await self.outbox.put((message, read))
        await read.wait()

    async def next_message(self, *, hold: bool = False) -> tuple[dict[str, Any], asyncio.Event]:
        """The next message; unless ``hold``, read at once (the server may send the next one)."""
        message, read = await asyncio.wait_for(self.outbox.get(), timeout=60)
        if not hold:
            read.set()
        return message, read

    async def put_text(self, payload: dict[str, Any]) -> None:
        await self.inbox.put({"type": "websocket.receive", "text": json.dumps(payload)})


async def test_a_slow_reader_gets_one_event_for_every_source_that_answered_meanwhile(
    peer_sources: list[dict[str, Any]], make_settings: Any
) -> None:
    app = dev_app(make_settings(peer_sources))
    async with LifespanManager(app) as manager:
        reader = _SlowReader()
        scope = {
            "type": "websocket",
            "asgi": {"version": "3.0"},
            "scheme": "ws",
            "path": "/graphql",
            "raw_path": b"/graphql",
            "root_path": "",
            "query_string": b"",
            "headers": [(b"host", b"testserver")],
            "subprotocols": ["graphql-transport-ws"],
            "client": ("127.0.0.1", 1),
            "server": ("testserver", 80),
        }
        serving = asyncio.ensure_future(manager.app(scope, reader.inbox.get, reader.send))
        try:
            await reader.inbox.put({"type": "websocket.connect"})
            assert (await reader.next_message())[0]["type"] == "websocket.accept"
            await reader.put_text({"type": "connection_init"})
            await reader.next_message()  # connection_ack
            variables = {"patient": {"id": "PA-001"}, "delta": True}
            payload = {"query": SUBSCRIPTION, "variables": variables}
            await reader.put_text({"id": "1", "type": "subscribe", "payload": payload})
            message, read = await reader.next_message(hold=True)  # the first event, read slowly
            first = json.loads(message["text"])["payload"]["data"]["patientHistoryUpdates"]
            # Meanwhile every source answers: a one-shot query joins the requests in flight (or, if
            # they are done already, asks again) and returns once all have answered.
            transport = httpx.ASGITransport(app=manager.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
                body = (await client.post("/graphql", json={"query": ONE_SHOT})).json()
            assert body["data"]["patientHistory"]["complete"], body
            read.set()
            events = [first]
            while True:
                message, _ = await reader.next_message()
                sent = json.loads(message["text"])
                if sent["type"] == "complete":
                    break
                assert sent["type"] == "next" and "errors" not in sent["payload"], sent
                events.append(sent["payload"]["data"]["patientHistoryUpdates"])
        finally:
            await reader.inbox.put({"type": "websocket.disconnect", "code": 1000})
            await asyncio.wait_for(serving, timeout=30)
    assert [e["phase"] for e in events][-1] == "FINAL"
    source_events = [e for e in events if e["phase"] == "SOURCE"]
    # One event for the first answer(s), then one for all the others: never one event per source.
    assert len(source_events) <= 2, [_answered(e) for e in source_events]
    assert sorted(s for e in source_events for s in _answered(e)) == sorted(ALL)
    # Which event holds two answers depends on how many came before the first was built (on a
    # loaded machine, two may): at least one event covers several sources, each names the last.
    assert max(len(_answered(e)) for e in source_events) >= 2
    assert all(e["source"]["id"] == _answered(e)[-1] for e in source_events)
    assert len(events[-1]["history"]["exams"]) == 3  # FINAL: the whole history
