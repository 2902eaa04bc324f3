"""Write-through to a real Elasticsearch node, and life without it."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import httpx
import pytest

from federation.cache.elasticsearch import ElasticsearchExamCache
from integration.gql import graphql, history, running_app

pytestmark = pytest.mark.integration


def count_documents(url: str, index: str, **term: str) -> int:
    """Documents in ``index`` (after a refresh), optionally filtered by one term."""
    httpx.post(f"{url}/{index}/_refresh", timeout=10).raise_for_status()
    query = {"query": {"term": term}} if term else {"query": {"match_all": {}}}
    response = httpx.post(f"{url}/{index}/_count", json=query, timeout=10)
    response.raise_for_status()
    return int(response.json()["count"])


async def test_two_identical_queries_leave_one_document_per_source_and_study(
    peer_sources: list[dict[str, Any]], make_settings: Any, elasticsearch: Any, index_prefix: str
) -> None:
    async with running_app(make_settings(peer_sources)) as client:
        first = await history(client, "PA-001")
        second = await history(client, "PA-001")
    # The very first bulk on a freshly started node can outlast the 0.5 s write wait (PENDING):
    # the write still lands, which is what the document counts below check.
    assert first["cacheStatus"] in ("OK", "PENDING")
    assert second["cacheStatus"] == "OK"
    index = f"{index_prefix}-cache-exams"  # the read alias over every period's index
    # hosp-a: SHARED-CT + A-MR, hosp-b: SHARED-CT, hosp-c: C-US.
    assert count_documents(elasticsearch.url, index) == 4
    assert count_documents(elasticsearch.url, index, source_id="hosp-a") == 2
    mapping = httpx.get(f"{elasticsearch.url}/{index}/_mapping", timeout=10).json()
    assert [m["mappings"]["dynamic"] for m in mapping.values()] == ["strict"]


async def test_queries_answer_live_while_elasticsearch_is_down_and_writes_resume(
    peer_sources: list[dict[str, Any]], make_settings: Any, expendable_elasticsearch: Any, index_prefix: str
) -> None:
    node = expendable_elasticsearch  # stopped below: not the node the other tests share
    async with running_app(make_settings(peer_sources, url=node.url)) as client:
        await history(client, "PA-002")
        node.stop()
        try:
            down = await history(client, "PA-001")
            ready_down = (await client.get("/readyz")).json()
        finally:
            node.start()
        up, ready_up = await written_again(client, "PA-001")
    assert down["complete"] is True
    assert len(down["exams"]) == 3
    assert down["cacheStatus"] == "UNAVAILABLE"
    assert ready_down["status"] == "degraded" and ready_down["cache"]["status"] == "UNAVAILABLE"
    assert up["complete"] is True and len(up["exams"]) == 3
    assert up["cacheStatus"] == "OK"
    assert ready_up["status"] == "ready"
    index = f"{index_prefix}-cache-exams"
    assert count_documents(node.url, index, query_key="id||PA-001") == 4


async def written_again(
    client: httpx.AsyncClient, patient_id: str, attempts: int = 150
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Ask until an answer is in the cache again and /readyz says ready (or give up and return the last).

    A node just restarted may take the first write past the 0.5 s write wait on a loaded machine
    (``PENDING``): the write goes on, and the next answer says whether it landed.
    """
    for _ in range(attempts):
        up = await history(client, patient_id)
        ready = (await client.get("/readyz")).json()
        if up["cacheStatus"] == "OK" and ready["status"] == "ready":
            break
        await asyncio.sleep(0.2)
    return up, ready


async def test_cache_is_searchable_by_folded_name_and_birth_date(
    peer_sources: list[dict[str, Any]], make_settings: Any, elasticsearch: Any, index_prefix: str
) -> None:
    settings = make_settings(peer_sources)
    async with running_app(settings) as client:
        await history(client, "PA-001")  # Müller^Anna, born 1980-04-12
        await history(client, "PA-003")  # Østergård^Søren
    httpx.post(f"{elasticsearch.url}/{index_prefix}-cache-exams/_refresh", timeout=10).raise_for_status()
    cache = ElasticsearchExamCache(settings.cache)
    try:
        by_name = await cache.search_by_name("MULLER")
        with_birth = await cache.search_by_name("müll", dt.date(1980, 4, 12))
        wrong_birth = await cache.search_by_name("Muller", dt.date(1980, 4, 13))
        danish = await cache.search_by_name("ostergard")
    finally:
        await cache.aclose()
    assert {r.patient_name for r in by_name} == {"Müller^Anna"}
    assert len(by_name) == 4  # one document per source and study
    assert len(with_birth) == 4
    assert wrong_birth == []
    assert {r.patient_name for r in danish} == {"Østergård^Søren"}


PURGE = "mutation($patient: PatientInput!, $source: ID) { purgeCache(patient: $patient, source: $source) { purged } }"


def without_cached_at(exams: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {**e, "locations": [{k: v for k, v in loc.items() if k != "cachedAt"} for loc in e["locations"]]}
        for e in exams
    ]


def cached_at(result: dict[str, Any]) -> list[str]:
    return sorted(loc["cachedAt"] for e in result["exams"] for loc in e["locations"])


async def test_cached_answers_are_served_at_once_then_purged(
    peer_sources: list[dict[str, Any]], make_settings: Any
) -> None:
    async with running_app(make_settings(peer_sources)) as client:
        live = await history(client, "PA-001")
        cached = await history(client, "PA-001")
        only = await history(client, "PA-001", freshness="CACHE_ONLY")
        purged = await graphql(client, PURGE, patient={"id": "PA-001"}, source="hosp-b")
        after_purge = await history(client, "PA-001", freshness="CACHE_ONLY")
    assert not any(s["cached"] for s in live["sources"])
    assert all(s["cached"] and s["cachedAt"] for s in cached["sources"])
    # The second query refreshed in the background: the third may see that newer answer.
    assert without_cached_at(cached["exams"]) == without_cached_at(only["exams"])
    assert cached_at(only) >= cached_at(cached)
    assert [e["studyInstanceUid"] for e in cached["exams"]] == [e["studyInstanceUid"] for e in live["exams"]]
    assert all(loc["cachedAt"] for e in cached["exams"] for loc in e["locations"])
    assert purged == {"data": {"purgeCache": {"purged": 1}}}
    assert {s["source"]["id"]: s["status"] for s in after_purge["sources"]} == {
        "hosp-a": "OK",
        "hosp-b": "NOT_CACHED",
        "hosp-c": "OK",
    }
