"""Purge markers: when each patient key (and source) was last purged, shared by every replica.

A purge deletes the cached answers it finds, but another replica's write already on its way
(made before the purge, landing after it) would put one back. Each purge therefore first records
its time in a marker document; reads ignore any answer, and name searches any study, cached at or
before the marker that covers it, whichever replica wrote it and whenever it landed. Markers are
one document per patient key (the times of its all-sources and one-source purges), read by id
(real-time) in the same request as the answers, and deleted once every index that could hold an
answer they guard has aged out.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterable
from typing import Any

from elasticsearch import AsyncElasticsearch, NotFoundError

from federation.access.expiry import delete_expired
from federation.elasticsearch import ELASTICSEARCH_ERRORS, IndexSetup, ensure_index, failure
from federation.errors import CacheError

ALL_SOURCES = "*"

MAPPING: dict[str, Any] = {
    "dynamic": "strict",
    "properties": {
        "query_key": {"type": "keyword"},
        "purged_at": {"type": "date"},
        "sources": {"type": "object", "enabled": False},
    },
}

_PERIOD_MARGIN = dt.timedelta(days=8)
"""A marker outlives the indices it guards: ``keep_days`` after the end of a period (a week at most)."""
_RETRIES = 5
"""Purges of one key's sources on several replicas at once: each merge retried on a version conflict."""


def marker_id(query_key: str) -> str:
    """The marker of one patient key's purges."""
    return hashlib.sha256(f"purge\x00{query_key}".encode()).hexdigest()


class PurgeMarkers:
    """The marker index of one cache: written by purges, read with the answers."""

    def __init__(self, client: AsyncElasticsearch, index_prefix: str, keep_days: int) -> None:
        self.client = client
        self.index = f"{index_prefix}-cache-purges"
        self._keep = dt.timedelta(days=keep_days) + _PERIOD_MARGIN
        self._ready = False

    async def ensure(self) -> None:
        """Create the index once (CacheError when the node refuses)."""
        if not self._ready:
            await ensure_index(
                self.client, IndexSetup(self.index, MAPPING), CacheError, "cache: purge markers"
            )
            self._ready = True

    async def mark(self, query_key: str, source_id: str | None, at: dt.datetime) -> None:
        """Record a purge at ``at``: answers cached until then are never read again."""
        await self.ensure()
        when = at.isoformat()
        try:  # merged into the key's marker: its other sources' times are kept
            await self.client.update(
                index=self.index,
                id=marker_id(query_key),
                doc={"query_key": query_key, "purged_at": when, "sources": {source_id or ALL_SOURCES: when}},
                doc_as_upsert=True,
                retry_on_conflict=_RETRIES,
            )
        except ELASTICSEARCH_ERRORS as exc:
            raise failure(exc, CacheError, "cache purge marker not written") from exc

    def docs(self, query_keys: Iterable[tuple[str, str]]) -> list[dict[str, str]]:
        """The mget entries of the markers covering these (query key, source) pairs, each once."""
        ids = {marker_id(key) for key, _ in query_keys}
        return [{"_index": self.index, "_id": i} for i in sorted(ids)]

    def is_marker(self, doc: dict[str, Any]) -> bool:
        """Whether an mget answer is one of this index's documents (found or not)."""
        return str(doc.get("_index", "")) == self.index

    @staticmethod
    def purged(found: Iterable[dict[str, Any]]) -> dict[tuple[str, str], dt.datetime]:
        """The purge times by (query key, source id or ``*``), from the mget answers of :meth:`docs`."""
        return {
            (doc["_source"]["query_key"], source_id): dt.datetime.fromisoformat(at)
            for doc in found
            if doc.get("found")
            for source_id, at in doc["_source"]["sources"].items()
        }

    @staticmethod
    def covered(
        purged: dict[tuple[str, str], dt.datetime], query_key: str, source_id: str, cached_at: dt.datetime
    ) -> bool:
        """Whether an answer or study cached at ``cached_at`` was made before a purge of its key (or source)."""
        return any(
            (at := purged.get((query_key, sid))) is not None and cached_at <= at
            for sid in (source_id, ALL_SOURCES)
        )

    async def of_studies(self, studies: Iterable[dict[str, Any]]) -> dict[tuple[str, str], dt.datetime]:
        """The purges covering these cached studies' patient keys (real-time GETs); CacheError if unread."""
        keys = {(s["query_key"], s["source_id"]) for s in studies if s.get("query_key")}
        if not keys:
            return {}
        try:
            found = await self.client.mget(docs=self.docs(keys))
        except NotFoundError:
            return {}
        except ELASTICSEARCH_ERRORS as exc:
            raise failure(exc, CacheError, "cache search failed") from exc
        return self.purged(found["docs"])

    def covers_study(self, purged: dict[tuple[str, str], dt.datetime], study: dict[str, Any]) -> bool:
        """Whether a cached study (its exams document) was written by an answer made before a purge."""
        cached_at = dt.datetime.fromisoformat(study["cached_at"])
        return self.covered(purged, study.get("query_key") or "", study["source_id"], cached_at)

    async def clean_expired(self) -> int:
        """Delete the markers older than every index they could guard (hourly, with the cache's maintenance)."""
        cutoff = (dt.datetime.now(dt.UTC) - self._keep).isoformat()
        return await delete_expired(self.client, self.index, "purged_at", cutoff)
