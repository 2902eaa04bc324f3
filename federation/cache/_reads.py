"""The cache's reads: a query's newest answers by id (real-time), and studies by name across every period's index."""

from __future__ import annotations

import contextlib
import datetime as dt
import time
from collections.abc import Callable, Sequence
from typing import Any

from elasticsearch import AsyncElasticsearch, NotFoundError

from federation.cache._documents import answer_id, cached_record
from federation.cache._indices import CacheIndices
from federation.cache._purges import PurgeMarkers
from federation.cache.base import CachedAnswer, document_id
from federation.elasticsearch import ELASTICSEARCH_ERRORS, failure
from federation.errors import CacheError
from federation.identity.names import fold
from federation.models import PatientQuery, StudyRecord

_LIVE_TTL_S = 60.0
"""How long the list of answers indices is reused: a period's index is always read, others join within this."""


class CacheReads:
    """Reads of the Elasticsearch exam cache; purged answers and studies stay unread."""

    _client: AsyncElasticsearch
    indices: CacheIndices
    purges: PurgeMarkers
    _clock: Callable[[], dt.datetime]
    _live: tuple[float, list[str]] | None

    async def _live_answers(self) -> list[str]:
        """The answers indices to read, newest first (listed at most once a minute; the current one always)."""
        now = time.monotonic()
        if self._live is None or now - self._live[0] > _LIVE_TTL_S:
            with contextlib.suppress(CacheError):
                self._live = (now, await self.indices.live("answers"))
        known = self._live[1] if self._live is not None else []
        current = self.indices.index_for("answers", self._clock())
        return known if current in known else [current, *known]

    async def cached_answers(self, query: PatientQuery, source_ids: Sequence[str]) -> dict[str, CachedAnswer]:
        """The newest answers by id in every period's index (real-time GETs: a write is readable at once)."""
        key = query.cache_key()
        if key is None or not source_ids:
            return {}
        try:
            indices = await self._live_answers()
            answers = await self._client.mget(
                docs=[
                    *({"_index": i, "_id": answer_id(key, sid)} for i in indices for sid in source_ids),
                    *self.purges.docs((key, sid) for sid in source_ids),
                ]
            )
            # Another replica's write made before a purge may land after it: its answer stays unread.
            purged = self.purges.purged(doc for doc in answers["docs"] if self.purges.is_marker(doc))
            newest: dict[str, tuple[str, dict[str, Any]]] = {}
            for doc in answers["docs"]:
                if doc.get("found") and not self.purges.is_marker(doc):
                    found = doc["_source"]
                    answered_at = dt.datetime.fromisoformat(found["answered_at"])
                    if self.purges.covered(purged, key, found["source_id"], answered_at):
                        continue
                    held = newest.get(found["source_id"])
                    if held is None or held[1]["answered_at"] < found["answered_at"]:
                        newest[found["source_id"]] = (doc["_index"], found)
            # An answer's studies were written with it, to the same period's exams index.
            exam_docs = [
                {"_index": self.indices.exams_of(index), "_id": document_id(a["source_id"], uid)}
                for index, a in newest.values()
                for uid in a["study_uids"]
            ]
            exams: Any = await self._client.mget(docs=exam_docs) if exam_docs else {"docs": []}
        except NotFoundError:
            return {}
        except ELASTICSEARCH_ERRORS as exc:
            raise failure(exc, CacheError, "cache read failed") from exc
        by_id = {(doc["_index"], doc["_id"]): doc["_source"] for doc in exams["docs"] if doc.get("found")}
        result: dict[str, CachedAnswer] = {}
        for index, answer in newest.values():
            answered_at = dt.datetime.fromisoformat(answer["answered_at"])
            matches = {m["uid"]: m for m in answer.get("matches", [])}
            records = []
            exams_index = self.indices.exams_of(index)
            for uid in answer["study_uids"]:
                doc = by_id.get((exams_index, document_id(answer["source_id"], uid)))
                if doc is None:
                    break  # a study was purged or lost: the answer is incomplete, do not use it
                match = {k: v for k, v in matches.get(uid, {}).items() if k != "uid"}
                records.append(cached_record(doc, matched_by=match or None, cached_at=answered_at))
            else:
                result[answer["source_id"]] = CachedAnswer(answer["source_id"], answered_at, tuple(records))
        return result

    async def search_by_name(
        self, family_name: str, birth_date: dt.date | None = None, limit: int = 100
    ) -> list[StudyRecord]:
        """Cached studies whose folded family name (in any of the name's groups) starts with the folded ``family_name``."""
        filters: list[dict[str, Any]] = [{"prefix": {"patient_family_folded": fold(family_name)}}]
        if birth_date is not None:
            filters.append({"term": {"patient_birth_date": birth_date.isoformat()}})
        return await self._search({"bool": {"filter": filters}}, size=limit)

    async def _search(self, query: dict[str, Any], size: int = 10_000) -> list[StudyRecord]:
        """Studies matching ``query`` in every period's index, each (source, study) once: its newest copy."""
        try:
            response = await self._client.search(
                index=self.indices.alias("exams"),
                query=query,
                size=size,
                sort=[{"cached_at": {"order": "desc"}}],
                ignore_unavailable=True,
                allow_no_indices=True,
            )
        except ELASTICSEARCH_ERRORS as exc:
            raise failure(exc, CacheError, "cache search failed") from exc
        hits = response["hits"]["hits"]
        purged = await self.purges.of_studies([hit["_source"] for hit in hits])
        newest: dict[str, StudyRecord] = {}
        for hit in hits:
            if purged and self.purges.covers_study(purged, hit["_source"]):
                continue  # written by a replica's write made before a purge, landed after it
            if hit["_id"] not in newest:
                newest[hit["_id"]] = cached_record(hit["_source"])
        return list(newest.values())
