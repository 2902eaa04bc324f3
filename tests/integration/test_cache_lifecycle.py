"""The cache's time-based indices on a real node: migration from layout 1, deletion by age, purges across periods."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from elasticsearch import AsyncElasticsearch

from federation.cache.base import document_id
from federation.cache.elasticsearch import (
    ANSWERS_MAPPING,
    MAPPING,
    ElasticsearchExamCache,
    answer_id,
    exam_document,
)
from federation.elasticsearch import make_client
from federation.models import PatientQuery, SourceInfo, StudyRecord
from federation.settings import CacheSettings

pytestmark = pytest.mark.integration

SOURCE = SourceInfo(id="hosp-a", name="Hôpital A", kind="dicomweb")
QUERY = PatientQuery(patient_id="PA-LC1", issuer="HOSP_A")


def study(uid: str) -> StudyRecord:
    return StudyRecord(source_id=SOURCE.id, study_instance_uid=uid, patient_id="PA-LC1", modalities=("CT",))


class Clock:
    """A settable UTC clock for the cache (periods and ages)."""

    def __init__(self, now: dt.datetime) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now


@pytest.fixture
async def client(elasticsearch: Any) -> AsyncIterator[AsyncElasticsearch]:
    client = make_client(CacheSettings(url=elasticsearch.url, request_timeout_s=30))
    yield client
    await client.close()


@pytest.fixture
async def make_cache(
    elasticsearch: Any, index_prefix: str
) -> AsyncIterator[Callable[..., ElasticsearchExamCache]]:
    caches: list[ElasticsearchExamCache] = []

    def make(clock: Clock, **settings: Any) -> ElasticsearchExamCache:
        cache = ElasticsearchExamCache(
            CacheSettings(url=elasticsearch.url, index_prefix=index_prefix, request_timeout_s=30, **settings),
            clock=clock,
        )
        caches.append(cache)
        return cache

    yield make
    for cache in caches:
        await cache.aclose()


async def _lay_out_as_layout_1(client: AsyncElasticsearch, prefix: str, at: dt.datetime) -> None:
    """Indices, templates and documents as the code before time-based indices wrote them."""
    for kind, mapping in (("exams", MAPPING), ("answers", ANSWERS_MAPPING)):
        name = f"{prefix}-{kind}"
        settings = {"number_of_shards": 1, "number_of_replicas": 0}
        await client.indices.put_index_template(
            name=name,
            index_patterns=[name],
            priority=100,
            template={"settings": settings, "mappings": mapping},
        )
        await client.indices.create(index=name, wait_for_active_shards="1")
    await client.index(
        index=f"{prefix}-exams",
        id=document_id(SOURCE.id, "1.2.3.1"),
        document=exam_document(SOURCE, QUERY, study("1.2.3.1"), at),
    )
    await client.index(
        index=f"{prefix}-answers",
        id=answer_id(QUERY.cache_key() or "", SOURCE.id),
        document={
            "query_key": QUERY.cache_key(),
            "source_id": SOURCE.id,
            "answered_at": at.isoformat(),
            "study_uids": ["1.2.3.1"],
            "matches": [{"uid": "1.2.3.1"}],
        },
        refresh="wait_for",
    )


async def test_a_cache_laid_out_as_before_is_read_after_the_upgrade_without_a_reindex(
    client: AsyncElasticsearch, make_cache: Any, index_prefix: str
) -> None:
    before = dt.datetime(2026, 12, 1, 9, tzinfo=dt.UTC)
    await _lay_out_as_layout_1(client, index_prefix, before)
    clock = Clock(dt.datetime(2026, 12, 7, 9, tzinfo=dt.UTC))
    replicas = [make_cache(clock) for _ in range(2)]
    await asyncio.gather(*(cache.start() for cache in replicas))  # two replicas migrate at once
    old = await replicas[1].cached_answers(QUERY, [SOURCE.id])
    assert [r.study_instance_uid for r in old[SOURCE.id].records] == ["1.2.3.1"]
    assert old[SOURCE.id].answered_at == before
    # Layout 1's indices are read through the aliases as they are; their templates are gone.
    assert not await client.indices.exists_index_template(name=f"{index_prefix}-exams")
    aliased = await client.indices.get_alias(name=f"{index_prefix}-cache-exams")
    assert f"{index_prefix}-exams" in aliased
    # A newer answer goes to the current period's index and wins over the old one.
    await replicas[0].store(SOURCE, QUERY, [study("1.2.3.1"), study("1.2.3.2")])
    new = await replicas[1].cached_answers(QUERY, [SOURCE.id])
    assert [r.study_instance_uid for r in new[SOURCE.id].records] == ["1.2.3.1", "1.2.3.2"]
    assert replicas[0].index == f"{index_prefix}-exams-v2-2026.12.07"  # the week of Monday 7 December
    template = (await client.indices.get_index_template(name=f"{index_prefix}-exams-v2"))["index_templates"]
    assert template[0]["index_template"]["version"] == 2
    # Layout 1's index ages out by its newest document, like the others.
    clock.now = before + dt.timedelta(days=31)
    assert await replicas[0].delete_expired() == [f"{index_prefix}-answers", f"{index_prefix}-exams"]


async def test_indices_are_per_period_and_deleted_whole_by_age_never_the_audit_indices(
    client: AsyncElasticsearch, make_cache: Any, index_prefix: str
) -> None:
    audit = f"{index_prefix}-audit-2020.01"
    await client.indices.create(index=audit, wait_for_active_shards="1")
    clock = Clock(dt.datetime(2026, 10, 20, 12, tzinfo=dt.UTC))
    cache = make_cache(clock, index_period="day", keep_days=30)
    await cache.start()
    await cache.store(SOURCE, QUERY, [study("1.2.3.1")])
    clock.now = dt.datetime(2026, 11, 19, 12, tzinfo=dt.UTC)
    other = PatientQuery(patient_id="PA-LC2", issuer="HOSP_A")
    await cache.store(SOURCE, other, [study("1.2.3.9")])
    assert await cache.delete_expired() == []  # 20 October ended 29 days ago: kept
    assert (await cache.cached_answers(QUERY, [SOURCE.id]))[SOURCE.id].records
    stats = {s.index: s for s in await cache.stats()}
    assert stats[f"{index_prefix}-exams-v2-2026.10.20"].documents == 1
    assert stats[f"{index_prefix}-answers-v2-2026.11.19"].period_start == dt.date(2026, 11, 19)
    clock.now += dt.timedelta(days=1)
    deleted = await cache.delete_expired()
    assert deleted == [f"{index_prefix}-answers-v2-2026.10.20", f"{index_prefix}-exams-v2-2026.10.20"]
    assert await cache.cached_answers(QUERY, [SOURCE.id]) == {}
    assert (await cache.cached_answers(other, [SOURCE.id]))[SOURCE.id].records
    assert await client.indices.exists(index=audit)


async def test_a_purge_forgets_the_patient_in_every_period(make_cache: Any) -> None:
    clock = Clock(dt.datetime(2026, 11, 2, 12, tzinfo=dt.UTC))
    cache = make_cache(clock)
    await cache.start()
    await cache.store(SOURCE, QUERY, [study("1.2.3.1")])
    clock.now += dt.timedelta(days=7)  # the next week's indices
    await cache.store(SOURCE, QUERY, [study("1.2.3.1")])
    assert len({s.index for s in await cache.stats()}) == 4
    assert await cache.purge(QUERY) == 2
    assert await cache.cached_answers(QUERY, [SOURCE.id]) == {}
    assert all(s.documents == 0 for s in await cache.stats())
