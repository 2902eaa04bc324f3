"""The one index setup every Elasticsearch store uses: idempotent, safe under races, additive upgrades."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from elasticsearch import AsyncElasticsearch

from federation.cache.elasticsearch import ElasticsearchExamCache
from federation.elasticsearch import IndexSetup, ensure_index, make_client
from federation.errors import AuditError, CacheError
from federation.settings import CacheSettings

pytestmark = pytest.mark.integration

MAPPING: dict[str, Any] = {
    "dynamic": "strict",
    "properties": {"name": {"type": "keyword"}, "at": {"type": "date"}},
}


@pytest.fixture
async def client(elasticsearch: Any) -> AsyncIterator[AsyncElasticsearch]:
    client = make_client(CacheSettings(url=elasticsearch.url, request_timeout_s=30))  # loaded CI
    yield client
    await client.close()


def _name() -> str:
    return f"pacsfed-test-setup-{uuid.uuid4().hex[:8]}"


async def test_instances_starting_at_once_each_set_up_every_index_of_the_cache(elasticsearch: Any) -> None:
    settings = CacheSettings(url=elasticsearch.url, index_prefix=_name(), request_timeout_s=30)
    caches = [ElasticsearchExamCache(settings) for _ in range(6)]
    try:
        await asyncio.gather(*(cache.start() for cache in caches))
        client = caches[0].client
        for index in (caches[0].index, caches[0].answers_index):  # the current period's
            assert await client.indices.exists(index=index)
        for kind in ("exams", "answers"):
            template = f"{settings.index_prefix}-{kind}-v2"
            assert (await client.indices.get_index_template(name=template))["index_templates"]
    finally:
        for cache in caches:
            await cache.aclose()


async def test_an_index_created_meanwhile_is_taken_and_an_older_mapping_gains_the_new_fields(
    client: AsyncElasticsearch,
) -> None:
    index = _name()
    older = {"dynamic": "strict", "properties": {"name": {"type": "keyword"}}}
    await client.indices.create(index=index, mappings=older)
    setups = [IndexSetup(index, MAPPING) for _ in range(4)]
    await asyncio.gather(*(ensure_index(client, s, CacheError, "cannot prepare") for s in setups))
    mapping = (await client.indices.get_mapping(index=index))[index]["mappings"]
    assert set(mapping["properties"]) == {"name", "at"}


async def test_a_store_that_does_not_upgrade_leaves_an_older_index_as_it_is(
    client: AsyncElasticsearch,
) -> None:
    index = _name()
    await client.indices.create(index=index, mappings={"properties": {"name": {"type": "keyword"}}})
    await ensure_index(client, IndexSetup(index, MAPPING, upgrade=False), CacheError, "cannot prepare")
    mapping = (await client.indices.get_mapping(index=index))[index]["mappings"]
    assert set(mapping["properties"]) == {"name"}


async def test_a_template_for_monthly_indices_applies_to_the_next_one_and_upgrades_the_older(
    client: AsyncElasticsearch,
) -> None:
    prefix = _name()
    await client.indices.create(
        index=f"{prefix}-2020.01", mappings={"properties": {"name": {"type": "keyword"}}}
    )
    setup = IndexSetup(f"{prefix}-*", MAPPING, template=prefix, priority=300, create=False)
    await ensure_index(client, setup, AuditError, "cannot install")
    older = (await client.indices.get_mapping(index=f"{prefix}-2020.01"))[f"{prefix}-2020.01"]["mappings"]
    assert set(older["properties"]) == {"name", "at"}
    await client.index(index=f"{prefix}-2026.12", document={"name": "x"}, refresh=True)
    newer = (await client.indices.get_mapping(index=f"{prefix}-2026.12"))[f"{prefix}-2026.12"]["mappings"]
    assert newer["dynamic"] == "strict" and set(newer["properties"]) == {"name", "at"}


async def test_a_refused_setup_is_the_store_error_naming_only_the_kind_of_refusal(
    client: AsyncElasticsearch,
) -> None:
    index = _name()
    await client.indices.create(index=index, mappings={"properties": {"name": {"type": "date"}}})
    with pytest.raises(AuditError) as raised:
        await ensure_index(client, IndexSetup(index, MAPPING), AuditError, "cannot prepare")
    assert str(raised.value) == "cannot prepare (illegal_argument_exception)"
