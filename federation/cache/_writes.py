"""The cache's writes: a source's answer bulk-indexed under stable ids and external versions, and a query's purge."""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Callable, Sequence
from typing import Any

from elasticsearch import AsyncElasticsearch

from federation.cache._bulk import BulkBatcher
from federation.cache._documents import answer_id, dumps, exam_document
from federation.cache._indices import CacheIndices
from federation.cache._purges import PurgeMarkers
from federation.cache.base import document_id
from federation.elasticsearch import ELASTICSEARCH_ERRORS, failure
from federation.errors import CacheError
from federation.models import PatientQuery, SourceInfo, StudyRecord


class CacheWrites:
    """Writes of the Elasticsearch exam cache, shared bulk requests where a batcher is given."""

    _client: AsyncElasticsearch
    indices: CacheIndices
    purges: PurgeMarkers
    _clock: Callable[[], dt.datetime]
    _batcher: BulkBatcher | None

    async def store(self, source: SourceInfo, query: PatientQuery, records: Sequence[StudyRecord]) -> None:
        """Bulk-index one source's answer: its studies under stable ids, and the answer itself.

        Concurrent calls share bulk requests; each raises CacheError for its own refused
        documents, or when the shared request fails.
        """
        key = query.cache_key()
        if not records and key is None:
            return
        answers_index, exams_index = await self.indices.ensure_current()
        now = self._clock()
        # External versions (the answer's time in microseconds): writes that overtake each other in
        # concurrent bulks can never put an older answer over a newer one (the older is refused, 409).
        version = {"version": int(now.timestamp() * 1_000_000), "version_type": "external_gte"}
        operations: list[dict[str, Any]] = []
        for record in records:
            operations.append(
                {
                    "index": {
                        "_index": exams_index,
                        "_id": document_id(source.id, record.study_instance_uid),
                        **version,
                    }
                }
            )
            operations.append(exam_document(source, query, record, now))
        if key is not None:
            operations.append(
                {"index": {"_index": answers_index, "_id": answer_id(key, source.id), **version}}
            )
            operations.append(
                {
                    "query_key": key,
                    "source_id": source.id,
                    "answered_at": now.isoformat(),
                    "study_uids": [r.study_instance_uid for r in records],
                    "matches": [
                        {"uid": r.study_instance_uid, **(r.matched_by.model_dump() if r.matched_by else {})}
                        for r in records
                    ],
                }
            )
        actions = len(operations) // 2
        if self._batcher is not None:
            body = "".join(f"{dumps(line)}\n" for line in operations).encode()
            items = await self._batcher.submit(body, actions)
        else:
            try:
                response = await self._client.bulk(operations=operations)
            except ELASTICSEARCH_ERRORS as exc:
                raise failure(exc, CacheError, "bulk write failed") from exc
            items = response["items"] if response.get("errors") else []
        failed = [
            item
            for item in items
            if item.get("index", {}).get("error")
            and item["index"]["error"].get("type")
            != "version_conflict_engine_exception"  # a newer answer won
        ]
        if failed:
            reason = failed[0]["index"]["error"].get("type", "unknown")
            raise CacheError(f"{len(failed)} of {actions} documents were refused ({reason})")

    async def purge(self, query: PatientQuery, source_id: str | None = None) -> int:
        """Delete the answers to this query (one source's or all) and the studies they hold."""
        key = query.cache_key()
        if key is None:
            return 0
        filters: list[dict[str, Any]] = [{"term": {"query_key": key}}]
        if source_id is not None:
            filters.append({"term": {"source_id": source_id}})
        # First the purge's time, for every replica's reads: a write made before it may still land.
        await self.purges.mark(key, source_id, self._clock())
        if self._batcher is not None:
            # Writes queued before the purge land first, so the purge finds and deletes them.
            with contextlib.suppress(CacheError):
                await self._batcher.flush()
        exams_alias, answers_alias = self.indices.alias("exams"), self.indices.alias("answers")
        try:
            await self._client.indices.refresh(index=[exams_alias, answers_alias], ignore_unavailable=True)
            found = await self._client.search(
                index=answers_alias,
                query={"bool": {"filter": filters}},
                size=10_000,
                ignore_unavailable=True,
                allow_no_indices=True,
            )
            answers = [hit["_source"] for hit in found["hits"]["hits"]]
            exam_ids = sorted({document_id(a["source_id"], uid) for a in answers for uid in a["study_uids"]})
            # The same studies in every period's index (written there by later answers): an erasure is whole.
            exams: Any = (
                await self._client.search(
                    index=exams_alias,
                    query={"ids": {"values": exam_ids}},
                    size=10_000,
                    source=False,
                    ignore_unavailable=True,
                    allow_no_indices=True,
                )
                if exam_ids
                else {"hits": {"hits": []}}
            )
            operations: list[dict[str, Any]] = [
                {"delete": {"_index": hit["_index"], "_id": hit["_id"]}}
                for hit in [*exams["hits"]["hits"], *found["hits"]["hits"]]
            ]
            if operations:
                await self._client.bulk(operations=operations, refresh="wait_for")
        except ELASTICSEARCH_ERRORS as exc:
            raise failure(exc, CacheError, "cache purge failed") from exc
        return len(answers)
