"""Deleting expired entries by id, on every distribution: a search for them, then one bulk delete.

``_delete_by_query`` is a module some distributions lack (the test distribution does); a search and
a bulk delete by id work everywhere. Each delete is conditional on the entry being unchanged since
the search (``if_seq_no``): an entry renewed meanwhile (a window opened again) is kept. A failure is
logged (the index and the failure's kind only) and counted per index, never dropped silently.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Sequence
from typing import Any, Protocol

from elasticsearch import AsyncElasticsearch, NotFoundError

from federation.elasticsearch import ELASTICSEARCH_ERRORS

__all__ = ["Expiring", "clean_periodically", "cleanup_failures", "delete_expired"]

logger = logging.getLogger(__name__)

_FAILURES: collections.Counter[str] = collections.Counter()
_BATCH = 1000
_MAX_ROUNDS = 100
"""At most this many batches a clean-up (100 000 entries); the rest wait for the next one."""


class Expiring(Protocol):
    """A store whose expired entries :func:`clean_periodically` deletes."""

    index: str

    async def clean_expired(self) -> int:
        """Delete the entries expired long enough; how many (raises only if the index cannot be prepared)."""
        ...


def cleanup_failures() -> dict[str, int]:
    """Failed clean-ups of this process so far, by index (for /readyz and metrics)."""
    return dict(_FAILURES)


async def delete_expired(client: AsyncElasticsearch, index: str, field: str, cutoff: str) -> int:
    """Delete the entries of ``index`` whose date ``field`` is before ``cutoff`` (ISO 8601); how many were deleted.

    Never raises for Elasticsearch's failures: they are logged and counted (:func:`cleanup_failures`).
    """
    deleted = 0
    try:
        for _ in range(_MAX_ROUNDS):
            found = await client.search(
                index=index,
                query={"range": {field: {"lt": cutoff}}},
                size=_BATCH,
                source=False,
                seq_no_primary_term=True,
            )
            hits: list[dict[str, Any]] = found["hits"]["hits"]
            if not hits:
                break
            response = await client.bulk(
                operations=[
                    {
                        "delete": {
                            "_index": hit["_index"],
                            "_id": hit["_id"],
                            "if_seq_no": hit["_seq_no"],
                            "if_primary_term": hit["_primary_term"],
                        }
                    }
                    for hit in hits
                ],
                refresh="wait_for",
            )
            items = [item["delete"] for item in response["items"]]
            deleted += sum(1 for item in items if item.get("result") == "deleted")
            # 404: deleted by another instance; 409: renewed since the search (kept on purpose).
            refused = [item for item in items if item.get("error") and item.get("status") not in (404, 409)]
            if refused:
                _failed(index, str(refused[0]["error"].get("type", "unknown")), len(refused))
                break
            if len(hits) < _BATCH:
                break
    except NotFoundError:
        pass  # no index yet: nothing has expired
    except ELASTICSEARCH_ERRORS as exc:
        _failed(index, type(exc).__name__, 1)
    if deleted:
        logger.info("clean-up: deleted %d expired entries of %s", deleted, index)
    return deleted


def _failed(index: str, kind: str, count: int) -> None:
    _FAILURES[index] += 1
    logger.warning("clean-up: expired entries of %s not deleted (%s, %d refused)", index, kind, count)


async def clean_periodically(stores: Sequence[Expiring], interval_s: float) -> None:
    """Every ``interval_s`` seconds, forever, delete each store's expired entries (start-up did it once).

    Idempotent and conditional on ``seq_no``: every process and replica may run it. Any failure
    is logged and counted (:func:`cleanup_failures`) and the next round comes as planned.
    """
    while True:
        await asyncio.sleep(interval_s)
        for store in stores:
            try:
                await store.clean_expired()
            except Exception as exc:  # a down node, or anything unforeseen: the next round retries
                _failed(store.index, type(exc).__name__, 1)
