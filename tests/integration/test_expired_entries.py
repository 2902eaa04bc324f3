"""Expired share codes and access-state entries are really deleted on the test distribution; failures are surfaced."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from elasticsearch import AsyncElasticsearch

from federation.access.expiry import cleanup_failures, delete_expired
from federation.access.share_elasticsearch import ElasticsearchShareStore
from federation.access.state_elasticsearch import ElasticsearchEmergencyWindows, state_index
from federation.elasticsearch import make_client
from federation.settings import CacheSettings, settings_from_mapping
from pacsfed.app import services_from_settings

pytestmark = pytest.mark.integration

NOW = dt.datetime.now(dt.UTC)


@pytest.fixture
async def client(elasticsearch: Any) -> AsyncIterator[AsyncElasticsearch]:
    client = make_client(CacheSettings(url=elasticsearch.url, request_timeout_s=30))
    yield client
    await client.close()


@pytest.fixture
def prefix() -> str:
    return f"pacsfed-test-expiry-{uuid.uuid4().hex[:8]}"


async def _ids(client: AsyncElasticsearch, index: str) -> set[str]:
    await client.indices.refresh(index=index)
    found = await client.search(index=index, size=100, source=False)
    return {hit["_id"] for hit in found["hits"]["hits"]}


async def test_share_codes_expired_for_a_week_are_deleted_at_start_up(
    client: AsyncElasticsearch, prefix: str
) -> None:
    store = ElasticsearchShareStore(client, prefix)
    await store.start()
    for name, expires in (("old", NOW - dt.timedelta(days=8)), ("recent", NOW - dt.timedelta(days=1))):
        await client.index(
            index=store.index,
            id=f"code:{name}",
            document={"kind": "code", "id": name, "expires_at": expires.isoformat()},
            refresh="wait_for",
        )
    await ElasticsearchShareStore(client, prefix).start()  # the next start-up (any instance)
    assert await _ids(client, store.index) == {"code:recent"}


async def test_access_state_entries_closed_for_a_day_are_deleted_at_start_up(
    client: AsyncElasticsearch, prefix: str
) -> None:
    windows = ElasticsearchEmergencyWindows(client, prefix, 3600)
    await windows.start()
    index = state_index(prefix)
    for name, until in (("old", NOW - dt.timedelta(days=2)), ("open", NOW + dt.timedelta(hours=1))):
        await client.index(
            index=index, id=f"window:{name}", document={"kind": "window", "until": until.isoformat()}
        )
    await client.indices.refresh(index=index)
    await ElasticsearchEmergencyWindows(client, prefix, 3600).start()
    assert await _ids(client, index) == {"window:open"}


async def test_a_failed_clean_up_is_logged_and_counted_never_dropped(
    client: AsyncElasticsearch, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    index = f"{prefix}-shares"
    await client.indices.create(index=index, mappings={"properties": {"expires_at": {"type": "date"}}})
    await client.index(
        index=index, id="x", document={"expires_at": "2020-01-01T00:00:00Z"}, refresh="wait_for"
    )
    await client.indices.close(index=index)  # refuses the search: a real failure of a real node
    before = cleanup_failures().get(index, 0)
    with caplog.at_level(logging.WARNING, logger="federation.access.expiry"):
        assert await delete_expired(client, index, "expires_at", NOW.isoformat()) == 0
    assert cleanup_failures()[index] == before + 1
    assert any("not deleted" in r.getMessage() for r in caplog.records)


async def test_a_running_process_deletes_what_expires_after_its_start_up(
    client: AsyncElasticsearch, prefix: str, elasticsearch: Any, tmp_path: Path
) -> None:
    settings = settings_from_mapping(
        {
            "cache": {"backend": "elasticsearch", "url": elasticsearch.url, "index_prefix": prefix},
            "audit": {"journal_dir": str(tmp_path / "journal")},
            "sources": [],
        }
    )
    shares, state = f"{prefix}-shares", state_index(prefix)
    async with services_from_settings(settings, cleanup_interval_s=0.05):
        for _ in range(200):  # the start-up's own clean-up has made both indices
            if await client.indices.exists(index=[shares, state]):
                break
            await asyncio.sleep(0.05)
        # Entries that the start-up's clean-up never saw: only a later, periodic round can delete them.
        await client.index(
            index=shares,
            id="code:late",
            document={"kind": "code", "id": "late", "expires_at": (NOW - dt.timedelta(days=8)).isoformat()},
            refresh="wait_for",
        )
        await client.index(
            index=state,
            id="window:late",
            document={"kind": "window", "until": (NOW - dt.timedelta(days=2)).isoformat()},
            refresh="wait_for",
        )
        for _ in range(200):
            if not await _ids(client, shares) and not await _ids(client, state):
                break
            await asyncio.sleep(0.05)
        assert await _ids(client, shares) == set()
        assert await _ids(client, state) == set()
