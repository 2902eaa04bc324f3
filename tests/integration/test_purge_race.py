"""A purge on one replica holds against another replica's write made before it and landing after it (one real node)."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from federation.cache.elasticsearch import ElasticsearchExamCache
from federation.engine.engine import FederationEngine
from federation.models import PatientQuery, SourceInfo, StudyRecord
from federation.settings import CacheSettings

pytestmark = pytest.mark.integration

SOURCE = SourceInfo(id="hosp-a", name="Hôpital A", kind="dicomweb")
QUERY = PatientQuery(patient_id="PA-RACE1", issuer="HOSP_A")
STUDY = StudyRecord(
    source_id=SOURCE.id, study_instance_uid="1.2.826.0.1.99.1", patient_id="PA-RACE1", patient_name="RACE^ONE"
)


class Clock:
    """Replica B's clock: frozen at the time its answer was made, or the real time (``None``)."""

    def __init__(self) -> None:
        self.frozen: dt.datetime | None = None

    def __call__(self) -> dt.datetime:
        return self.frozen or dt.datetime.now(dt.UTC)


@pytest.fixture
async def replicas(
    elasticsearch: Any, index_prefix: str
) -> AsyncIterator[Callable[[Clock | None], ElasticsearchExamCache]]:
    caches: list[ElasticsearchExamCache] = []

    def make(clock: Clock | None = None) -> ElasticsearchExamCache:
        settings = CacheSettings(url=elasticsearch.url, index_prefix=index_prefix, request_timeout_s=30)
        cache = ElasticsearchExamCache(settings, clock=clock or Clock())
        caches.append(cache)
        return cache

    yield make
    for cache in caches:
        await cache.aclose()


async def test_an_answer_made_before_a_purge_on_another_replica_is_never_read_after_it(
    replicas: Callable[[Clock | None], ElasticsearchExamCache],
) -> None:
    clock_b = Clock()
    cache_a, cache_b = replicas(None), replicas(clock_b)
    engine_a = FederationEngine([], cache_a)
    await cache_a.start()
    await cache_b.start()
    await cache_b.store(SOURCE, QUERY, [STUDY])
    await cache_b.client.indices.refresh(index=cache_b.indices.alias("exams"))
    assert set(await cache_a.cached_answers(QUERY, [SOURCE.id])) == {SOURCE.id}

    clock_b.frozen = dt.datetime.now(dt.UTC)  # B's next answer is made now, its write still on its way
    assert await engine_a.purge_cache(QUERY) == 1  # A purges (its engine knows nothing of B's write)
    await cache_b.store(SOURCE, QUERY, [STUDY])  # B's write lands after the purge
    await cache_b.client.indices.refresh(index=cache_b.indices.alias("exams"))  # searchable now

    for cache in (cache_a, cache_b):
        assert await cache.cached_answers(QUERY, [SOURCE.id]) == {}
        assert await cache.search_by_name("RACE") == []

    clock_b.frozen = None  # an answer made after the purge is cached and read as always
    await cache_b.store(SOURCE, QUERY, [STUDY])
    await cache_b.client.indices.refresh(index=cache_b.indices.alias("exams"))
    assert set(await cache_a.cached_answers(QUERY, [SOURCE.id])) == {SOURCE.id}
    assert [r.study_instance_uid for r in await cache_a.search_by_name("RACE")] == [STUDY.study_instance_uid]
    await cache_a.purge(QUERY, "hosp-b")  # another source's purge covers only that source's answers
    assert set(await cache_b.cached_answers(QUERY, [SOURCE.id])) == {SOURCE.id}
    await engine_a.aclose()


async def test_purge_markers_go_once_every_index_they_guard_has_aged_out(
    replicas: Callable[[Clock | None], ElasticsearchExamCache],
) -> None:
    cache = replicas(None)
    await cache.start()
    now = dt.datetime.now(dt.UTC)
    keep = dt.timedelta(days=cache.settings.keep_days)
    await cache.purges.mark("id|HOSP_A|PA-OLD", None, now - keep - dt.timedelta(days=9))
    await cache.purges.mark("id|HOSP_A|PA-NEW", "hosp-a", now - keep)  # may still guard a live index
    await cache.client.indices.refresh(index=cache.purges.index)
    assert await cache.purges.clean_expired() == 1
