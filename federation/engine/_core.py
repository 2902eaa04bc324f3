"""The engine's state and its plain parts: sources, selection, deadlines, background tasks."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Coroutine, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from federation.cache.base import ExamCache
from federation.engine._overload import OverloadWatch
from federation.engine._query_state import SharedRequest, breaker_for, identity_of, source_setting
from federation.engine.observe import EngineObserver
from federation.engine.resilience import CircuitState
from federation.errors import (
    Overloaded,
    QueryError,
)
from federation.identity.resolver import IdentityResolver, IdentityStore
from federation.models import CacheStatus, Deadline, SourceInfo
from federation.settings import QuerySettings

if TYPE_CHECKING:  # connectors import the engine's models: no import at run time, no cycle
    from connectors.base import Connector

T = TypeVar("T")


class _Slots(asyncio.Semaphore):
    """A source's slots: ``locked()`` builds no generator while nobody waits (asked twice per source a query asks)."""

    def __init__(self, value: int) -> None:
        super().__init__(value)
        self.capacity = value

    def locked(self) -> bool:
        return self._value == 0 or (bool(self._waiters) and super().locked())

    def spare(self) -> bool:
        """More than half the slots free and nobody waiting: optional work here takes no caller's place.

        Half taken is not spare: a burst of optional work holds at most half the slots (one of one),
        and callers keep the rest.
        """
        return not self._waiters and self._value * 2 > self.capacity

    def take_spare(self) -> bool:
        """Take one slot now, without waiting, if it is :meth:`spare`; ``release()`` gives it back.

        Taken when the optional work is decided, not when its task first runs: a burst of
        decisions made before any of them held a slot all saw the same free slots.
        """
        if not self.spare():
            return False
        self._value -= 1  # what acquire() does when the semaphore is not locked
        return True


class EngineCore:
    """What every part of :class:`federation.engine.FederationEngine` shares."""

    def __init__(
        self,
        connectors: Sequence[Connector],
        cache: ExamCache | None,
        query_settings: QuerySettings | None = None,
        cache_write_wait_s: float = 0.5,
        identity_store: IdentityStore | None = None,
        national_issuer: str | None = None,
        max_pending_queries: int = 100,
        observer: EngineObserver | None = None,
    ) -> None:
        self._observer = observer
        """Told of outcomes, fan-outs and cache reads (metrics, traces); None costs nothing."""
        self._overload = OverloadWatch(max_pending_queries)
        self._connectors = {connector.id: connector for connector in connectors}
        self._identity_store = identity_store
        self._resolver = IdentityResolver(identity_store, national_issuer)
        self._bare_resolver = IdentityResolver(None, national_issuer)
        self._breakers = {
            c.id: breaker_for(c, functools.partial(self._overload.transition, c.id)) for c in connectors
        }
        self._identities = {c.id: identity_of(c) for c in connectors}
        self._inflight: dict[tuple[str, str], SharedRequest] = {}
        self._purges: dict[str, int] = {}
        self._writes: dict[str, set[asyncio.Task[Any]]] = {}
        """Cache writes past their purge check, by cache key: a purge waits for them to land first."""
        self._late_writes: dict[asyncio.Task[Any], list[str | None]] = {}
        """Writes a purge stopped waiting for, with the sources it purged (None: all): undone on landing."""
        self._limits = {c.id: _Slots(source_setting(c, "max_concurrency", 4)) for c in connectors}
        self._retrieval_limits = {c.id: _Slots(source_setting(c, "max_retrievals", 16)) for c in connectors}
        """Slots for image retrievals (``max_retrievals``): a long download never holds a query's slot."""
        self._report_limits = {c.id: _Slots(max(1, self._limits[c.id].capacity // 2)) for c in connectors}
        """Report reads take a query slot, but hold at most half of them: a FHIR search reading forty
        reports at once never makes a history query wait for all of them."""
        self._cache = cache
        self._query_settings = query_settings or QuerySettings()
        self._cache_write_wait_s = cache_write_wait_s
        self._background: set[asyncio.Task[Any]] = set()
        self._last_cache_status = CacheStatus.OK if cache is not None else CacheStatus.DISABLED

    @property
    def sources(self) -> list[SourceInfo]:
        """Every configured source, in configuration order."""
        return [connector.info for connector in self._connectors.values()]

    @property
    def cache(self) -> ExamCache | None:
        """The exam cache, if one is configured."""
        return self._cache

    def select(self, source_ids: Sequence[str] | None) -> list[Connector]:
        """The connectors to ask: all of them, or those named (unknown names are a QueryError)."""
        if source_ids is None:
            return list(self._connectors.values())
        unknown = sorted({sid for sid in source_ids if sid not in self._connectors})
        if unknown:
            raise QueryError(f"unknown source ids: {', '.join(unknown)}", code="UNKNOWN_SOURCE")
        if not source_ids:
            raise QueryError("sources, when given, must name at least one source", code="BAD_QUERY")
        wanted = set(source_ids)
        return [c for sid, c in self._connectors.items() if sid in wanted]

    def deadline_for(self, deadline_ms: int | None) -> Deadline:
        """The query's deadline: the default, or the one asked for within the allowed range."""
        limits = self._query_settings
        if deadline_ms is None:
            deadline_ms = limits.default_deadline_ms
        if not 50 <= deadline_ms <= limits.max_deadline_ms:
            raise QueryError(
                f"deadlineMs must be between 50 and {limits.max_deadline_ms}", code="BAD_DEADLINE"
            )
        return Deadline.after(deadline_ms / 1000)

    @property
    def identity_store(self) -> IdentityStore | None:
        """The cross-reference store, if one is configured."""
        return self._identity_store

    def admitted(self) -> contextlib.AbstractContextManager[None]:
        """Hold one of ``server.max_pending_queries`` places for a patient query, or raise Overloaded."""
        return self._overload.admitted()

    def arriving(self, *, checked: bool = False) -> contextlib.AbstractContextManager[None]:
        """Count an API request from its first byte, or raise Overloaded while admitted queries are at ``server.max_pending_queries``.

        ``checked``: the request was let in by :meth:`refusal` already: counted, not asked again.
        """
        return self._overload.arriving(checked=checked)

    def refusal(self, in_hand: int = 0) -> Overloaded | None:
        """The Overloaded to answer now (counted), or None: admitted queries, or ``in_hand`` requests read whole, at the limit."""
        return self._overload.refusal(in_hand)

    def saturation(self) -> list[str]:
        """Why pacsfed is at its own limits now (empty when it is not), for ``/readyz``."""
        return self._overload.saturation()

    def load_counters(self) -> dict[str, object]:
        """In-process counters: pending and refused queries, BUSY sources, stale answers, breaker transitions."""
        return self._overload.snapshot()

    def circuit_state(self, source_id: str) -> CircuitState:
        """The circuit breaker state of one source."""
        return self._breakers[source_id].state

    def _spawn(self, coroutine: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        task = asyncio.ensure_future(coroutine)
        self._background.add(task)
        task.add_done_callback(self._reap)
        return task

    def _reap(self, task: asyncio.Task[Any]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            # Retrieve it so asyncio does not log "exception was never retrieved".
            task.exception()
