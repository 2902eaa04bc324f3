"""The federation engine: one patient query fanned out to every selected source under one deadline.

Every front end (GraphQL today; FHIR, the web page, DIMSE and DICOMweb endpoints later) calls
:meth:`FederationEngine.patient_history` or :meth:`FederationEngine.stream_history` the same way.
A source that fails or is late becomes a status in the answer; what the others returned is kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import functools
import logging
import time
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from federation.cache.base import CachedAnswer, CacheHealth
from federation.engine._cache_side import CacheSide
from federation.engine._guard import GuardedCalls
from federation.engine._overload import Attempt
from federation.engine._query_state import (
    QueryState,
    SharedRequest,
    SourceResult,
    failure_of,
    from_cache,
    millis_since,
    not_asked,
    not_searchable,
    status_for,
    with_stale,
)
from federation.engine._requests import RequestSharing
from federation.engine.request import HistoryRequest
from federation.engine.search import SearchFanOut
from federation.engine.write_through import WriteThrough
from federation.errors import CacheError, ConnectorError, SourceTimeout
from federation.identity.candidates import build_candidates, candidate_queries, reference_demographics
from federation.identity.resolver import PlannedQuery
from federation.models import (
    Deadline,
    Freshness,
    MatchedBy,
    MatchKind,
    PatientHistory,
    PatientQuery,
    PatientQueryKind,
    SourceInfo,
    SourceOutcome,
    SourceStatus,
    StudyRecord,
)

if TYPE_CHECKING:  # connectors import the engine's models: no import at run time, no cycle
    from connectors.base import Connector

log = logging.getLogger(__name__)
_PURGE_WAIT_S = 10.0
_UNREAD_BUSY = "not asked: the cache could not be read and pacsfed is at its own limits"
_ASKED = HistoryRequest()
"""The request of a caller that asks for nothing but the patient."""
"""The longest a purge waits for cache writes already on their way (a slower one undoes itself)."""


class Phase(enum.StrEnum):
    """Which step of a query an update reports."""

    CACHE = "CACHE"
    SOURCE = "SOURCE"
    FINAL = "FINAL"


@dataclass(frozen=True)
class HistoryUpdate:
    """One step of a progressive answer: the source that just finished and the history so far.

    A SOURCE update covers every source that answered since the previous update (``answered``,
    in the order they answered; ``source`` is the last): answers that came while the consumer
    was busy with the previous update are coalesced into one. ``changed`` holds the
    StudyInstanceUIDs of the exams it added or changed (None: the whole history, CACHE and FINAL).
    """

    phase: Phase
    source: SourceInfo | None
    history: PatientHistory
    answered: tuple[SourceInfo, ...] = ()
    changed: frozenset[str] | None = None

    def delta(self) -> HistoryUpdate:
        """The update with only the exams it added or changed (its sources stay complete)."""
        if self.changed is None:
            return self
        exams = tuple(exam for exam in self.history.exams if exam.study_instance_uid in self.changed)
        return dataclasses.replace(self, history=self.history.model_copy(update={"exams": exams}))


class FederationEngine(SearchFanOut, RequestSharing, CacheSide, GuardedCalls):
    """Fans patient queries out to connectors, merges the answers and writes them through the cache."""

    async def patient_history(self, query: PatientQuery, request: HistoryRequest = _ASKED) -> PatientHistory:
        """The patient's merged exam history as ``request`` asks, with every queried source's status."""
        history: PatientHistory | None = None
        async with contextlib.aclosing(self.stream_history(query, request, progressive=False)) as updates:
            async for update in updates:
                history = update.history
        assert history is not None  # updates always end with a FINAL update
        return history

    async def stream_history(
        self, query: PatientQuery, request: HistoryRequest = _ASKED, *, progressive: bool = True
    ) -> AsyncGenerator[HistoryUpdate, None]:
        """Yield the cached history (CACHE), then the history after each source answers (SOURCE), then FINAL.

        Sources whose cached answer is younger than their ``ttl_s`` answer from the cache at once
        and are refreshed in the background (CACHE_THEN_REFRESH); CACHE_ONLY asks no source;
        LIVE ignores the cache. Demographic candidate queries (asked for, or implied by a
        demographic patient input) follow the identifier queries within the same deadline.
        """
        connectors = self.select(request.source_ids)
        deadline = self.deadline_for(request.deadline_ms)
        freshness = request.freshness
        state = QueryState(connectors, time.monotonic())
        plans = await self._plan(query, connectors, state)
        write_through = self._write_through(query)
        demographic = query.kind is PatientQueryKind.DEMOGRAPHICS
        if not demographic:
            identified = self._identifier_updates(
                query, connectors, plans, freshness, deadline, state, write_through, progressive=progressive
            )
            async with contextlib.aclosing(identified) as updates:
                async for update in updates:
                    yield update
        if demographic or request.include_candidates:
            async with contextlib.aclosing(self._candidates(query, connectors, deadline, state)) as updates:
                async for update in updates:
                    if progressive:
                        yield update
        yield await self._final(query, connectors, state, write_through)

    def _write_through(self, query: PatientQuery) -> WriteThrough | None:
        """Batched cache writes of this query's answers (None without a cache or a cacheable query)."""
        if self._cache is None or not query.cache_key():
            return None
        epoch = self._epoch(query)
        return WriteThrough(self._spawn, functools.partial(self._write_answers, query, epoch=epoch))

    async def _identifier_updates(
        self,
        query: PatientQuery,
        connectors: Sequence[Connector],
        plans: dict[str, list[PlannedQuery]],
        freshness: Freshness,
        deadline: Deadline,
        state: QueryState,
        write_through: WriteThrough | None,
        *,
        progressive: bool,
    ) -> AsyncGenerator[HistoryUpdate, None]:
        """The identifier queries: the cached answers (CACHE), then each source's live one (SOURCE).

        Answers that came while the consumer was busy with the previous update come as one
        update; each merges only the studies it touched. Only a progressive consumer gets updates.
        """
        cached = await self._cached(query, connectors, plans, freshness, deadline, state)
        to_ask = self._triage(query, connectors, plans, cached, freshness, state)
        if cached and progressive:
            try:
                yield HistoryUpdate(Phase.CACHE, None, state.history(self._last_cache_status))
            except GeneratorExit:  # the consumer stopped at the cached answer: no probe was sent
                for connector, _ in to_ask:
                    self._breakers[connector.id].release_probe()
                raise
        # Asked only now: a consumer that stops after the cached answer starts no request.
        jobs = {c: self._share(c, plan, query, deadline) for c, plan in to_ask}
        if self._observer is not None:
            self._observer.fanned_out(len(jobs))
            for settled in state.results.values():
                self._observer.source_answered(settled.outcome, live=False)
        # Closed here, not by the garbage collector: a consumer that stops releases its requests at once.
        async with contextlib.aclosing(self._fan_out_batches(jobs, deadline, state.started)) as batches:
            async for batch in batches:
                batch = [self._or_stale(result, state) for result in batch]
                for result in batch:
                    state.results[result.outcome.source.id] = result
                    if result.outcome.status is SourceStatus.OK and write_through is not None:
                        write_through.add(result.outcome.source, result.records)
                if progressive and batch:
                    yield self._source_update(state, [result.outcome.source for result in batch])

    def _source_update(self, state: QueryState, answered: Sequence[SourceInfo]) -> HistoryUpdate:
        """A SOURCE update for the sources that answered since the previous update."""
        history = state.history(self._last_cache_status)
        return HistoryUpdate(Phase.SOURCE, answered[-1], history, tuple(answered), state.changed)

    def _triage(
        self,
        query: PatientQuery,
        connectors: Sequence[Connector],
        plans: dict[str, list[PlannedQuery]],
        cached: dict[str, CachedAnswer],
        freshness: Freshness,
        state: QueryState,
    ) -> list[tuple[Connector, list[PlannedQuery]]]:
        """Settle each source that needs no live request now (no identifier, cached, open circuit); the rest."""
        to_ask: list[tuple[Connector, list[PlannedQuery]]] = []
        for connector in connectors:
            plan = plans[connector.id]
            if not plan:
                state.results[connector.id] = not_asked(
                    connector, SourceStatus.NO_IDENTIFIER, "no identifier known in this source's domain"
                )
            elif connector.id in cached:
                state.results[connector.id] = from_cache(connector, cached[connector.id])
                if freshness is Freshness.CACHE_THEN_REFRESH:
                    self._refresh_in_background(connector, plan, query)
            elif freshness is Freshness.CACHE_ONLY:
                state.results[connector.id] = not_asked(
                    connector, SourceStatus.NOT_CACHED, "no cached answer for this patient"
                )
            elif not self._breakers[connector.id].allow():
                state.results[connector.id] = self._or_stale(self._skipped(connector), state)
            elif state.cache_unread and self._overload.saturated:
                # Sending every source live because the cache was slow would feed the overload.
                self._overload.note("sources_busy")
                state.warnings.append("pacsfed is at its own limits: sources were not asked live")
                busy = not_asked(connector, SourceStatus.BUSY, _UNREAD_BUSY)
                state.results[connector.id] = busy
                self._breakers[connector.id].release_probe()
            else:
                to_ask.append((connector, plan))
        return to_ask

    def _or_stale(self, result: SourceResult, state: QueryState) -> SourceResult:
        """A source's result, or where it gave no answer now, its older cached one (status kept)."""
        served = with_stale(result, state.stale.get(result.outcome.source.id))
        if served is not result:
            self._overload.note("stale_answers_served")
        return served

    async def _final(
        self,
        query: PatientQuery,
        connectors: Sequence[Connector],
        state: QueryState,
        write_through: WriteThrough | None,
    ) -> HistoryUpdate:
        """The FINAL update, once the cache writes settled (or the wait for them ended); logged without patient data."""
        cache_status, cache_error = await self._settle_writes(write_through.tasks if write_through else [])
        history = state.history(cache_status, cache_error)
        log.info(
            "patient query done: kind=%s sources=%d ok=%d exams=%d candidates=%d elapsed_ms=%d cache=%s",
            query.kind.value,
            len(connectors),
            sum(1 for r in state.results.values() if r.outcome.status is SourceStatus.OK),
            len(history.exams),
            len(history.candidates),
            history.elapsed_ms,
            cache_status.value,
        )
        return HistoryUpdate(Phase.FINAL, None, history)

    async def _plan(
        self, query: PatientQuery, connectors: Sequence[Connector], state: QueryState
    ) -> dict[str, list[PlannedQuery]]:
        identities = [self._identities[c.id] for c in connectors]
        try:
            return await self._resolver.plan(query, identities)
        except CacheError:
            log.warning("identity store unavailable: planning with the given identifier only")
            state.warnings.append("identity cross-references unavailable: only the given identifier was used")
            return await self._bare_resolver.plan(query, identities)

    async def _candidates(
        self, query: PatientQuery, connectors: Sequence[Connector], deadline: Deadline, state: QueryState
    ) -> AsyncGenerator[HistoryUpdate, None]:
        """Query every source loosely by name and birth date; score what is not the patient's own."""
        found = [r for result in state.results.values() for r in result.records]
        reference = reference_demographics(query, found)
        if reference is None:
            state.warnings.append("no name and birth date known for this patient: no candidate search")
            return
        by_keys = {
            non_ascii: [
                PlannedQuery(q, MatchedBy(kind=MatchKind.DEMOGRAPHICS))
                for q in candidate_queries(reference, non_ascii_name_keys=non_ascii)
            ]
            for non_ascii in (False, True)
        }
        if not any(by_keys.values()):
            state.warnings.append("the name gives no usable search key: no candidate search")
            return
        demographic = query.kind is PatientQueryKind.DEMOGRAPHICS
        own = {(r.source_id, r.study_instance_uid) for r in found}
        own_patients = {(r.source_id, r.patient_id or "") for r in found}
        jobs: dict[Connector, SharedRequest] = {}
        for connector in connectors:
            if not connector.supports_demographic_search:  # a capability: never asked what it cannot do
                not_searchable(connector, demographic, state)
            elif self._breakers[connector.id].allow():
                queries = by_keys[connector.takes_non_ascii_name_keys]
                attempt = Attempt()
                task = self._spawn(self._ask(connector, queries, deadline, attempt, verify=False))
                shared = SharedRequest(task, None, deadline, waiters=1, attempt=attempt)
                jobs[connector] = self._judged(connector, shared)
            elif demographic:
                state.results[connector.id] = self._skipped(connector)
        candidate_records: list[StudyRecord] = []
        async with contextlib.aclosing(self._fan_out_batches(jobs, deadline, state.started)) as batches:
            async for batch in batches:
                for result in batch:
                    candidate_records.extend(result.records)
                    self._take_candidate_result(result, demographic, state)
                state.candidates = build_candidates(
                    reference, candidate_records, state.infos, own, own_patients
                )
                yield self._source_update(state, [result.outcome.source for result in batch])

    @staticmethod
    def _take_candidate_result(result: SourceResult, demographic: bool, state: QueryState) -> None:
        """A source's candidate search: its status for a demographic input, else a warning if it failed."""
        source_id = result.outcome.source.id
        if demographic:
            # Demographic input: these are the only queries, so they give the statuses.
            state.results[source_id] = SourceResult(result.outcome.model_copy(update={"exam_count": 0}), ())
        elif result.outcome.status is not SourceStatus.OK and source_id in state.results:
            previous = state.results[source_id]
            note = f"candidate search: {result.outcome.status.value}"
            warnings = (*previous.outcome.warnings, note)
            state.results[source_id] = SourceResult(
                previous.outcome.model_copy(update={"warnings": warnings}), previous.records
            )

    def _refresh_in_background(
        self, connector: Connector, planned: Sequence[PlannedQuery], query: PatientQuery
    ) -> None:
        """Refresh a source's cached answer once (de-duplicated), after answering from the cache.

        A refresh is optional work: it is left out while pacsfed is saturated or the source's slots
        are half taken, so that it never queues ahead of a query a caller is waiting for (reading
        fresh cached patients under load had refreshes hold every hospital's slots for tens of
        seconds after the load). Its slot is taken here, at once, and it waits for no other: the
        refreshes of a burst of cached reads count against the spare slots as they are decided,
        not a few loop turns later when they first run. The cached answer is still within its ``ttl_s``.
        """
        if (query.cache_key() or "", connector.id) in self._inflight:
            return
        limit = self._limits[connector.id]
        if self._overload.saturated or not limit.spare():
            self._overload.note("refreshes_deferred")
            return
        if not self._breakers[connector.id].allow():
            return
        limit.take_spare()  # spare a moment ago, and nothing ran since
        shared = self._share(connector, planned, query, self.deadline_for(None), reserved=True)
        epoch = self._epoch(query)

        async def refresh() -> None:
            try:
                await asyncio.wait((shared.task,))
            finally:
                self._release(shared)
            result = self._result_of(connector, shared.task)
            if result.outcome.status is SourceStatus.OK and self._cache is not None:
                await self._write_answers(query, [(result.outcome.source, result.records)], epoch=epoch)

        self._spawn(refresh())

    async def purge_cache(self, query: PatientQuery, source_id: str | None = None) -> int:
        """Forget the cached answers to this patient query (one source's, or all): corrections, erasure."""
        if source_id is not None:
            self.select([source_id])
        key = query.cache_key() or ""
        self._purges[key] = self._purges.get(key, 0) + 1
        for (inflight_key, inflight_source), shared in list(self._inflight.items()):
            if inflight_key == key and source_id in (None, inflight_source):
                shared.task.cancel()
        if self._cache is None:
            return 0
        writes = [task for task in self._writes.get(key, ()) if task is not asyncio.current_task()]
        if writes:  # past their purge check already: let them land, so that this purge removes them
            _, late = await asyncio.wait(writes, timeout=_PURGE_WAIT_S)
            for task in late:  # each undoes itself for this purge once it lands
                self._late_writes.setdefault(task, []).append(source_id)
        return await self._cache.purge(query, source_id)

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
                    latency_ms=millis_since(started),
                    error=error,
                )
            except ConnectorError as exc:
                status = status_for(exc)
                return SourceOutcome(
                    source=connector.info, status=status, latency_ms=millis_since(started), error=str(exc)
                )
            except Exception as exc:  # a plugin's bug is its source's failure, not the whole check's
                status, error = failure_of(connector, exc)
                return SourceOutcome(
                    source=connector.info, status=status, latency_ms=millis_since(started), error=error
                )
            return SourceOutcome(
                source=connector.info, status=SourceStatus.OK, latency_ms=millis_since(started)
            )

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
        if self._identity_store is not None:
            await self._identity_store.aclose()
