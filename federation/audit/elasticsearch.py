"""Audit records in Elasticsearch: monthly indices ``<prefix>-audit-YYYY.MM`` with their own retention.

The indices get a strict mapping from their own index template, apart from the cache's, and are
deleted whole once their newest possible record is older than ``retention_days`` (never by the
cache) both by the wall clock and along the journal's timeline (:mod:`federation.audit.clock`),
and never while they hold a record the journal still has (a clock stepped back files fresh
records under an old month: the sequence numbers tell). Records are written with ``op_type: create`` under their own id, so shipping the same
journal stretch twice (a replay after a crash or an outage) stores each record once.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Sequence
from typing import Any

from elasticsearch import AsyncElasticsearch

from federation.audit.clock import Timeline
from federation.audit.records import AuditRecord, PageKey
from federation.audit.sink import AuditSink, bare_id, patient_forms
from federation.elasticsearch import ELASTICSEARCH_ERRORS, IndexSetup, ensure_index, failure
from federation.errors import AuditError

logger = logging.getLogger(__name__)

AUDIT_MAPPING: dict[str, Any] = {
    "dynamic": "strict",
    "properties": {
        "id": {"type": "keyword"},
        "at": {"type": "date"},
        "action": {"type": "keyword"},
        "outcome": {"type": "keyword"},
        "actor": {"type": "keyword"},
        "actor_kind": {"type": "keyword"},
        "client_address": {"type": "keyword"},
        "request_id": {"type": "keyword"},
        "channel": {"type": "keyword"},
        "patient_ids": {"type": "keyword"},
        "patient_bare_ids": {"type": "keyword"},
        "patient_ids_omitted": {"type": "integer"},
        "sources": {"type": "keyword"},
        "sources_omitted": {"type": "integer"},
        "suppressed": {"type": "integer"},
        "exam_count": {"type": "integer"},
        "reason": {"type": "text"},
        "emergency": {"type": "boolean"},
        "detail": {"type": "keyword"},
        "journal": {"type": "keyword"},
        "seq": {"type": "long"},
    },
}
_DERIVED = ("patient_bare_ids",)


def audit_document(record: AuditRecord) -> dict[str, Any]:
    """The indexed form of ``record``: its fields plus the bare patient IDs."""
    document = record.model_dump(mode="json")
    document["patient_bare_ids"] = sorted({bare_id(pid) for pid in record.patient_ids})
    return document


def _from_document(source: dict[str, Any]) -> AuditRecord:
    return AuditRecord.model_validate({k: v for k, v in source.items() if k not in _DERIVED})


def _next_month(day: dt.date) -> dt.date:
    return (day.replace(day=28) + dt.timedelta(days=4)).replace(day=1)


class ElasticsearchAuditSink(AuditSink):
    """Ships journal records to monthly audit indices and answers ``auditEvents`` from them."""

    name = "elasticsearch"
    durable = True
    searchable = True

    def __init__(self, client: AsyncElasticsearch, index_prefix: str, retention_days: int) -> None:
        self._client = client
        self.prefix = f"{index_prefix}-audit"
        self.retention_days = retention_days
        self._month = re.compile(rf"^{re.escape(self.prefix)}-(\d{{4}})\.(\d{{2}})$")
        self._template_ready = False

    def index_for(self, at: dt.datetime) -> str:
        """The monthly index a record made at ``at`` belongs to (UTC month)."""
        return f"{self.prefix}-{at.astimezone(dt.UTC):%Y.%m}"

    async def start(self) -> None:
        """Install the index template (AuditError while Elasticsearch is down)."""
        await self._ensure_template()

    async def _ensure_template(self) -> None:
        if self._template_ready:
            return
        # Monthly indices, made by the first record of their month; those made by an earlier
        # version get the fields they lack (additive only).
        setup = IndexSetup(
            f"{self.prefix}-*",
            AUDIT_MAPPING,
            settings={"number_of_shards": 1, "number_of_replicas": 0, "refresh_interval": "1s"},
            template=self.prefix,
            priority=200,
            meta={"owner": "pacsfed-audit"},
            create=False,
        )
        await ensure_index(
            self._client, setup, AuditError, "elasticsearch: cannot install the audit template"
        )
        self._template_ready = True

    async def ship(self, records: Sequence[AuditRecord]) -> None:
        """Create each record under its id; an id already there (409) counts as shipped."""
        if not records:
            return
        await self._ensure_template()
        operations: list[dict[str, Any]] = []
        for record in records:
            operations.append({"create": {"_index": self.index_for(record.at), "_id": record.id}})
            operations.append(audit_document(record))
        try:
            response = await self._client.bulk(operations=operations, refresh="wait_for")
        except ELASTICSEARCH_ERRORS as exc:
            self._template_ready = False  # a node that lost its data needs the template again
            raise failure(exc, AuditError, "elasticsearch: audit bulk failed") from exc
        if not response.get("errors"):
            return
        failed = [
            item["create"]
            for item in response["items"]
            if item.get("create", {}).get("error") and item["create"].get("status") != 409
        ]
        if failed:
            kind = failed[0]["error"].get("type", "unknown")
            raise AuditError(f"elasticsearch: {len(failed)} of {len(records)} audit records refused ({kind})")

    async def search(
        self,
        *,
        patient_id: str | None = None,
        actor: str | None = None,
        first: int = 50,
        after: PageKey | None = None,
    ) -> list[AuditRecord]:
        """The newest matching records first (``ID`` matches every issuer; ``ID^^^ISSUER`` that one)."""
        filters: list[dict[str, Any]] = []
        if patient_id is not None:
            forms = patient_forms(patient_id)
            if forms:
                filters.append({"terms": {"patient_ids": list(forms)}})
            else:
                filters.append({"term": {"patient_bare_ids": patient_id}})
        if actor is not None:
            filters.append({"term": {"actor": actor}})
        try:
            response = await self._client.search(
                index=f"{self.prefix}-*",
                query={"bool": {"filter": filters}},
                sort=[{"at": "desc"}, {"id": "desc"}],
                size=max(0, first),
                search_after=list(after) if after is not None else None,
                ignore_unavailable=True,
                allow_no_indices=True,
            )
        except ELASTICSEARCH_ERRORS as exc:
            raise failure(exc, AuditError, "elasticsearch: audit search failed") from exc
        return [_from_document(hit["_source"]) for hit in response["hits"]["hits"]]

    async def maintain(self, timeline: Timeline) -> None:
        """Delete the monthly indices whose every record is older than ``retention_days`` by ``timeline``."""
        await self.delete_expired(dt.datetime.fromtimestamp(timeline.now, dt.UTC), timeline)

    async def delete_expired(self, now: dt.datetime, timeline: Timeline | None = None) -> list[str]:
        """Delete expired monthly indices as of ``now`` (and, given one, along ``timeline``); return their names.

        With a timeline, an index is expired only when the records' own trusted age agrees with
        the clock, and never while it holds a record of that journal that the journal still has.
        """
        cutoff = now.astimezone(dt.UTC).date() - dt.timedelta(days=self.retention_days)
        try:
            found = await self._client.indices.get(
                index=f"{self.prefix}-*", allow_no_indices=True, ignore_unavailable=True
            )
        except ELASTICSEARCH_ERRORS as exc:
            raise failure(exc, AuditError, "elasticsearch: cannot list audit indices") from exc
        expired = []
        for name in found:
            match = self._month.match(name)
            if match is None:
                continue
            end = _next_month(dt.date(int(match.group(1)), int(match.group(2)), 1))
            if end > cutoff:
                continue
            if timeline is not None:
                age = timeline.age_of(dt.datetime(end.year, end.month, end.day, tzinfo=dt.UTC).timestamp())
                if age is None or age < self.retention_days * 86_400:
                    logger.warning(
                        "audit: index %s is past retention by the clock only; kept (the records disagree)",
                        name,
                    )
                    continue
            expired.append(name)
        if expired and timeline is not None:
            expired = await self._without_journaled(expired, timeline)
        if expired:
            try:
                await self._client.indices.delete(index=",".join(sorted(expired)))
            except ELASTICSEARCH_ERRORS as exc:
                raise failure(exc, AuditError, "elasticsearch: cannot delete expired audit indices") from exc
            logger.info(
                "audit: deleted %d expired audit indices: %s", len(expired), ", ".join(sorted(expired))
            )
        return sorted(expired)

    async def _without_journaled(self, names: list[str], timeline: Timeline) -> list[str]:
        """``names`` less the indices holding a record the journal still has (by journal id and sequence)."""
        if timeline.journal is None or timeline.first_seq is None:
            return names
        try:
            response = await self._client.search(
                index=",".join(names),
                size=0,
                query={
                    "bool": {
                        "filter": [
                            {"term": {"journal": timeline.journal}},
                            {"range": {"seq": {"gte": timeline.first_seq}}},
                        ]
                    }
                },
                aggregations={"indices": {"terms": {"field": "_index", "size": max(1, len(names))}}},
                ignore_unavailable=True,
            )
        except ELASTICSEARCH_ERRORS as exc:
            raise failure(exc, AuditError, "elasticsearch: cannot check audit indices") from exc
        held = {bucket["key"] for bucket in response["aggregations"]["indices"]["buckets"]}
        for name in sorted(held):
            logger.warning(
                "audit: index %s holds records the journal still has (clock stepped back); kept", name
            )
        return [name for name in names if name not in held]
