"""The audit trail against a real Elasticsearch: shipping, outages, replays and retention."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from elasticsearch import AsyncElasticsearch

from federation.audit.elasticsearch import ElasticsearchAuditSink
from federation.audit.journal import AuditJournal
from federation.audit.records import AuditAction, AuditOutcome, AuditRecord
from federation.audit.trail import JournaledAuditTrail, build_audit_trail
from federation.elasticsearch import make_client
from federation.settings import CacheSettings, settings_from_mapping

pytestmark = pytest.mark.integration


def make_record(
    n: int, patient: str = "PA-001^^^HOSP_A", actor: str = "user:alice", **more: Any
) -> AuditRecord:
    return AuditRecord(
        action=AuditAction.PATIENT_QUERY,
        outcome=AuditOutcome.SUCCESS,
        actor=actor,
        client_address="10.0.0.7",
        patient_ids=[patient],
        sources=["hosp-a"],
        exam_count=n,
        **more,
    )


def stored_ids(url: str, index_prefix: str) -> list[str]:
    """Every audit document id under the prefix (duplicates would show up twice)."""
    pattern = f"{index_prefix}-audit-*"
    httpx.post(f"{url}/{pattern}/_refresh", timeout=10).raise_for_status()
    response = httpx.post(
        f"{url}/{pattern}/_search",
        json={"size": 10_000, "_source": False, "query": {"match_all": {}}},
        timeout=10,
    )
    response.raise_for_status()
    return [hit["_id"] for hit in response.json()["hits"]["hits"]]


@pytest.fixture
async def es_client(elasticsearch: Any) -> AsyncIterator[AsyncElasticsearch]:
    client = make_client(CacheSettings(url=elasticsearch.url))
    yield client
    await client.close()


def trail(journal_dir: Path, client: AsyncElasticsearch, index_prefix: str) -> JournaledAuditTrail:
    sink = ElasticsearchAuditSink(client, index_prefix, retention_days=3653)
    return JournaledAuditTrail(AuditJournal(journal_dir), [sink], ship_interval_s=0.1, backoff_max_s=1.0)


async def flushed(audit: JournaledAuditTrail, within_s: float = 60.0) -> bool:
    """Flush until every sink has caught up (a node just restarted may refuse for a moment)."""
    deadline = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=within_s)
    while dt.datetime.now(dt.UTC) < deadline:
        if await audit.flush(5.0):
            return True
    return False


async def test_records_are_shipped_to_a_strict_monthly_index_and_searchable(
    tmp_path: Path, es_client: AsyncElasticsearch, elasticsearch: Any, index_prefix: str
) -> None:
    settings = settings_from_mapping(
        {
            "cache": {"url": elasticsearch.url, "index_prefix": index_prefix},
            "audit": {"journal_dir": str(tmp_path / "journal"), "ship_interval_s": 0.1},
        }
    )
    audit = build_audit_trail(settings, es_client)
    await audit.start()
    try:
        a = make_record(1, "PA-001^^^HOSP_A")
        b = make_record(2, "PA-001^^^HOSP_B", actor="user:bob")
        c = make_record(3, "PA-002^^^HOSP_A")
        for record in (a, b, c):
            await audit.record(record)
        assert await flushed(audit)
        assert sorted(stored_ids(elasticsearch.url, index_prefix)) == sorted(r.id for r in (a, b, c))
        index = f"{index_prefix}-audit-{a.at:%Y.%m}"
        mapping = httpx.get(f"{elasticsearch.url}/{index}/_mapping", timeout=10).json()
        assert mapping[index]["mappings"]["dynamic"] == "strict"
        assert [r.id for r in await audit.search(patient_id="PA-001")] == [b.id, a.id]
        assert [r.id for r in await audit.search(patient_id="PA-001^^^HOSP_A")] == [a.id]
        assert [r.id for r in await audit.search(actor="user:bob")] == [b.id]
        found = (await audit.search(patient_id="PA-002"))[0]
        assert found.model_dump(exclude={"journal", "seq"}) == c.model_dump(exclude={"journal", "seq"})
        assert (found.journal, found.seq) == (audit.journal.journal_id, 3)
    finally:
        await audit.aclose()


async def test_nothing_is_lost_while_elasticsearch_is_down(
    tmp_path: Path, expendable_elasticsearch: Any, index_prefix: str
) -> None:
    elasticsearch = expendable_elasticsearch  # stopped below: not the node the other tests share
    es_client = make_client(CacheSettings(url=elasticsearch.url))
    audit = trail(tmp_path / "journal", es_client, index_prefix)
    await audit.start()
    try:
        before = make_record(0)
        await audit.record(before)
        assert await flushed(audit)
        elasticsearch.stop()
        try:
            during = [make_record(n) for n in range(1, 26)]
            for record in during:
                await audit.record(record)  # the journal alone: recording never waits for Elasticsearch
            assert not await audit.flush(3.0)
            assert audit.sink_status() == {"elasticsearch": False}
            # Searching still works, from the local journal.
            found = await audit.search(patient_id="PA-001", first=100)
            assert {r.id for r in found} == {r.id for r in [before, *during]}
        finally:
            elasticsearch.start()
        assert await flushed(audit)
        ids = stored_ids(elasticsearch.url, index_prefix)
        assert sorted(ids) == sorted(r.id for r in [before, *during])  # each exactly once
    finally:
        await audit.aclose()
        await es_client.close()


async def test_a_new_process_replays_the_journal_and_a_replay_stores_nothing_twice(
    tmp_path: Path, es_client: AsyncElasticsearch, elasticsearch: Any, index_prefix: str
) -> None:
    journal_dir = tmp_path / "journal"
    dead = make_client(CacheSettings(url="http://127.0.0.1:9", request_timeout_s=0.5))
    first = trail(journal_dir, dead, index_prefix)  # a process whose Elasticsearch never answered
    await first.start()
    records = [make_record(n) for n in range(10)]
    for record in records:
        await first.record(record)
    await first.aclose()
    await dead.close()
    assert stored_ids(elasticsearch.url, index_prefix) == []

    second = trail(journal_dir, es_client, index_prefix)  # the restart
    await second.start()
    try:
        assert await flushed(second)
    finally:
        await second.aclose()
    assert sorted(stored_ids(elasticsearch.url, index_prefix)) == sorted(r.id for r in records)

    # Losing the cursor means shipping everything again: create + 409 keeps one copy each.
    (journal_dir / "cursor-elasticsearch.json").unlink()
    third = trail(journal_dir, es_client, index_prefix)
    await third.start()
    try:
        assert await flushed(third)
    finally:
        await third.aclose()
    assert sorted(stored_ids(elasticsearch.url, index_prefix)) == sorted(r.id for r in records)


async def test_retention_deletes_old_monthly_indices_only(
    es_client: AsyncElasticsearch, elasticsearch: Any, index_prefix: str
) -> None:
    sink = ElasticsearchAuditSink(es_client, index_prefix, retention_days=365)
    await sink.start()
    now = dt.datetime(2026, 12, 2, tzinfo=dt.UTC)
    old = make_record(1, at=dt.datetime(2025, 11, 15, tzinfo=dt.UTC))  # month ended > 365 days ago
    edge = make_record(2, at=dt.datetime(2025, 12, 20, tzinfo=dt.UTC))  # still has records inside retention
    current = make_record(3, at=now)
    await sink.ship([old, edge, current])
    await sink.ship([old])  # shipped twice: the 409 counts as done
    deleted = await sink.delete_expired(now)
    assert deleted == [f"{index_prefix}-audit-2025.11"]
    assert sorted(stored_ids(elasticsearch.url, index_prefix)) == sorted([edge.id, current.id])
    assert await sink.delete_expired(now) == []


# --- clocks set wrong: nothing written is deleted by them -----------------------------------

DAY = 86_400.0


def clocked_trail(
    journal_dir: Path, client: AsyncElasticsearch, index_prefix: str, clock: Any
) -> JournaledAuditTrail:
    """A trail with a 30-day retention everywhere, whose journal reads ``clock``."""
    sink = ElasticsearchAuditSink(client, index_prefix, retention_days=30)
    return JournaledAuditTrail(
        AuditJournal(journal_dir, clock=clock),
        [sink],
        ship_interval_s=0.1,
        backoff_max_s=1.0,
        journal_keep_days=30,
    )


def stamped(n: int, clock: Any) -> AuditRecord:
    """A record made when ``clock`` says (the service stamps records by the system clock)."""
    return make_record(n, at=dt.datetime.fromtimestamp(clock(), dt.UTC))


async def journaled_ids(journal_dir: Path) -> list[str]:
    journal = AuditJournal(journal_dir)
    try:
        return [record.id for record in await journal.recent()]
    finally:
        await journal.aclose()


@pytest.mark.parametrize("ahead_days", [40, 70])
async def test_a_clock_set_ahead_deletes_nothing_from_the_journal_or_elasticsearch(
    tmp_path: Path, es_client: AsyncElasticsearch, elasticsearch: Any, index_prefix: str, ahead_days: int
) -> None:
    journal_dir = tmp_path / "journal"
    first = clocked_trail(journal_dir, es_client, index_prefix, time.time)
    await first.start()
    records = [stamped(n, time.time) for n in range(5)]
    for record in records:
        await first.record(record)
    assert await flushed(first)
    await first.aclose()

    def ahead() -> float:
        return time.time() + ahead_days * DAY

    second = clocked_trail(journal_dir, es_client, index_prefix, ahead)
    await second.start()  # its start-up pass applies retention at once
    try:
        assert await second.maintain() == 0
        await second.record(stamped(9, ahead))  # and records made by the wrong clock age nothing
        assert await flushed(second)
        assert await second.maintain() == 0
    finally:
        await second.aclose()
    ids = {r.id for r in records}
    assert ids <= set(stored_ids(elasticsearch.url, index_prefix))
    assert ids <= set(await journaled_ids(journal_dir))


async def test_a_clock_set_back_then_corrected_deletes_nothing_and_is_journaled(
    tmp_path: Path, es_client: AsyncElasticsearch, elasticsearch: Any, index_prefix: str
) -> None:
    offset = [0.0]

    def clock() -> float:
        return time.time() + offset[0]

    audit = clocked_trail(tmp_path / "journal", es_client, index_prefix, clock)
    await audit.start()
    try:
        await audit.record(stamped(1, clock))
        offset[0] = -120 * DAY  # stepped back: these land in a monthly index months old
        behind = [stamped(n, clock) for n in range(2, 5)]
        for record in behind:
            await audit.record(record)
        assert await flushed(audit)
        offset[0] = 0.0  # corrected: by the clock alone, that old month is past retention
        await audit.maintain()
        found = await audit.search(first=100)
    finally:
        await audit.aclose()
    assert {r.id for r in behind} <= set(stored_ids(elasticsearch.url, index_prefix))
    steps = [r for r in found if r.action is AuditAction.CLOCK_STEP]
    assert len(steps) == 1 and "stepped back" in (steps[0].detail or "")
    assert sorted(r.seq for r in found if r.seq is not None) == [1, 2, 3, 4, 5]
