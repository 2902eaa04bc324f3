"""The periodic clean-up of expired entries goes on after a failure, each failure logged and counted."""

from __future__ import annotations

import asyncio
import contextlib

from federation.access.expiry import clean_periodically, cleanup_failures
from federation.access.share_elasticsearch import ElasticsearchShareStore
from federation.elasticsearch import make_client
from federation.settings import CacheSettings


async def test_each_failed_round_is_counted_and_the_next_round_comes() -> None:
    client = make_client(CacheSettings(url="http://127.0.0.1:9", request_timeout_s=1))  # nothing listens
    store = ElasticsearchShareStore(client, "pacsfed-unit-periodic")
    before = cleanup_failures().get(store.index, 0)
    task = asyncio.create_task(clean_periodically([store], 0.01))
    try:
        for _ in range(500):
            if cleanup_failures().get(store.index, 0) >= before + 2:
                break
            await asyncio.sleep(0.01)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await client.close()
    assert cleanup_failures()[store.index] >= before + 2
