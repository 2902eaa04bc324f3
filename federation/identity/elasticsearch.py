"""The cross-reference store in Elasticsearch: one document per (person, identifier) link."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterable, Sequence
from typing import Any

from elasticsearch import AsyncElasticsearch

from federation.elasticsearch import ELASTICSEARCH_ERRORS, IndexSetup, ensure_index, failure
from federation.errors import CacheError
from federation.identity.resolver import Identifier, IdentityLink, IdentityStore

MAPPING: dict[str, Any] = {
    "dynamic": "strict",
    "properties": {
        "person": {"type": "keyword"},
        "issuer": {"type": "keyword"},
        "patient_id": {"type": "keyword"},
        "key": {"type": "keyword"},
        "added_by": {"type": "keyword"},
        "added_at": {"type": "date"},
    },
}
_MAX_HITS = 1000


def _key(identifier: Identifier) -> str:
    return f"{identifier.issuer}|{identifier.value}"


def _doc_id(link: IdentityLink) -> str:
    return hashlib.sha256(f"{link.person}\x00{_key(link.identifier)}".encode()).hexdigest()


class ElasticsearchIdentityStore(IdentityStore):
    """Links in ``<prefix>-identity``, sharing the process's Elasticsearch client."""

    def __init__(self, client: AsyncElasticsearch, index_prefix: str) -> None:
        self._client = client
        self.index = f"{index_prefix}-identity"
        self._ready = False

    async def start(self) -> None:
        """Create the index now if Elasticsearch is up; otherwise at first use."""
        with contextlib.suppress(CacheError):
            await self._ensure_index()

    async def _ensure_index(self) -> None:
        if self._ready:
            return
        setup = IndexSetup(self.index, MAPPING, upgrade=False)
        await ensure_index(self._client, setup, CacheError, "cannot create the identity index")
        self._ready = True

    async def add_links(self, links: Sequence[IdentityLink]) -> int:
        """Bulk-index the links, visible to the next search."""
        if not links:
            return 0
        await self._ensure_index()
        operations: list[dict[str, Any]] = []
        for link in links:
            operations.append({"index": {"_index": self.index, "_id": _doc_id(link)}})
            operations.append(
                {
                    "person": link.person,
                    "issuer": link.identifier.issuer,
                    "patient_id": link.identifier.value,
                    "key": _key(link.identifier),
                    "added_by": link.added_by,
                    "added_at": link.added_at.isoformat(),
                }
            )
        try:
            response = await self._client.bulk(operations=operations, refresh="wait_for")
        except ELASTICSEARCH_ERRORS as exc:
            raise failure(exc, CacheError, "identity links could not be written") from exc
        if response.get("errors"):
            raise CacheError("some identity links were refused")
        return len(links)

    async def _search(self, field: str, values: list[str]) -> list[dict[str, Any]]:
        if not values:
            return []
        await self._ensure_index()
        try:
            response = await self._client.search(
                index=self.index, query={"terms": {field: values}}, size=_MAX_HITS
            )
        except ELASTICSEARCH_ERRORS as exc:
            raise failure(exc, CacheError, "identity lookup failed") from exc
        return [hit["_source"] for hit in response["hits"]["hits"]]

    async def persons_of(self, identifiers: Iterable[Identifier]) -> set[str]:
        """Persons linked to any of the identifiers."""
        return {doc["person"] for doc in await self._search("key", sorted(_key(i) for i in identifiers))}

    async def identifiers_of(self, persons: Iterable[str]) -> set[Identifier]:
        """Identifiers linked to any of the persons."""
        docs = await self._search("person", sorted(persons))
        return {Identifier(doc["issuer"], doc["patient_id"]) for doc in docs}
