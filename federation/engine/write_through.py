"""A query's answers written through the cache: those that arrive together, in one write."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any

from federation.models import SourceInfo, StudyRecord

Answer = tuple[SourceInfo, Sequence[StudyRecord]]


class WriteThrough:
    """Collects one query's answers; those added in one turn of the event loop share a write.

    A fan-out's answers often come in bursts: one write (one task, one bulk request) per burst
    instead of one per source. A write starts at the next turn of the loop, so no answer waits.
    """

    def __init__(
        self,
        spawn: Callable[[Coroutine[Any, Any, None]], asyncio.Task[None]],
        store: Callable[[list[Answer]], Awaitable[None]],
    ) -> None:
        self._spawn = spawn
        self._store = store
        self._batch: list[Answer] | None = None
        self.tasks: list[asyncio.Task[None]] = []
        """Every write started so far, for the query to wait on before it reports the cache status."""

    def add(self, source: SourceInfo, records: Sequence[StudyRecord]) -> None:
        """Write this source's answer with the others added before the next turn of the loop."""
        if self._batch is None:
            self._batch = []
            self.tasks.append(self._spawn(self._write(self._batch)))
        self._batch.append((source, records))

    async def _write(self, batch: list[Answer]) -> None:
        if self._batch is batch:
            self._batch = None  # answers added from now on start the next write
        await self._store(batch)
