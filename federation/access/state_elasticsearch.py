"""Decision state shared by every worker: break-the-glass windows, share-code lock-out counts, short-lived entries.

Both live in one Elasticsearch index (``<prefix>-access-state``), one document each, keyed by a
SHA-256 of what names it (a subject and a patient key; a lock-out key), so the index holds no
patient id, subject or client address in the clear. Reads are real-time gets (no refresh waited
for): a window opened or a failure counted through one worker holds on the next request to any
other. Times are on the wall clock (shared between processes), never the monotonic one.

Each class extends its in-memory counterpart and keeps writing to it too: while Elasticsearch
cannot be reached, this worker still honours what it saw itself (a window it opened, failures it
counted), and a failed write is logged, never turned into a refused emergency access.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import logging
import time
from collections.abc import Callable
from typing import Any

from elasticsearch import AsyncElasticsearch, ConflictError, NotFoundError

from federation.access.expiry import delete_expired
from federation.access.principals import EmergencyWindow, EmergencyWindows
from federation.access.share import RedemptionLimiter
from federation.elasticsearch import ELASTICSEARCH_ERRORS, IndexSetup, ensure_index, failure
from federation.errors import CacheError

__all__ = [
    "AccessStateIndex",
    "ElasticsearchEmergencyWindows",
    "ElasticsearchRedemptionLimiter",
    "SharedEntries",
    "state_index",
]

logger = logging.getLogger(__name__)

MAPPING: dict[str, Any] = {
    "dynamic": "strict",
    "properties": {
        "kind": {"type": "keyword"},
        "until": {"type": "date"},
        "reason": {"type": "keyword", "index": False, "doc_values": False},
        "failures": {"type": "double", "index": False, "doc_values": False},
        "value": {"type": "object", "enabled": False},
    },
}
_KEEP_EXPIRED = dt.timedelta(days=1)
_FAILURES: tuple[type[Exception], ...] = (CacheError, *ELASTICSEARCH_ERRORS)
_SETUP_TIMEOUT_S = 30.0
_RETRIES = 10
"""Attempts at counting one failure while other workers count theirs into the same document."""


def state_index(index_prefix: str) -> str:
    """The index holding the shared decision state."""
    return f"{index_prefix}-access-state"


def _doc_id(kind: str, *parts: str) -> str:
    digest = hashlib.sha256("\x00".join(parts).encode("utf-8")).hexdigest()
    return f"{kind}:{digest}"


def _iso(at: float) -> str:
    return dt.datetime.fromtimestamp(at, dt.UTC).isoformat()


class _StateIndex:
    """The index, set up once, and the reads and writes both kinds of state need."""

    def __init__(self, client: AsyncElasticsearch, index_prefix: str) -> None:
        self.client = client
        self.index = state_index(index_prefix)
        self._ready = False
        self._setting_up = asyncio.Lock()

    async def ensure(self) -> None:
        if self._ready:
            return
        async with self._setting_up:  # first uses at once (windows, lock-outs, entries): one set-up
            if not self._ready:  # (unless another first use set it up meanwhile)
                lenient = self.client.options(request_timeout=_SETUP_TIMEOUT_S)  # once a process
                await ensure_index(
                    lenient,
                    IndexSetup(self.index, MAPPING),
                    CacheError,
                    "access state: cannot prepare the index",
                )
                self._ready = True

    async def start(self, now: float) -> None:
        """Create the index and drop entries closed for a day, if Elasticsearch is up."""
        with contextlib.suppress(CacheError):
            await self.clean_expired(now)

    async def clean_expired(self, now: float | None = None) -> int:
        """Delete the entries closed for a day (at start-up, then periodically); CacheError if no index."""
        await self.ensure()
        cutoff = _iso((time.time() if now is None else now) - _KEEP_EXPIRED.total_seconds())
        return await delete_expired(self.client, self.index, "until", cutoff)  # failures logged, counted


AccessStateIndex = _StateIndex
"""The state index of one process: give the same one to the windows, the lock-outs and ``SharedEntries``
(``index=``), so that it is set up once, not once each."""


class ElasticsearchEmergencyWindows(EmergencyWindows):
    """Break-the-glass windows every worker sees, with this worker's memory as the fallback."""

    def __init__(
        self,
        client: AsyncElasticsearch,
        index_prefix: str,
        window_s: float,
        *,
        clock: Callable[[], float] = time.time,
        index: AccessStateIndex | None = None,
    ) -> None:
        super().__init__(window_s)
        self._index = index or _StateIndex(client, index_prefix)
        self._clock = clock

    async def start(self) -> None:
        """Prepare the index (never fails: a down node is retried at the first use)."""
        await self._index.start(self._clock())

    async def open(self, subject: str, patient_key: str, reason: str) -> None:
        """Open the window here and in Elasticsearch (a failed write is logged; this worker still honours it)."""
        self.open_here(subject, patient_key, reason)
        until = _iso(self._clock() + self.window_s)
        try:
            await self._index.ensure()
            await self._index.client.index(
                index=self._index.index,
                id=_doc_id("window", subject, patient_key),
                document={"kind": "window", "until": until, "reason": reason},
            )
        except _FAILURES as exc:
            logger.warning(
                "access state: a break-the-glass window holds on this worker only (%s)",
                exc if isinstance(exc, CacheError) else type(exc).__name__,
            )

    async def window(self, subject: str, patient_key: str) -> EmergencyWindow | None:
        """The window Elasticsearch holds (opened through any worker), else the one this worker saw."""
        try:
            await self._index.ensure()
            found = await self._index.client.get(
                index=self._index.index, id=_doc_id("window", subject, patient_key)
            )
        except NotFoundError:
            found = None
        except _FAILURES as exc:
            error = (
                exc if isinstance(exc, CacheError) else failure(exc, CacheError, "access state: read failed")
            )
            logger.warning("access state: windows read from this worker only (%s)", error)
            return self.window_here(subject, patient_key)
        if found is not None:
            source = found["_source"]
            closes_at = dt.datetime.fromisoformat(source["until"])
            if closes_at.timestamp() > self._clock():
                return EmergencyWindow(str(source["reason"]), closes_at)
        return self.window_here(subject, patient_key)


