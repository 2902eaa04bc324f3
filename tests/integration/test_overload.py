"""Overload is pacsfed's, never a hospital's: BUSY, stale cached answers, OVERLOADED, cache reads under load."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import httpx
import pytest
from dev_app import dev_app
from fakes import SilentListener, closed_port
from starlette.testclient import TestClient

from federation.cache import CachedAnswer, ElasticsearchExamCache
from federation.engine import HistoryRequest
from federation.models import Freshness, PatientQuery
from federation.settings import Settings
from integration.gql import graphql, running_app
from pacsfed.app import engine_from_settings

pytestmark = pytest.mark.integration

QUERY = """
query History($patient: PatientInput!, $deadlineMs: Int, $freshness: Freshness) {
  patientHistory(patient: $patient, deadlineMs: $deadlineMs, freshness: $freshness) {
    complete cacheStatus warnings
    exams { studyInstanceUid cachedAt locations { source { id } cachedAt } }
    sources { source { id } status examCount error cached staleCachedAt }
  }
}
"""


def _hung(port: int, **extra: Any) -> dict[str, Any]:
    """A DIMSE source that accepts and never answers (a fake: no real PACS hangs on demand)."""
    return {"id": "hung", "kind": "dimse", "host": "127.0.0.1", "port": port, "called_ae": "HUNG", **extra}


def _with_server(settings: Settings, **server: Any) -> Settings:
    return settings.model_copy(update={"server": settings.server.model_copy(update=server)})


async def _ask(client: httpx.AsyncClient, patient_id: str, **variables: Any) -> dict[str, Any]:
    body = await graphql(client, QUERY, patient={"id": patient_id}, **variables)
    assert "errors" not in body, body["errors"]
    history: dict[str, Any] = body["data"]["patientHistory"]
    return history


def _by_source(history: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["source"]["id"]: s for s in history["sources"]}


async def _until(condition: Any, what: str) -> None:
    """Wait (bounded) until ``condition()`` holds: an ordering, not a timing assertion."""
    for _ in range(3000):  # a bound for a loaded machine, not a timing assertion
        if await condition():
            return
        await asyncio.sleep(0.01)
    pytest.fail(f"never: {what}")


async def test_a_source_without_a_free_slot_is_busy_and_its_breaker_stays_closed(
    peer_sources: list[dict[str, Any]], make_settings: Any
) -> None:
    hung_source = _hung(0, max_concurrency=1, circuit={"failures": 1, "reset_s": 60})
    with SilentListener() as silent:
        hung_source["port"] = silent.port
        async with running_app(make_settings([*peer_sources, hung_source])) as client:
            holder = asyncio.create_task(_ask(client, "PA-001", deadlineMs=8000, freshness="LIVE"))

            async def connected() -> bool:
                return len(silent.fds()) >= 2  # the listener and the first query's connection

            await _until(connected, "the first query holds the hung source's only slot")
            busy = await _ask(client, "PA-002", deadlineMs=2000, freshness="LIVE")
            ready_busy = (await client.get("/readyz")).json()
            timed_out = await holder
            ready_after = (await client.get("/readyz")).json()
    sources = _by_source(busy)
    assert sources["hung"]["status"] == "BUSY"
    assert "max_concurrency" in sources["hung"]["error"]
    assert {sources[s]["status"] for s in ("hosp-a", "hosp-b", "hosp-c")} == {"OK"}
    # Waiting for pacsfed's own slot is not the hospital's failure: one failure would open it.
    assert ready_busy["circuits"]["hung"] == "CLOSED"
    assert ready_busy["status"] == "degraded"
    assert "BUSY" in ready_busy["reason"]
    assert ready_busy["load"]["sources_busy"] >= 1
    # The hospital's own silence is its failure: counted, logged and shown.
    assert _by_source(timed_out)["hung"]["status"] in ("TIMEOUT", "UNREACHABLE")  # its ACSE timeout
    assert ready_after["circuits"]["hung"] == "OPEN"
    assert ready_after["load"]["circuit_transitions"] == {"hung": {"CLOSED->OPEN": 1}}


async def test_older_cached_answers_are_served_where_a_source_cannot_answer_but_never_for_live(
    peer_sources: list[dict[str, Any]], make_settings: Any
) -> None:
    hosp_c = next(s for s in peer_sources if s["id"] == "hosp-c")
    # Up to 10 s for the write (not 0.5): a loaded machine's first write to a fresh index can say PENDING.
    async with running_app(make_settings([hosp_c], write_wait_s=10)) as client:
        first = await _ask(client, "PA-001", freshness="LIVE")
    assert first["cacheStatus"] == "OK" and first["exams"]
    # The same hospital, now down, its cached answer past its ttl_s: stale, but better than nothing.
    down = {**hosp_c, "url": f"http://127.0.0.1:{closed_port()}/dicom-web", "ttl_s": 0}
    down["circuit"] = {"failures": 1, "reset_s": 60}
    async with running_app(make_settings([down])) as client:
        failing = await _ask(client, "PA-001", freshness="CACHE_THEN_REFRESH")
        skipped = await _ask(client, "PA-001", freshness="CACHE_THEN_REFRESH")
        live = await _ask(client, "PA-001", freshness="LIVE")
        ready = (await client.get("/readyz")).json()
    uids = sorted(e["studyInstanceUid"] for e in first["exams"])
    for history, status in ((failing, "UNREACHABLE"), (skipped, "SKIPPED")):
        (outcome,) = history["sources"]
        assert outcome["status"] == status
        assert outcome["staleCachedAt"] is not None
        assert outcome["cached"] is False
        assert outcome["examCount"] == len(uids)
        assert sorted(e["studyInstanceUid"] for e in history["exams"]) == uids
        assert all(e["cachedAt"] == outcome["staleCachedAt"] for e in history["exams"])
        assert history["complete"] is False
    (live_outcome,) = live["sources"]
    assert live_outcome["status"] == "SKIPPED" and live_outcome["staleCachedAt"] is None
    assert live["exams"] == []
    assert ready["load"]["stale_answers_served"] == 2


async def test_past_max_pending_queries_a_query_is_refused_at_once_with_503_and_retry_after(
    peer_sources: list[dict[str, Any]], make_settings: Any
) -> None:
    with SilentListener() as silent:
        settings = _with_server(make_settings([*peer_sources, _hung(silent.port)]), max_pending_queries=1)
        async with running_app(settings) as client:
            holder = asyncio.create_task(_ask(client, "PA-001", deadlineMs=3000, freshness="LIVE"))

            async def pending() -> bool:
                return bool((await client.get("/readyz")).json()["load"]["pending_queries"] == 1)

            await _until(pending, "the first query is in progress")
            body = {"query": QUERY, "variables": {"patient": {"id": "PA-002"}}}
            refused = await client.post("/graphql", json=body)
            strict = await client.post(
                "/graphql", json=body, headers={"accept": "application/graphql-response+json"}
            )
            fhir = await client.get("/fhir/ImagingStudy", params={"patient.identifier": "PA-002"})
            ready = (await client.get("/readyz")).json()
            await holder
            after = await _ask(client, "PA-002", deadlineMs=3000)
    assert fhir.status_code == 503 and 1 <= int(fhir.headers["retry-after"]) <= 10
    assert "OVERLOADED" in fhir.text
    for response in (refused, strict):
        assert response.status_code == 503
        assert 1 <= int(response.headers["retry-after"]) <= 10
        (error,) = response.json()["errors"]
        assert error["extensions"]["code"] == "OVERLOADED"
    assert ready["status"] == "degraded" and "OVERLOADED" in ready["reason"]
    assert ready["load"]["queries_refused"] == 3
    assert _by_source(after)["hosp-a"]["status"] == "OK"  # the place came back


async def test_past_max_pending_queries_a_request_is_refused_before_its_body_is_read(
    peer_sources: list[dict[str, Any]], make_settings: Any
) -> None:
    with SilentListener() as silent:
        settings = _with_server(make_settings([*peer_sources, _hung(silent.port)]), max_pending_queries=1)
        async with running_app(settings) as client:
            holder = asyncio.create_task(_ask(client, "PA-001", deadlineMs=3000, freshness="LIVE"))

            async def pending() -> bool:
                return bool((await client.get("/readyz")).json()["load"]["requests_in_progress"] == 1)

            await _until(pending, "the first query is in progress")
            # Not JSON at all: read and parsed, it would be a 400; refused unread, it is the 503.
            unread = await client.post(
                "/graphql", content=b"{not json", headers={"content-type": "application/json"}
            )
            fhir = await client.get("/fhir/ImagingStudy", params={"patient.identifier": "PA-002"})
            metadata = await client.get("/fhir/metadata")
            await holder
            ready = (await client.get("/readyz")).json()
            bad = await client.post(
                "/graphql", content=b"{not json", headers={"content-type": "application/json"}
            )
    assert unread.status_code == 503 and 1 <= int(unread.headers["retry-after"]) <= 10
    (error,) = unread.json()["errors"]
    assert error["extensions"]["code"] == "OVERLOADED" and error["extensions"]["requestId"]
    assert fhir.status_code == 503 and "OVERLOADED" in fhir.text
    assert metadata.status_code == 200  # the capability statement runs no query
    assert ready["load"]["requests_in_progress"] == 0 and ready["load"]["queries_refused"] == 2
    assert bad.status_code == 400  # the place came back: read and refused for what it is


def test_a_subscription_past_max_pending_queries_gets_an_overloaded_error_message(
    peer_sources: list[dict[str, Any]], make_settings: Any
) -> None:
    subscription = (
        "subscription($p: PatientInput!) { patientHistoryUpdates(patient: $p, deadlineMs: 3000,"
        " freshness: LIVE) { phase } }"
    )
    with SilentListener() as silent:
        settings = _with_server(make_settings([_hung(silent.port)]), max_pending_queries=1)
        with (
            TestClient(dev_app(settings)) as client,
            client.websocket_connect("/graphql", subprotocols=["graphql-transport-ws"]) as ws,
        ):
            ws.send_json({"type": "connection_init"})
            assert ws.receive_json() == {"type": "connection_ack"}
            first = {"query": subscription, "variables": {"p": {"id": "PA-001"}}}
            ws.send_json({"id": "1", "type": "subscribe", "payload": first})
            for _ in range(1000):
                if client.get("/readyz").json()["load"]["pending_queries"] == 1:
                    break
                time.sleep(0.01)
            second = {"query": subscription, "variables": {"p": {"id": "PA-002"}}}
            ws.send_json({"id": "2", "type": "subscribe", "payload": second})
            # Not GraphQL at all: parsed, it would be a syntax error; refused unparsed, OVERLOADED.
            ws.send_json({"id": "3", "type": "subscribe", "payload": {"query": "subscription {"}})
            messages: dict[str, dict[str, Any]] = {}
            while not {"2", "3"} <= messages.keys():
                message = ws.receive_json()
                messages[message.get("id", "")] = message
    for op_id in ("2", "3"):
        assert messages[op_id]["type"] == "error", messages[op_id]
        assert messages[op_id]["payload"][0]["extensions"]["code"] == "OVERLOADED"


async def test_a_cache_not_read_while_saturated_sends_no_source_live_and_is_reported_unavailable(
    peer_sources: list[dict[str, Any]], make_settings: Any, expendable_elasticsearch: Any
) -> None:
    elasticsearch = expendable_elasticsearch  # frozen below: not the node the other tests share
    with SilentListener() as silent:
        sources = [*peer_sources, _hung(silent.port)]
        settings = _with_server(make_settings(sources, url=elasticsearch.url), max_pending_queries=4)
        async with running_app(settings) as client:
            await _ask(client, "PA-001", freshness="LIVE", deadlineMs=1000)  # the cache was written once
            holders = [
                asyncio.create_task(_ask(client, pid, deadlineMs=30_000, freshness="LIVE"))
                for pid in ("PA-002", "PA-003", "PA-004")
            ]

            async def saturated() -> bool:
                return bool((await client.get("/readyz")).json()["load"]["pending_queries"] == 3)

            await _until(saturated, "three queries wait for the hung source")
            try:
                with elasticsearch.frozen():  # unresponsive, as a node in a long GC pause
                    unread = await _ask(client, "PA-001", deadlineMs=5000)
                    ready = (await client.get("/readyz")).json()  # answered, not held by the frozen node
            finally:
                for holder in holders:
                    holder.cancel()
                await asyncio.gather(*holders, return_exceptions=True)
    assert {s["status"] for s in unread["sources"]} == {"BUSY"}
    assert all("cache could not be read" in s["error"] for s in unread["sources"])
    assert unread["cacheStatus"] == "UNAVAILABLE"
    assert "the cache could not be read" in unread["warnings"]
    assert ready["status"] == "degraded" and ready["cache"]["status"] == "UNAVAILABLE"
    assert ready["cache"]["detail"] == "no answer within 1 s"


class _LoopHoggingCache(ElasticsearchExamCache):
    """The real cache, read while something else holds the event loop (a saturated process)."""

    async def cached_answers(self, query: PatientQuery, source_ids: Sequence[str]) -> dict[str, CachedAnswer]:
        time.sleep(1.2)
        return await super().cached_answers(query, source_ids)


async def test_time_the_event_loop_was_busy_is_not_held_against_the_cache_read(
    peer_sources: list[dict[str, Any]], make_settings: Any
) -> None:
    settings = make_settings(peer_sources)
    patient = PatientQuery(patient_id="PA-001")
    async with engine_from_settings(settings, _LoopHoggingCache(settings.cache)) as engine:
        await engine.patient_history(patient, HistoryRequest(freshness=Freshness.LIVE))
        cached = await engine.patient_history(patient, HistoryRequest(freshness=Freshness.CACHE_THEN_REFRESH))
    assert [o.cached for o in cached.sources] == [True, True, True]
    assert "the cache could not be read" not in cached.warnings
