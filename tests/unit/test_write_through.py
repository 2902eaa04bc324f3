"""Write-through batching: answers that arrive in one turn of the event loop share one write."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

from federation.engine.write_through import Answer, WriteThrough
from federation.models import SourceInfo, StudyRecord


def _answer(source_id: str) -> tuple[SourceInfo, list[StudyRecord]]:
    source = SourceInfo(id=source_id, name=source_id.upper(), kind="dicomweb")
    return source, [StudyRecord(source_id=source_id, study_instance_uid=f"1.2.{len(source_id)}")]


async def test_answers_of_one_turn_share_a_write_and_later_ones_start_another() -> None:
    writes: list[list[str]] = []

    async def store(batch: list[Answer]) -> None:
        writes.append([source.id for source, _ in batch])
        await asyncio.sleep(0.01)  # a write still running when the next answers come

    def spawn(coroutine: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        return asyncio.ensure_future(coroutine)

    write_through = WriteThrough(spawn, store)
    for source_id in ("a", "b", "c"):
        write_through.add(*_answer(source_id))
    await asyncio.sleep(0)  # one turn: the first write takes a, b and c
    write_through.add(*_answer("d"))
    write_through.add(*_answer("e"))
    await asyncio.gather(*write_through.tasks)
    assert writes == [["a", "b", "c"], ["d", "e"]]
    assert len(write_through.tasks) == 2
