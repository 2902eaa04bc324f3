"""The engine's side of the cache: fresh answers to use, writes through it, and purge epochs."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from federation.cache.base import CachedAnswer
from federation.engine._core import EngineCore
from federation.engine._query_state import QueryState, source_setting
from federation.engine.write_through import Answer
from federation.errors import CacheError, CacheUnavailable
from federation.identity.resolver import PlannedQuery
from federation.models import CacheStatus, Deadline, Freshness, PatientQuery

if TYPE_CHECKING:  # connectors import the engine's models: no import at run time, no cycle
    from connectors.base import Connector

log = logging.getLogger("federation.engine.engine")
_DEFAULT_TTL_S = 300.0


class CacheSide(EngineCore):
    """Reading usable cached answers and writing fresh ones through (undone by purges)."""

    async def _cached(
        self,
        query: PatientQuery,
        connectors: Sequence[Connector],
        plans: dict[str, list[PlannedQuery]],
        freshness: Freshness,
        deadline: Deadline,
        state: QueryState,
    ) -> dict[str, CachedAnswer]:
        """The cached answers this query may use: fresh ones, or any age with CACHE_ONLY.

        Every answer read, fresh or not, is kept in ``state.stale``: served where a source then
        gives none. The read's own timeout is the cache client's, around each Elasticsearch
        request (``cache.request_timeout_s``), not a timer around the whole read, which under a
        saturated event loop mostly measured time queued in the loop; the engine only keeps half
        of the query's deadline for the sources. A cache not read is reported as unavailable.
        """
        if freshness is Freshness.LIVE or self._cache is None or query.cache_key() is None:
            return {}
        wanted = [c.id for c in connectors if plans[c.id]]
        try:
            async with asyncio.timeout(deadline.remaining() / 2):
                answers = await self._cache.cached_answers(query, wanted)
        except (CacheError, TimeoutError) as exc:
            if freshness is Freshness.CACHE_ONLY:  # no source may be asked: there is no answer at all
                raise CacheUnavailable("the cache cannot be read (CACHE_ONLY asks no source)") from exc
            log.warning("cache read failed (%s): sources are asked live", type(exc).__name__)
            state.cache_unread = True
            state.warnings.append("the cache could not be read")
            return {}
        state.stale = answers
        if freshness is not Freshness.CACHE_ONLY:
            now = dt.datetime.now(dt.UTC)
            ttl = {c.id: source_setting(c, "ttl_s", _DEFAULT_TTL_S) for c in connectors}
            answers = {
                sid: a for sid, a in answers.items() if (now - a.answered_at).total_seconds() <= ttl[sid]
            }
        if self._observer is not None:
            self._observer.cache_read(len(answers), len(wanted) - len(answers))
        return answers

    def _epoch(self, query: PatientQuery) -> int:
        """How many times this patient's cached answers were purged: answers from before must not return."""
        return self._purges.get(query.cache_key() or "", 0)

    async def _write_answers(self, query: PatientQuery, answers: list[Answer], *, epoch: int) -> None:
        assert self._cache is not None
        if self._epoch(query) != epoch:
            return  # purged since these answers were asked for (a correction or an erasure request)
        key = query.cache_key() or ""
        task = asyncio.current_task()
        writes = self._writes.setdefault(key, set())
        if task is not None:
            writes.add(task)
        try:
            await self._cache.store_answers(query, answers)
        except CacheError:
            self._last_cache_status = CacheStatus.UNAVAILABLE
            if self._observer is not None:
                self._observer.cache_write_failed()
            raise
        finally:
            writes.discard(task)
            if not writes and self._writes.get(key) is writes:
                del self._writes[key]
            purges = self._late_writes.pop(task, []) if task is not None else []
        self._last_cache_status = CacheStatus.OK
        for source, _ in answers:  # purges that gave up waiting for this write: it undoes itself
            if any(purged in (None, source.id) for purged in purges):
                await self._cache.purge(query, source.id)

    async def _settle_writes(self, writes: list[asyncio.Task[None]]) -> tuple[CacheStatus, str | None]:
        if self._cache is None:
            return CacheStatus.DISABLED, None
        if not writes:
            return self._last_cache_status, None
        # Most writes are done by now: wait only for the others (asyncio.wait hooks every task).
        unsettled = [task for task in writes if not task.done()]
        pending: set[asyncio.Task[None]] = set()
        if unsettled:
            _, pending = await asyncio.wait(unsettled, timeout=self._cache_write_wait_s)
        done = [task for task in writes if task.done()]
        errors = [task.exception() for task in done if not task.cancelled() and task.exception() is not None]
        if errors:
            log.warning("cache write failed: %s", errors[0])
            return CacheStatus.UNAVAILABLE, str(errors[0])
        if pending:
            return CacheStatus.PENDING, None
        return CacheStatus.OK, None
