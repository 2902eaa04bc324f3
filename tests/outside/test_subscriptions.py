"""Subscriptions on the installed product: `pacsfed serve` and `pacsfed demo` as processes of a clean
install, subscribed to by the reference JavaScript client (graphql-ws over ws) and by gql over websockets.

starlette's TestClient bypasses uvicorn, so only a real process shows that the installed server
has a WebSocket library (without one, uvicorn answers every upgrade 400) and what it logs.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gql import Client, GraphQLRequest
from gql.transport.websockets import WebsocketsTransport

from pacsfed.demo.signer import DemoSigner

SUBSCRIPTION = """
subscription($patient: PatientInput!) {
  patientHistoryUpdates(patient: $patient, deadlineMs: 10000, freshness: LIVE) {
    phase
    source { id }
    history { complete exams { studyInstanceUid } sources { source { id } status } }
  }
}
"""
MARKER = "QS-MARKER-7f3a"
"""Stands for patient data in a query string: it must never reach the server's log."""


def _node_subscribe(js: Path, url: str, token: str, variables: dict[str, Any]) -> dict[str, Any]:
    """Run tests/outside/js/subscribe.mjs (graphql-ws + ws) once: the events, and the error if any."""
    result = subprocess.run(
        ["node", str(js / "subscribe.mjs"), url, f"Bearer {token}", SUBSCRIPTION, json.dumps(variables)],
        capture_output=True,
        text=True,
        timeout=200,
        check=False,
        cwd=js,
    )
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    assert lines, f"graphql-ws printed nothing (exit {result.returncode}): {result.stderr[-2000:]}"
    answer: dict[str, Any] = {"events": [line["payload"] for line in lines if line["event"] == "next"]}
    errors = [line for line in lines if line["event"] in ("error", "closed", "timeout")]
    if not any(line["event"] == "complete" for line in lines) and errors:
        answer["error"] = errors[0]
    return answer


def _final(events: list[dict[str, Any]]) -> dict[str, Any]:
    phases = [event["data"]["patientHistoryUpdates"]["phase"] for event in events]
    assert phases and phases[-1] == "FINAL", phases
    history: dict[str, Any] = events[-1]["data"]["patientHistoryUpdates"]["history"]
    return history


async def _gql_subscribe(url: str, token: str, variables: dict[str, Any]) -> list[dict[str, Any]]:
    transport = WebsocketsTransport(url=url, init_payload={"Authorization": f"Bearer {token}"})
    request = GraphQLRequest(SUBSCRIPTION, variable_values=variables)
    async with Client(transport=transport, fetch_schema_from_transport=False) as session:
        return [{"data": result} async for result in session.subscribe(request)]


def test_graphql_ws_and_gql_subscribe_to_a_served_pacsfed(
    pacsfed_server: Callable[..., Any],
    serve_config: Callable[..., dict[str, Any]],
    signer: DemoSigner,
    orthanc_c: Any,
    js_clients: Path,
) -> None:
    server = pacsfed_server(
        serve_config([{"id": "hosp-c", "kind": "dicomweb", "url": orthanc_c.dicomweb_url}])
    )
    variables = {"patient": {"id": "PA-001"}}

    answer = _node_subscribe(js_clients, f"{server.ws_url}?patient={MARKER}", signer.token(), variables)
    assert "error" not in answer, answer
    history = _final(answer["events"])
    assert history["complete"] and history["exams"], history
    assert history["sources"] == [{"source": {"id": "hosp-c"}, "status": "OK"}]

    events = asyncio.run(_gql_subscribe(server.ws_url, signer.token(), variables))
    assert _final(events) == history

    log = server.log_text()
    assert "No supported WebSocket library" not in log
    assert '"WebSocket /graphql" [accepted]' in log, log[-3000:]  # uvicorn logged the upgrade ...
    assert MARKER not in log  # ... without its query string


def test_graphql_ws_subscribes_to_the_demo(pacsfed_server: Callable[..., Any], js_clients: Path) -> None:
    demo = pacsfed_server(demo=True)
    answer = _node_subscribe(
        js_clients, f"{demo.ws_url}?patient={MARKER}", demo.demo_token(), {"patient": {"id": "DEMO-001"}}
    )
    assert "error" not in answer, answer
    history = _final(answer["events"])
    assert history["exams"] and all(s["status"] == "OK" for s in history["sources"]), history
    assert MARKER not in demo.log_text()


DELTA_SUBSCRIPTION = """
subscription($patient: PatientInput!) {
  patientHistoryUpdates(patient: $patient, deadlineMs: 10000, freshness: LIVE, delta: true) {
    phase
    source { id }
    answeredSources { id }
    history { complete exams { studyInstanceUid locations { source { id } } } sources { source { id } } }
  }
}
"""


async def _gql_events(url: str, token: str, query: str, variables: dict[str, Any]) -> list[dict[str, Any]]:
    transport = WebsocketsTransport(url=url, init_payload={"Authorization": f"Bearer {token}"})
    request = GraphQLRequest(query, variable_values=variables)
    async with Client(transport=transport, fetch_schema_from_transport=False) as session:
        return [result["patientHistoryUpdates"] async for result in session.subscribe(request)]


def test_gql_subscribes_with_delta_to_a_served_pacsfed(
    pacsfed_server: Callable[..., Any],
    serve_config: Callable[..., dict[str, Any]],
    signer: DemoSigner,
    orthanc_a: Any,
    orthanc_c: Any,
) -> None:
    sources = [
        {"id": "hosp-a", "kind": "dicomweb", "url": orthanc_a.dicomweb_url},
        {"id": "hosp-c", "kind": "dicomweb", "url": orthanc_c.dicomweb_url},
    ]
    server = pacsfed_server(serve_config(sources))
    variables = {"patient": {"id": "PA-001"}}
    events = asyncio.run(_gql_events(server.ws_url, signer.token(), DELTA_SUBSCRIPTION, variables))
    *source_events, final = events
    assert final["phase"] == "FINAL" and final["answeredSources"] == [], final
    assert final["history"]["complete"], final
    exams = {
        e["studyInstanceUid"]: {loc["source"]["id"] for loc in e["locations"]}
        for e in final["history"]["exams"]
    }
    assert set().union(*exams.values()) == {"hosp-a", "hosp-c"}
    answered: list[str] = []
    for event in source_events:
        covered = [s["id"] for s in event["answeredSources"]]
        assert event["phase"] == "SOURCE" and covered and event["source"]["id"] == covered[-1], event
        answered += covered
        assert {s["source"]["id"] for s in event["history"]["sources"]} == set(answered)
        # Only the exams this event added or changed: those held by a source it covers.
        delta = {e["studyInstanceUid"] for e in event["history"]["exams"]}
        assert delta == {uid for uid, held in exams.items() if held & set(covered)}, event
    assert sorted(answered) == ["hosp-a", "hosp-c"]
