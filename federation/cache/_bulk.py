"""Group commit for the Elasticsearch cache: concurrent bulk writes share ``_bulk`` requests."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from elasticsearch import AsyncElasticsearch

from federation.elasticsearch import ELASTICSEARCH_ERRORS, failure
from federation.errors import CacheError


@dataclass
class Submission:
    """One caller's part of a shared bulk request: its NDJSON lines and how many actions they hold."""

    body: bytes
    actions: int
    future: asyncio.Future[list[dict[str, Any]]] = field(repr=False)


class BulkBatcher:
    """Concurrent bulk writes coalesced into shared ``_bulk`` requests (group commit).

    A submission waits at most ``linger_s`` for others to join it, or is sent at once when the
    waiting ones hold ``max_actions`` actions or ``max_bytes`` bytes. At most ``max_in_flight``
    requests are outstanding; what arrives meanwhile joins the next one, so the batches grow
    with the load and an idle cache adds only ``linger_s`` to a write. Each caller gets its own
    items of the response, in order, or the request's exception.
    """

    def __init__(
        self,
        client: AsyncElasticsearch,
        *,
        linger_s: float = 0.002,
        max_actions: int = 2000,
        max_bytes: int = 4 * 1024 * 1024,
        max_in_flight: int = 2,
    ) -> None:
        self._client = client
        self._linger_s = linger_s
        self._max_actions = max_actions
        self._max_bytes = max_bytes
        self._max_in_flight = max_in_flight
        self._waiting: list[Submission] = []
        self._waiting_actions = 0
        self._waiting_bytes = 0
        self._timer: asyncio.TimerHandle | None = None
        self._sending: set[asyncio.Task[None]] = set()

    async def submit(self, body: bytes, actions: int) -> list[dict[str, Any]]:
        """Send these NDJSON lines (``actions`` bulk actions) in a shared request; their items."""
        loop = asyncio.get_running_loop()
        submission = Submission(body, actions, loop.create_future())
        self._waiting.append(submission)
        self._waiting_actions += actions
        self._waiting_bytes += len(body)
        if self._waiting_actions >= self._max_actions or self._waiting_bytes >= self._max_bytes:
            self._send_waiting()
        elif self._timer is None:
            self._timer = loop.call_later(self._linger_s, self._send_waiting)
        return await submission.future

    async def flush(self) -> None:
        """Send what is waiting now, and wait until every request sent so far has been answered."""
        while self._waiting or self._sending:
            self._send_waiting(force=True)
            if self._sending:
                await asyncio.wait(set(self._sending))

    def _send_waiting(self, force: bool = False) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._waiting and (force or len(self._sending) < self._max_in_flight):
            batch: list[Submission] = []
            actions = size = 0
            while self._waiting and (not batch or (actions < self._max_actions and size < self._max_bytes)):
                submission = self._waiting.pop(0)
                batch.append(submission)
                actions += submission.actions
                size += len(submission.body)
            self._waiting_actions -= actions
            self._waiting_bytes -= size
            task = asyncio.ensure_future(self._send(batch))
            self._sending.add(task)
            task.add_done_callback(self._sent)

    def _sent(self, task: asyncio.Task[None]) -> None:
        self._sending.discard(task)
        if self._waiting and self._timer is None:
            # What arrived during the request has waited a round trip already: send it now.
            self._send_waiting()

    async def _send(self, batch: list[Submission]) -> None:
        live = [s for s in batch if not s.future.done()]  # a cancelled caller's lines still go
        try:
            lines: Any = [s.body for s in batch]  # pre-encoded NDJSON, sent as it is
            response = await self._client.bulk(operations=lines)
        except ELASTICSEARCH_ERRORS as exc:
            error = failure(exc, CacheError, "bulk write failed")
            error.__cause__ = exc
            for submission in live:
                if not submission.future.done():
                    submission.future.set_exception(error)
            return
        except BaseException as exc:  # cancelled (aclose) or a bug: no caller may wait forever
            for submission in live:
                if not submission.future.done():
                    submission.future.set_exception(failure(exc, CacheError, "bulk write failed"))
            raise
        items: list[dict[str, Any]] = response["items"]
        start = 0
        for submission in batch:
            mine = items[start : start + submission.actions]
            start += submission.actions
            if not submission.future.done():
                submission.future.set_result(mine)
