"""The awaitable check every front end gives graphql-core."""

from __future__ import annotations

import asyncio
import datetime as dt

from federation.models import SourceInfo, SourceStatus
from schema.execution import is_awaitable


async def _coroutine() -> int:
    return 1


def test_coroutines_futures_and_tasks_are_awaitable() -> None:
    async def check() -> None:
        coroutine = _coroutine()
        assert is_awaitable(coroutine)
        await coroutine
        future = asyncio.get_running_loop().create_future()
        assert is_awaitable(future)
        task = asyncio.ensure_future(_coroutine())
        assert is_awaitable(task)
        await task

    asyncio.run(check())


def test_models_and_plain_values_are_not() -> None:
    source = SourceInfo(id="a", name="A", kind="dicomweb")
    values = [source, "x", 1, True, 1.5, None, (source,), [source], {"a": 1}, SourceStatus.OK]
    values += [dt.date(2020, 1, 1), dt.datetime(2020, 1, 1, tzinfo=dt.UTC), dt.time(12)]
    assert not any(is_awaitable(value) for value in values)


def test_other_objects_are_asked_as_graphql_core_asks() -> None:
    class Awaitable:
        def __await__(self):  # type: ignore[no-untyped-def]
            yield

    assert is_awaitable(Awaitable())
    assert not is_awaitable(object())