class ElasticsearchRedemptionLimiter(RedemptionLimiter):
    """Failed redemptions counted in Elasticsearch, so a lock-out reached through one worker holds on all."""

    def __init__(
        self,
        client: AsyncElasticsearch,
        index_prefix: str,
        max_failures: int,
        window_s: float,
        *,
        clock: Callable[[], float] = time.time,
        index: AccessStateIndex | None = None,
    ) -> None:
        super().__init__(max_failures, window_s)
        self._index = index or _StateIndex(client, index_prefix)
        self._clock = clock

    async def start(self) -> None:
        """Prepare the index (never fails: a down node is retried at the first use)."""
        await self._index.start(self._clock())

    async def locked(self, *keys: str) -> bool:
        """True when any of ``keys`` has too many failures lately, counted by any worker."""
        if self.locked_here(*keys):
            return True
        now = self._clock()
        try:
            await self._index.ensure()
            found = await self._index.client.mget(
                index=self._index.index, ids=[_doc_id("lockout", key) for key in keys]
            )
        except _FAILURES as exc:
            logger.warning("access state: lock-outs counted on this worker only (%s)", type(exc).__name__)
            return False
        for doc in found["docs"]:
            failures = (doc.get("_source") or {}).get("failures") or []
            if sum(1 for at in failures if at > now - self.window_s) >= self.max_failures:
                return True
        return False

    async def fail(self, *keys: str) -> None:
        """Count one failure against each of ``keys``, here and in Elasticsearch."""
        self.fail_here(*keys)
        try:
            await self._index.ensure()
            await asyncio.gather(*(self._count(key) for key in keys))
        except _FAILURES as exc:
            logger.warning(
                "access state: a failed redemption counted on this worker only (%s)", type(exc).__name__
            )

    async def _count(self, key: str) -> None:
        """Add one failure to the key's document with optimistic concurrency (no scripts: not every node has them)."""
        doc_id = _doc_id("lockout", key)
        for _ in range(_RETRIES):
            now = self._clock()
            try:
                found = await self._index.client.get(index=self._index.index, id=doc_id)
            except NotFoundError:
                found = None
            failures: list[float] = list(found["_source"].get("failures") or []) if found is not None else []
            kept = [at for at in failures if at > now - self.window_s]
            kept = kept[max(0, len(kept) - (self.max_failures - 1)) :]  # more would change nothing
            document = {"kind": "lockout", "failures": [*kept, now], "until": _iso(now + self.window_s)}
            conditions: dict[str, Any] = (
                {"if_seq_no": found["_seq_no"], "if_primary_term": found["_primary_term"]}
                if found is not None
                else {"op_type": "create"}
            )
            try:
                await self._index.client.index(
                    index=self._index.index, id=doc_id, document=document, **conditions
                )
            except ConflictError:
                continue  # another worker counted meanwhile: count again on top of it
            return
        raise CacheError("access state: too many workers counting at once")


class SharedEntries:
    """Short-lived entries every worker can read back by their (secret) key: a report link, for one."""

    def __init__(
        self,
        client: AsyncElasticsearch,
        index_prefix: str,
        *,
        clock: Callable[[], float] = time.time,
        index: AccessStateIndex | None = None,
    ) -> None:
        self._index = index or _StateIndex(client, index_prefix)
        self._clock = clock

    async def put(self, kind: str, key: str, value: dict[str, Any], until: float) -> None:
        """Keep ``value`` under ``key`` until ``until`` (wall clock); CacheError when it cannot be written."""
        try:
            await self._index.ensure()
            await self._index.client.index(
                index=self._index.index,
                id=_doc_id(kind, key),
                document={"kind": kind, "until": _iso(until), "value": value},
            )
        except ELASTICSEARCH_ERRORS as exc:
            raise failure(exc, CacheError, "access state: write failed") from exc

    async def get(self, kind: str, key: str) -> dict[str, Any] | None:
        """The value kept under ``key``, None when there is none or it has expired; CacheError when unreadable."""
        try:
            await self._index.ensure()
            found = await self._index.client.get(index=self._index.index, id=_doc_id(kind, key))
        except NotFoundError:
            return None
        except ELASTICSEARCH_ERRORS as exc:
            raise failure(exc, CacheError, "access state: read failed") from exc
        source = found["_source"]
        if dt.datetime.fromisoformat(source["until"]).timestamp() <= self._clock():
            return None
        value: dict[str, Any] = source["value"]
        return value
