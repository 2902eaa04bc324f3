"""Elasticsearch exam cache: one document per (source, study) and period, written with the bulk API.

Index templates with explicit, strict mappings are installed at start-up (or at the first write
after Elasticsearch comes back); answers go to time-based indices deleted whole by age
(:mod:`federation.cache._indices`). No analysis plugins are needed: text that must match
loosely is folded in Python before indexing.

Concurrent write-throughs share bulk requests (:class:`federation.cache._bulk.BulkBatcher`): a fan-out's source
answers, and the answers of concurrent queries, arrive within milliseconds of each other, and
one ``_bulk`` per answer made the loading of an index the slowest step of the cache.

The documents and mappings are in ``_documents``, the writes (store, purge) in ``_writes``, the
reads (cached answers, name search) in ``_reads``; this class holds them together with the indices' upkeep.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Callable

from elasticsearch import AsyncElasticsearch

from federation.cache._bulk import BulkBatcher
from federation.cache._documents import ANSWERS_MAPPING, MAPPING, answer_id, exam_document
from federation.cache._indices import CacheIndexStats, CacheIndices
from federation.cache._purges import PurgeMarkers
from federation.cache._reads import CacheReads
from federation.cache._writes import CacheWrites
from federation.cache.base import CacheHealth, ExamCache
from federation.elasticsearch import ELASTICSEARCH_ERRORS, make_client
from federation.errors import CacheError
from federation.models import CacheStatus
from federation.settings import CacheSettings

__all__ = ["ANSWERS_MAPPING", "MAPPING", "ElasticsearchExamCache", "answer_id", "exam_document"]

logger = logging.getLogger(__name__)


class ElasticsearchExamCache(CacheWrites, CacheReads, ExamCache):
    """Writes source answers through to Elasticsearch with stable document ids."""

    backend = "elasticsearch"

    def __init__(
        self,
        settings: CacheSettings,
        client: AsyncElasticsearch | None = None,
        *,
        coalesce_writes: bool = True,
        bulk_linger_s: float = 0.002,
        bulk_max_actions: int = 2000,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
        maintenance_interval_s: float = 3600.0,
    ) -> None:
        self.settings = settings
        self._client = client if client is not None else make_client(settings)
        self.indices = CacheIndices(
            self._client,
            settings.index_prefix,
            {"exams": MAPPING, "answers": ANSWERS_MAPPING},
            period=settings.index_period,
            keep_days=settings.keep_days,
            ilm_policy=settings.ilm_policy,
            clock=clock,
        )
        self.purges = PurgeMarkers(self._client, settings.index_prefix, settings.keep_days)
        self._clock = clock
        self._maintenance_interval_s = maintenance_interval_s
        self._maintenance: asyncio.Task[None] | None = None
        self.maintenance_failures = 0
        """Rounds of deletion by age that failed in this process (each logged; retried an hour later)."""
        self._live: tuple[float, list[str]] | None = None
        self._batcher = (
            BulkBatcher(self._client, linger_s=bulk_linger_s, max_actions=bulk_max_actions)
            if coalesce_writes
            else None
        )

    @property
    def client(self) -> AsyncElasticsearch:
        """The process's one Elasticsearch client."""
        return self._client

    @property
    def index(self) -> str:
        """The exams index written to now (the current period's)."""
        return self.indices.index_for("exams", self._clock())

    @property
    def answers_index(self) -> str:
        """The answers index written to now (the current period's)."""
        return self.indices.index_for("answers", self._clock())

    async def start(self) -> None:
        """Install the templates, migrate, and start deleting expired indices; a down node is retried later."""
        with contextlib.suppress(CacheError):
            await self.indices.prepare()
        with contextlib.suppress(CacheError):
            await self.purges.ensure()
        if self._maintenance is None:
            self._maintenance = asyncio.create_task(self._maintain_forever(), name="cache-maintenance")

    async def _maintain_forever(self) -> None:
        while True:
            try:
                await self.indices.delete_expired()
            except CacheError as exc:  # retried at the next round
                self.maintenance_failures += 1
                logger.warning("cache: expired indices not deleted (%s)", exc)
            await self.purges.clean_expired()  # failures logged and counted by index (cleanup_failures)
            await asyncio.sleep(self._maintenance_interval_s)

    async def stats(self) -> list[CacheIndexStats]:
        """Documents and bytes of every cache index (``pacsfed cache stats``)."""
        return await self.indices.stats()

    async def delete_expired(self) -> list[str]:
        """Delete the indices past ``keep_days`` now (the maintenance task does it hourly)."""
        return await self.indices.delete_expired()

    async def health(self) -> CacheHealth:
        """Ping the cluster with the request timeout."""
        try:
            await self._client.cluster.health(timeout="1s")
        except ELASTICSEARCH_ERRORS as exc:
            return CacheHealth(CacheStatus.UNAVAILABLE, self.backend, f"{type(exc).__name__}")
        return CacheHealth(CacheStatus.OK, self.backend)

    async def aclose(self) -> None:
        """Stop the maintenance, send the writes still waiting to be batched, then close the client."""
        if self._maintenance is not None:
            self._maintenance.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._maintenance
        if self._batcher is not None:
            with contextlib.suppress(CacheError):
                await self._batcher.flush()
        await self._client.close()
