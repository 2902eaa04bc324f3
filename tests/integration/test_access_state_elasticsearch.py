"""Decision state in Elasticsearch: a lock-out or a break-the-glass window reached through one instance holds on another."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from elasticsearch import AsyncElasticsearch

from federation.access import state_elasticsearch
from federation.access.share import MemoryShareStore, ShareCodes
from federation.access.state_elasticsearch import (
    AccessStateIndex,
    ElasticsearchEmergencyWindows,
    ElasticsearchRedemptionLimiter,
    SharedEntries,
    state_index,
)
from federation.elasticsearch import make_client
from federation.errors import AccessError
from federation.settings import CacheSettings
from federation.settings_security import ShareSettings

pytestmark = pytest.mark.integration

PATIENT_KEY = "PA-001|HOSP_A"


@pytest.fixture
async def client(elasticsearch: Any) -> AsyncIterator[AsyncElasticsearch]:
    client = make_client(CacheSettings(url=elasticsearch.url))
    yield client
    await client.close()


@pytest.fixture
def prefix() -> str:
    return f"pacsfed-test-state-{uuid.uuid4().hex[:8]}"


async def test_a_lock_out_reached_through_one_instance_holds_on_another(
    client: AsyncElasticsearch, prefix: str
) -> None:
    settings = ShareSettings(max_failures=3, lockout_s=900)
    store = MemoryShareStore()
    first, second = (
        ShareCodes(settings, store, ElasticsearchRedemptionLimiter(client, prefix, 3, 900)) for _ in range(2)
    )
    for _ in range(3):
        with pytest.raises(AccessError) as wrong:
            await first.redeem("AAAA-BBBB-CCCC", "10.0.0.7")
        assert wrong.value.code == "BAD_SHARE_CODE"
    with pytest.raises(AccessError) as locked:
        await second.redeem("ZZZZ-BBBB-CCCC", "10.0.0.7")  # another prefix: the address alone locks
    assert locked.value.code == "LOCKED_OUT"
    other = ElasticsearchRedemptionLimiter(client, prefix, 3, 900)
    assert not await other.locked("client:10.0.0.8")


async def test_failures_counted_at_once_by_many_instances_are_all_counted(
    client: AsyncElasticsearch, prefix: str
) -> None:
    limiters = [ElasticsearchRedemptionLimiter(client, prefix, 6, 900) for _ in range(6)]
    await asyncio.gather(*(limiter.start() for limiter in limiters))  # six workers starting at once
    await asyncio.gather(*(limiter.fail("client:10.0.0.9") for limiter in limiters))
    fresh = ElasticsearchRedemptionLimiter(client, prefix, 6, 900)
    assert await fresh.locked("client:10.0.0.9")  # no lost update under concurrency


async def test_a_window_opened_through_one_instance_holds_on_another_and_closes_on_time(
    client: AsyncElasticsearch, prefix: str
) -> None:
    now = [1_000_000.0]
    first = ElasticsearchEmergencyWindows(client, prefix, 600, clock=lambda: now[0])
    second = ElasticsearchEmergencyWindows(client, prefix, 600, clock=lambda: now[0])
    await first.start()
    await first.open("user:dr-er", PATIENT_KEY, "trauma bay 2")
    window = await second.window("user:dr-er", PATIENT_KEY)
    assert window is not None and window.reason == "trauma bay 2"
    assert window.closes_at.timestamp() == pytest.approx(now[0] + 600)
    assert await second.reason_for("user:dr-other", PATIENT_KEY) is None
    now[0] += 601
    assert await second.window("user:dr-er", PATIENT_KEY) is None


async def test_the_index_names_nobody_in_the_clear(client: AsyncElasticsearch, prefix: str) -> None:
    windows = ElasticsearchEmergencyWindows(client, prefix, 600)
    await windows.open("user:dr-er", PATIENT_KEY, "trauma bay 2")
    await ElasticsearchRedemptionLimiter(client, prefix, 3, 900).fail("client:10.0.0.7")
    await client.indices.refresh(index=state_index(prefix))
    found = await client.search(index=state_index(prefix), size=10)
    text = str(found.body)
    assert len(found["hits"]["hits"]) == 2
    assert "PA-001" not in text and "dr-er" not in text and "10.0.0.7" not in text


async def test_while_elasticsearch_is_unreachable_an_instance_honours_what_it_saw(prefix: str) -> None:
    down = make_client(CacheSettings(url="http://127.0.0.1:9", request_timeout_s=1))
    try:
        windows = ElasticsearchEmergencyWindows(down, prefix, 600)
        await windows.open("user:dr-er", PATIENT_KEY, "trauma bay 2")  # no exception: the emergency goes on
        assert await windows.reason_for("user:dr-er", PATIENT_KEY) == "trauma bay 2"
        limiter = ElasticsearchRedemptionLimiter(down, prefix, 2, 900)
        await limiter.fail("client:10.0.0.7")
        await limiter.fail("client:10.0.0.7")
        assert await limiter.locked("client:10.0.0.7")
    finally:
        await down.close()


async def test_an_entry_put_by_one_instance_is_read_by_another_until_it_expires(
    client: AsyncElasticsearch, prefix: str
) -> None:
    now = [1_000_000.0]
    first = SharedEntries(client, prefix, clock=lambda: now[0])
    second = SharedEntries(client, prefix, clock=lambda: now[0])
    await first.put("report-link", "secret-link-id", {"subject": "user:dr"}, now[0] + 900)
    assert await second.get("report-link", "secret-link-id") == {"subject": "user:dr"}
    assert await second.get("report-link", "another-id") is None
    assert await second.get("other-kind", "secret-link-id") is None
    now[0] += 901
    assert await second.get("report-link", "secret-link-id") is None


async def test_windows_lock_outs_and_entries_sharing_one_index_set_it_up_once(
    client: AsyncElasticsearch, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    setups: list[str] = []
    real = state_elasticsearch.ensure_index

    async def counted(*args: Any) -> None:
        setups.append(args[1].index)
        await real(*args)

    monkeypatch.setattr(state_elasticsearch, "ensure_index", counted)
    index = AccessStateIndex(client, prefix)
    windows = ElasticsearchEmergencyWindows(client, prefix, 600, index=index)
    limiter = ElasticsearchRedemptionLimiter(client, prefix, 3, 900, index=index)
    entries = SharedEntries(client, prefix, index=index)
    await asyncio.gather(
        windows.start(),
        limiter.start(),
        windows.open("dr-a", PATIENT_KEY, "emergency"),
        limiter.fail("client:10.0.0.9"),
        entries.put("link", "k1", {"x": 1}, time.time() + 60),
    )
    assert setups == [state_index(prefix)]
    assert await entries.get("link", "k1") == {"x": 1}
