"""Elasticsearch exam cache: one document per (source, study) and period, written with the bulk API.

Index templates with explicit, strict mappings are installed at start-up (or at the first write
after Elasticsearch comes back); answers go to time-based indices deleted whole by age
(:mod:`federation.cache._indices`). No analysis plugins are needed: text that must match
loosely is folded in Python before indexing.

Concurrent write-throughs share bulk requests (:class:`federation.cache._bulk.BulkBatcher`): a fan-out's source
answers, and the answers of concurrent queries, arrive within milliseconds of each other, and
one ``_bulk`` per answer made the loading of an index the slowest step of the cache.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from elasticsearch import AsyncElasticsearch, NotFoundError

from federation.cache._bulk import BulkBatcher
from federation.cache._indices import CacheIndexStats, CacheIndices
from federation.cache._purges import PurgeMarkers
from federation.cache.base import CachedAnswer, CacheHealth, ExamCache, document_id
from federation.elasticsearch import ELASTICSEARCH_ERRORS, failure, make_client
from federation.errors import CacheError
from federation.identity.names import fold, folded_name, group_parts
from federation.models import CacheStatus, PatientQuery, SourceInfo, StudyRecord
from federation.settings import CacheSettings

logger = logging.getLogger(__name__)

_LIVE_TTL_S = 60.0
"""How long the list of answers indices is reused: a period's index is always read, others join within this."""

MAPPING: dict[str, Any] = {
    "dynamic": "strict",
    "properties": {
        "source_id": {"type": "keyword"},
        "source_name": {"type": "keyword", "index": False},
        "query_key": {"type": "keyword"},
        "study_instance_uid": {"type": "keyword"},
        "patient_id": {"type": "keyword"},
        "issuer_of_patient_id": {"type": "keyword"},
        "patient_name": {"type": "keyword"},
        "patient_name_folded": {"type": "keyword"},
        "patient_family_folded": {"type": "keyword"},
        "patient_name_groups": {"type": "keyword", "index": False},
        "patient_birth_date": {"type": "date", "format": "strict_date"},
        "patient_sex": {"type": "keyword"},
        "study_date": {"type": "date", "format": "strict_date"},
        "study_time": {"type": "keyword"},
        "accession_number": {"type": "keyword"},
        "modalities": {"type": "keyword"},
        "description": {"type": "text"},
        "referring_physician_name": {"type": "keyword"},
        "number_of_series": {"type": "integer"},
        "number_of_instances": {"type": "integer"},
        "retrieve_ae_title": {"type": "keyword", "index": False},
        "retrieve_url": {"type": "keyword", "index": False},
        "specific_character_set": {"type": "keyword", "index": False},
        "cached_at": {"type": "date"},
    },
}


ANSWERS_MAPPING: dict[str, Any] = {
    "dynamic": "strict",
    "properties": {
        "query_key": {"type": "keyword"},
        "source_id": {"type": "keyword"},
        "answered_at": {"type": "date"},
        "study_uids": {"type": "keyword"},
        "matches": {"type": "object", "enabled": False},
    },
}


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def answer_id(query_key: str, source_id: str) -> str:
    """The stable id of one source's answer to one query (the answers index)."""
    return hashlib.sha256(f"{query_key}\x00{source_id}".encode()).hexdigest()


def exam_document(
    source: SourceInfo, query: PatientQuery, record: StudyRecord, now: dt.datetime
) -> dict[str, Any]:
    """One study as the exams index stores it."""
    return {
        "source_id": source.id,
        "source_name": source.name,
        "query_key": query.cache_key(),
        "study_instance_uid": record.study_instance_uid,
        "patient_id": record.patient_id,
        "issuer_of_patient_id": record.issuer_of_patient_id,
        "patient_name": record.patient_name,
        "patient_name_folded": folded_name(record.patient_name) if record.patient_name else None,
        # One folded family name per group: a search in kanji or hangul finds the name too.
        "patient_family_folded": list(dict.fromkeys(fold(p.family) for p in group_parts(record.patient_pn)))
        if record.patient_pn
        else None,
        "patient_name_groups": list(record.patient_name_groups) if record.patient_name_groups else None,
        "patient_birth_date": record.patient_birth_date.isoformat() if record.patient_birth_date else None,
        "patient_sex": record.patient_sex,
        "study_date": record.study_date.isoformat() if record.study_date else None,
        "study_time": record.study_time.isoformat() if record.study_time else None,
        "accession_number": record.accession_number,
        "modalities": list(record.modalities),
        "description": record.description,
        "referring_physician_name": record.referring_physician_name,
        "number_of_series": record.number_of_series,
        "number_of_instances": record.number_of_instances,
        "retrieve_ae_title": record.retrieve_ae_title,
        "retrieve_url": record.retrieve_url,
        "specific_character_set": list(record.specific_character_set),
        "cached_at": now.isoformat(),
    }


_RECORD_FIELDS = frozenset(StudyRecord.model_fields)
"""StudyRecord's field names, looked up once: ``model_fields`` is a computed class property."""


def _record(source: dict[str, Any], **extra: Any) -> StudyRecord:
    """A cached document as a StudyRecord, validated once with ``extra`` fields (no copy after)."""
    fields = {k: v for k, v in source.items() if k in _RECORD_FIELDS and v is not None}
    fields["modalities"] = tuple(fields.get("modalities", ()))
    fields["specific_character_set"] = tuple(fields.get("specific_character_set", ()))
    if "patient_name_groups" in fields:
        fields["patient_name_groups"] = tuple(fields["patient_name_groups"])
    fields.update(extra)
    return StudyRecord.model_validate(fields)


class ElasticsearchExamCache(ExamCache):
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

    async def _live_answers(self) -> list[str]:
        """The answers indices to read, newest first (listed at most once a minute; the current one always)."""
        now = time.monotonic()
        if self._live is None or now - self._live[0] > _LIVE_TTL_S:
            with contextlib.suppress(CacheError):
                self._live = (now, await self.indices.live("answers"))
        known = self._live[1] if self._live is not None else []
        current = self.answers_index
        return known if current in known else [current, *known]

    async def stats(self) -> list[CacheIndexStats]:
        """Documents and bytes of every cache index (``pacsfed cache stats``)."""
        return await self.indices.stats()

    async def delete_expired(self) -> list[str]:
        """Delete the indices past ``keep_days`` now (the maintenance task does it hourly)."""
        return await self.indices.delete_expired()

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
            body = "".join(f"{_dumps(line)}\n" for line in operations).encode()
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
                records.append(_record(doc, matched_by=match or None, cached_at=answered_at))
            else:
                result[answer["source_id"]] = CachedAnswer(answer["source_id"], answered_at, tuple(records))
        return result

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
                newest[hit["_id"]] = _record(hit["_source"])
        return list(newest.values())

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
