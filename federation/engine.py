"""The federation engine: one patient query fanned out to every selected source under one deadline.

Every front end (GraphQL today; FHIR, the web page, DIMSE and DICOMweb endpoints later) calls
:meth:`FederationEngine.patient_history` or :meth:`FederationEngine.stream_history` the same way.
A source that fails or is late becomes a status in the answer; what the others returned is kept.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import AsyncIterator, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from connectors.base import Connector, SourceAnswer
from federation.cache import CacheHealth, ExamCache
from federation.errors import (
    CacheError,
    ConnectorError,
    QueryError,
    SourceTimeout,
    SourceUnreachable,
)
from federation.merge import merge_records
from federation.models import (
    CacheStatus,
    Deadline,
    PatientHistory,
    PatientQuery,
    SourceInfo,
    SourceOutcome,
    SourceStatus,
    StudyRecord,
)
from federation.settings import QuerySettings

log = logging.getLogger("pacsfed.engine")
T = TypeVar("T")

_STATUS_FOR_ERROR: tuple[tuple[type[ConnectorError], SourceStatus], ...] = (
    (SourceTimeout, SourceStatus.TIMEOUT),
    (SourceUnreachable, SourceStatus.UNREACHABLE),
    (ConnectorError, SourceStatus.ERROR),
)


class Phase(enum.StrEnum):
    """Which step of a query an update reports."""

    SOURCE = "SOURCE"
    FINAL = "FINAL"


@dataclass(frozen=True)
class HistoryUpdate:
    """One step of a progressive answer: the source that just finished and the history so far."""

    phase: Phase
    source: SourceInfo | None
    history: PatientHistory


@dataclass(frozen=True)
class _SourceResult:
    outcome: SourceOutcome
    records: Sequence[StudyRecord]


def _millis(since: float) -> int:
    return round((time.monotonic() - since) * 1000)


class FederationEngine:
    """Fans patient queries out to connectors, merges the answers and writes them through the cache."""

    def __init__(
        self,
        connectors: Sequence[Connector],
        cache: ExamCache | None,
        query_settings: QuerySettings | None = None,
        cache_write_wait_s: float = 0.5,
    ) -> None:
        self._connectors = {connector.id: connector for connector in connectors}
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

    async def patient_history(
        self,
        query: PatientQuery,
        *,
        deadline_ms: int | None = None,
        source_ids: Sequence[str] | None = None,
    ) -> PatientHistory:
        """The patient's merged exam history, with every queried source's status."""
        history: PatientHistory | None = None
        async for update in self.stream_history(query, deadline_ms=deadline_ms, source_ids=source_ids):
            history = update.history
        assert history is not None  # stream_history always ends with a FINAL update
        return history

    async def stream_history(
        self,
        query: PatientQuery,
        *,
        deadline_ms: int | None = None,
        source_ids: Sequence[str] | None = None,
    ) -> AsyncIterator[HistoryUpdate]:
        """Yield the history after each source answers, then a FINAL update at the end."""
        connectors = self.select(source_ids)
        deadline = self.deadline_for(deadline_ms)
        started = time.monotonic()
        results: dict[str, _SourceResult] = {}
        writes: list[asyncio.Task[None]] = []
        async for result in self._fan_out(connectors, query, deadline, started):
            results[result.outcome.source.id] = result
            if result.outcome.status is SourceStatus.OK and result.records and self._cache is not None:
                writes.append(self._spawn(self._write(result.outcome.source, query, result.records)))
            yield HistoryUpdate(
                Phase.SOURCE,
                result.outcome.source,
                self._history(connectors, results, started, self._last_cache_status, None),
            )
        cache_status, cache_error = await self._settle_writes(writes)
        history = self._history(connectors, results, started, cache_status, cache_error)
        log.info(
            "patient query done: sources=%d ok=%d exams=%d elapsed_ms=%d cache=%s",
            len(connectors),
            sum(1 for r in results.values() if r.outcome.status is SourceStatus.OK),
            len(history.exams),
            history.elapsed_ms,
            cache_status.value,
        )
        yield HistoryUpdate(Phase.FINAL, None, history)

    def _history(
        self,
        connectors: Sequence[Connector],
        results: dict[str, _SourceResult],
        started: float,
        cache_status: CacheStatus,
        cache_error: str | None,
    ) -> PatientHistory:
        infos = {c.id: c.info for c in connectors}
        records = [record for result in results.values() for record in result.records]
        outcomes = tuple(results[c.id].outcome for c in connectors if c.id in results)
        complete = len(outcomes) == len(connectors) and all(o.status is SourceStatus.OK for o in outcomes)
        return PatientHistory(
            complete=complete,
            exams=tuple(merge_records(records, infos)),
            sources=outcomes,
            cache_status=cache_status,
            cache_error=cache_error,
            elapsed_ms=_millis(started),
        )

    async def _fan_out(
        self, connectors: Sequence[Connector], query: PatientQuery, deadline: Deadline, started: float
    ) -> AsyncIterator[_SourceResult]:
        tasks = {self._spawn(self._ask(c, query, deadline)): c for c in connectors}
        pending: set[asyncio.Task[_SourceResult]] = set(tasks)
        try:
            while pending:
                done, pending = await asyncio.wait(
                    pending, timeout=deadline.remaining(), return_when=asyncio.FIRST_COMPLETED
                )
                if not done:
                    break
                for task in done:
                    yield task.result()
            for task in pending:
                task.cancel()
                connector = tasks[task]
                log.warning("source %s: no answer by the deadline", connector.id)
                yield _SourceResult(
                    SourceOutcome(
                        source=connector.info,
                        status=SourceStatus.TIMEOUT,
                        latency_ms=_millis(started),
                        error="no answer before the deadline",
                    ),
                    (),
                )
        finally:
            for task in tasks:
                if not task.done():
                    task.cancel()

    async def _ask(self, connector: Connector, query: PatientQuery, deadline: Deadline) -> _SourceResult:
        started = time.monotonic()
        try:
            answer: SourceAnswer = await connector.find_studies(query, deadline)
        except ConnectorError as exc:
            status = next(s for kind, s in _STATUS_FOR_ERROR if isinstance(exc, kind))
            log.warning("source %s: %s (%s)", connector.id, status.value, exc)
            return _SourceResult(
                SourceOutcome(
                    source=connector.info, status=status, latency_ms=_millis(started), error=str(exc)
                ),
                (),
            )
        except Exception as exc:
            # Foreign messages may quote patient data: report the type only.
            log.error("source %s: unexpected %s in connector", connector.id, type(exc).__name__)
            return _SourceResult(
                SourceOutcome(
                    source=connector.info,
                    status=SourceStatus.ERROR,
                    latency_ms=_millis(started),
                    error=f"internal connector error ({type(exc).__name__})",
                ),
                (),
            )
        records = list(answer.records)
        warnings = list(answer.warnings)
        if answer.truncated and not any("max_results" in w for w in warnings):
            warnings.append("the answer was truncated")
        return _SourceResult(
            SourceOutcome(
                source=connector.info,
                status=SourceStatus.OK,
                latency_ms=_millis(started),
                exam_count=len(records),
                warnings=tuple(warnings),
            ),
            records,
        )

    async def _write(self, source: SourceInfo, query: PatientQuery, records: Sequence[StudyRecord]) -> None:
        assert self._cache is not None
        try:
            await self._cache.store(source, query, records)
        except CacheError:
            self._last_cache_status = CacheStatus.UNAVAILABLE
            raise
        self._last_cache_status = CacheStatus.OK

    async def _settle_writes(self, writes: list[asyncio.Task[None]]) -> tuple[CacheStatus, str | None]:
        if self._cache is None:
            return CacheStatus.DISABLED, None
        if not writes:
            return self._last_cache_status, None
        done, pending = await asyncio.wait(writes, timeout=self._cache_write_wait_s)
        errors = [task.exception() for task in done if task.exception() is not None]
        if errors:
            log.warning("cache write failed: %s", errors[0])
            return CacheStatus.UNAVAILABLE, str(errors[0])
        if pending:
            return CacheStatus.PENDING, None
        return CacheStatus.OK, None

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

    async def check_sources(self, deadline_ms: int | None = None) -> list[SourceOutcome]:
        """Ping every source concurrently (C-ECHO, a QIDO request) and report each one's status."""
        deadline = self.deadline_for(deadline_ms)

        async def one(connector: Connector) -> SourceOutcome:
            started = time.monotonic()
            try:
                await asyncio.wait_for(connector.ping(deadline), timeout=deadline.remaining())
            except (TimeoutError, SourceTimeout) as exc:
                error = str(exc) or "no answer before the deadline"
                return SourceOutcome(
                    source=connector.info,
                    status=SourceStatus.TIMEOUT,
                    latency_ms=_millis(started),
                    error=error,
                )
            except ConnectorError as exc:
                status = next(s for kind, s in _STATUS_FOR_ERROR if isinstance(exc, kind))
                return SourceOutcome(
                    source=connector.info, status=status, latency_ms=_millis(started), error=str(exc)
                )
            return SourceOutcome(source=connector.info, status=SourceStatus.OK, latency_ms=_millis(started))

        return list(await asyncio.gather(*(one(c) for c in self._connectors.values())))

    async def cache_health(self) -> CacheHealth | None:
        """The cache's health now, or None without a cache."""
        if self._cache is None:
            return None
        health = await self._cache.health()
        self._last_cache_status = health.status
        return health

    async def aclose(self) -> None:
        """Close every connector and the cache; cancel background work."""
        for task in list(self._background):
            task.cancel()
        for connector in self._connectors.values():
            await connector.aclose()
        if self._cache is not None:
            await self._cache.aclose()
