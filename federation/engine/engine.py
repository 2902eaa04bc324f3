"""The federation engine: one patient query fanned out to every selected source under one deadline.

Every front end (GraphQL today; FHIR, the web page, DIMSE and DICOMweb endpoints later) calls
:meth:`FederationEngine.patient_history` or :meth:`FederationEngine.stream_history` the same way.
A source that fails or is late becomes a status in the answer; what the others returned is kept.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime as dt
import enum
import functools
import logging
import time
from collections.abc import AsyncGenerator, Coroutine, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from federation.cache.base import CachedAnswer, CacheHealth, ExamCache
from federation.engine._query_state import (
    QueryState,
    SharedRequest,
    SourceResult,
    breaker_for,
    failure_of,
    from_cache,
    identity_of,
    millis_since,
    not_asked,
    source_setting,
    status_for,
)
from federation.engine.resilience import CircuitState
from federation.engine.write_through import Answer, WriteThrough
from federation.errors import (
    CacheError,
    CacheUnavailable,
    ConnectorError,
    QueryError,
    SourceTimeout,
)
from federation.identity.candidates import build_candidates, candidate_queries, reference_demographics
from federation.identity.resolver import IdentityResolver, IdentityStore, PlannedQuery, record_matches
from federation.models import (
    CacheStatus,
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
    StudyQuery,
    StudyRecord,
)
from federation.settings import QuerySettings

if TYPE_CHECKING:  # connectors import the engine's models: no import at run time, no cycle
    from connectors.base import Connector, SourceAnswer

log = logging.getLogger(__name__)
_CACHE_READ_S = 1.0
"""The longest a query waits for the cache before asking every source live."""
_PURGE_WAIT_S = 10.0
"""The longest a purge waits for cache writes already on their way (a slower one undoes itself)."""
_JOIN_SLACK_S = 0.25
"""A query joins an identical request in flight only if the source was given a deadline at most this much earlier."""
_DEFAULT_TTL_S = 300.0
T = TypeVar("T")


class Phase(enum.StrEnum):
    """Which step of a query an update reports."""

    CACHE = "CACHE"
    SOURCE = "SOURCE"
    FINAL = "FINAL"


@dataclass(frozen=True)
class HistoryUpdate:
    """One step of a progressive answer: the source that just finished and the history so far."""

    phase: Phase
    source: SourceInfo | None
    history: PatientHistory


class FederationEngine:
    """Fans patient queries out to connectors, merges the answers and writes them through the cache."""

    def __init__(
        self,
        connectors: Sequence[Connector],
        cache: ExamCache | None,
        query_settings: QuerySettings | None = None,
        cache_write_wait_s: float = 0.5,
        identity_store: IdentityStore | None = None,
        national_issuer: str | None = None,
    ) -> None:
        self._connectors = {connector.id: connector for connector in connectors}
        self._identity_store = identity_store
        self._resolver = IdentityResolver(identity_store, national_issuer)
        self._bare_resolver = IdentityResolver(None, national_issuer)
        self._breakers = {c.id: breaker_for(c) for c in connectors}
        self._identities = {c.id: identity_of(c) for c in connectors}
        self._inflight: dict[tuple[str, str], SharedRequest] = {}
        self._purges: dict[str, int] = {}
        self._writes: dict[str, set[asyncio.Task[Any]]] = {}
        """Cache writes past their purge check, by cache key: a purge waits for them to land first."""
        self._late_writes: dict[asyncio.Task[Any], list[str | None]] = {}
        """Writes a purge stopped waiting for, with the sources it purged (None: all): undone on landing."""
        self._limits = {c.id: asyncio.Semaphore(source_setting(c, "max_concurrency", 4)) for c in connectors}
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

    async def patient_history(
        self,
        query: PatientQuery,
        *,
        deadline_ms: int | None = None,
        source_ids: Sequence[str] | None = None,
        include_candidates: bool = False,
        freshness: Freshness = Freshness.CACHE_THEN_REFRESH,
    ) -> PatientHistory:
        """The patient's merged exam history, with every queried source's status."""
        history: PatientHistory | None = None
        async for update in self.stream_history(
            query,
            deadline_ms=deadline_ms,
            source_ids=source_ids,
            include_candidates=include_candidates,
            freshness=freshness,
            progressive=False,
        ):
            history = update.history
        assert history is not None  # stream_history always ends with a FINAL update
        return history

    async def stream_history(
        self,
        query: PatientQuery,
        *,
        deadline_ms: int | None = None,
        source_ids: Sequence[str] | None = None,
        include_candidates: bool = False,
        freshness: Freshness = Freshness.CACHE_THEN_REFRESH,
        progressive: bool = True,
    ) -> AsyncGenerator[HistoryUpdate, None]:
        """Yield the cached history (CACHE), then the history after each source answers (SOURCE), then FINAL.

        Sources whose cached answer is younger than their ``ttl_s`` answer from the cache at once
        and are refreshed in the background (CACHE_THEN_REFRESH); CACHE_ONLY asks no source;
        LIVE ignores the cache. Demographic candidate queries (asked for, or implied by a
        demographic patient input) follow the identifier queries within the same deadline.
        """
        connectors = self.select(source_ids)
        deadline = self.deadline_for(deadline_ms)
        state = QueryState(connectors, time.monotonic())
        plans = await self._plan(query, connectors, state)
        demographic = query.kind is PatientQueryKind.DEMOGRAPHICS
        epoch = self._epoch(query)
        write_through = (
            WriteThrough(self._spawn, functools.partial(self._write_answers, query, epoch=epoch))
            if self._cache is not None and query.cache_key()
            else None
        )
        # Merging after every source costs O(sources²): only a progressive consumer needs it.
        if not demographic:
            cached = await self._cached(query, connectors, plans, freshness, deadline, state)
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
                    state.results[connector.id] = self._skipped(connector)
                else:
                    to_ask.append((connector, plan))
            if cached and progressive:
                try:
                    yield HistoryUpdate(Phase.CACHE, None, state.history(self._last_cache_status))
                except GeneratorExit:  # the consumer stopped at the cached answer: no probe was sent
                    for connector, _ in to_ask:
                        self._breakers[connector.id].release_probe()
                    raise
            # Asked only now: a consumer that stops after the cached answer starts no request.
            jobs = {c: self._share(c, plan, query, deadline) for c, plan in to_ask}
            # Closed here, not by the garbage collector: a consumer that stops releases its requests at once.
            async with contextlib.aclosing(self._fan_out(jobs, deadline, state.started)) as results:
                async for result in results:
                    state.results[result.outcome.source.id] = result
                    if result.outcome.status is SourceStatus.OK and write_through is not None:
                        write_through.add(result.outcome.source, result.records)
                    if progressive:
                        yield HistoryUpdate(
                            Phase.SOURCE, result.outcome.source, state.history(self._last_cache_status)
                        )
        if demographic or include_candidates:
            async with contextlib.aclosing(self._candidates(query, connectors, deadline, state)) as updates:
                async for update in updates:
                    if progressive:
                        yield update
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
        yield HistoryUpdate(Phase.FINAL, None, history)

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
            if self._breakers[connector.id].allow():
                queries = by_keys[connector.takes_non_ascii_name_keys]
                task = self._spawn(self._ask(connector, queries, deadline, verify=False))
                jobs[connector] = self._judged(connector, SharedRequest(task, None, deadline, waiters=1))
            elif demographic:
                state.results[connector.id] = self._skipped(connector)
        candidate_records: list[StudyRecord] = []
        async with contextlib.aclosing(self._fan_out(jobs, deadline, state.started)) as results:
            async for result in results:
                candidate_records.extend(result.records)
                source_id = result.outcome.source.id
                if demographic:
                    # Demographic input: these are the only queries, so they give the statuses.
                    state.results[source_id] = SourceResult(
                        result.outcome.model_copy(update={"exam_count": 0}), ()
                    )
                elif result.outcome.status is not SourceStatus.OK and source_id in state.results:
                    previous = state.results[source_id]
                    note = f"candidate search: {result.outcome.status.value}"
                    warnings = (*previous.outcome.warnings, note)
                    state.results[source_id] = SourceResult(
                        previous.outcome.model_copy(update={"warnings": warnings}), previous.records
                    )
                state.candidates = build_candidates(
                    reference, candidate_records, state.infos, own, own_patients
                )
                yield HistoryUpdate(
                    Phase.SOURCE, result.outcome.source, state.history(self._last_cache_status)
                )

    async def _fan_out(
        self, jobs: dict[Connector, SharedRequest], deadline: Deadline, started: float
    ) -> AsyncGenerator[SourceResult, None]:
        """Each source's result as it comes, then TIMEOUT for those without one by the deadline.

        A request is released (cancelled once no other query waits for it) when its result is
        read, at the deadline, or when the consumer stops early.
        """
        waiting = {shared.task: (connector, shared) for connector, shared in jobs.items()}
        finished: collections.deque[asyncio.Task[SourceResult]] = collections.deque()
        loop = asyncio.get_running_loop()
        wake: asyncio.Future[None] = loop.create_future()

        def on_done(task: asyncio.Task[SourceResult]) -> None:
            finished.append(task)
            if not wake.done():
                wake.set_result(None)

        # One callback per task: asyncio.wait(FIRST_COMPLETED) would re-register every pending task
        # at each answer, O(sources²) over the fan-out.
        for task in waiting:
            task.add_done_callback(on_done)
        try:
            while waiting:
                if not finished:
                    if wake.done():
                        # Set for answers already read (they came while the consumer held an
                        # event): waiting on it would return at once and look like the deadline.
                        wake = loop.create_future()
                    await asyncio.wait((wake,), timeout=deadline.remaining())
                    if not finished:
                        break  # the deadline
                while finished:
                    task = finished.popleft()
                    connector, shared = waiting.pop(task)
                    self._release(shared)
                    yield self._result_of(connector, task)
            late = list(waiting.values())
            waiting.clear()
            for _, shared in late:
                shared.task.remove_done_callback(on_done)
                self._release(shared, at_deadline=True)
            for connector, shared in late:
                if shared.task.done():  # it ended at the deadline: its callback had not run yet
                    yield self._result_of(connector, shared.task)
                    continue
                log.warning("source %s: no answer by the deadline", connector.id)
                yield SourceResult(
                    SourceOutcome(
                        source=connector.info,
                        status=SourceStatus.TIMEOUT,
                        latency_ms=millis_since(started),
                        error="no answer before the deadline",
                    ),
                    (),
                )
        finally:
            for task, (_, shared) in waiting.items():
                task.remove_done_callback(on_done)
                self._release(shared)

    async def _ask(
        self, connector: Connector, planned: Sequence[PlannedQuery], deadline: Deadline, verify: bool = True
    ) -> SourceResult:
        """Run a source's planned queries; keep only records that carry the identifier asked for."""
        started = time.monotonic()
        limit = self._limits[connector.id]

        async def limited(query: StudyQuery) -> SourceAnswer:
            async with limit:
                return await connector.find_studies(query, deadline)

        answers: list[SourceAnswer | BaseException]
        if len(planned) == 1:  # the usual case: no task (gather makes one per query) needed
            try:
                answers = [await limited(planned[0].query)]
            except Exception as exc:
                answers = [exc]
        else:
            answers = await asyncio.gather(*(limited(p.query) for p in planned), return_exceptions=True)
        identity = self._identities[connector.id]
        records: dict[str, StudyRecord] = {}
        warnings: list[str] = []
        failure: tuple[SourceStatus, str] | None = None
        dropped = 0
        for plan, answer in zip(planned, answers, strict=True):
            if isinstance(answer, BaseException):
                if isinstance(answer, asyncio.CancelledError):
                    raise answer
                failure = failure or failure_of(connector, answer)
                continue
            warnings.extend(answer.warnings)
            if answer.truncated and not any("max_results" in w for w in answer.warnings):
                warnings.append("the answer was truncated")
            for record in answer.records:
                if verify and not record_matches(record, plan, identity):
                    dropped += 1
                    continue
                if record.study_instance_uid not in records:
                    records[record.study_instance_uid] = record.found_by(plan.matched_by)
        if dropped:
            # The source ignored a matching key: its extra answers belong to other patients.
            warnings.append(f"{dropped} answers for other patient identifiers were discarded")
        status, error = failure if failure else (SourceStatus.OK, None)
        return SourceResult(
            SourceOutcome(
                source=connector.info,
                status=status,
                latency_ms=millis_since(started),
                exam_count=len(records),
                error=error,
                warnings=tuple(dict.fromkeys(warnings)),
            ),
            list(records.values()),
        )

    async def _cached(
        self,
        query: PatientQuery,
        connectors: Sequence[Connector],
        plans: dict[str, list[PlannedQuery]],
        freshness: Freshness,
        deadline: Deadline,
        state: QueryState,
    ) -> dict[str, CachedAnswer]:
        """The cached answers this query may use: fresh ones, or any age with CACHE_ONLY."""
        if freshness is Freshness.LIVE or self._cache is None or query.cache_key() is None:
            return {}
        wanted = [c.id for c in connectors if plans[c.id]]
        try:
            async with asyncio.timeout(min(_CACHE_READ_S, deadline.remaining() / 2)):
                answers = await self._cache.cached_answers(query, wanted)
        except (CacheError, TimeoutError) as exc:
            if freshness is Freshness.CACHE_ONLY:  # no source may be asked: there is no answer at all
                raise CacheUnavailable("the cache cannot be read (CACHE_ONLY asks no source)") from exc
            state.warnings.append("the cache could not be read: every source was asked live")
            return {}
        if freshness is Freshness.CACHE_ONLY:
            return answers
        now = dt.datetime.now(dt.UTC)
        ttl = {c.id: source_setting(c, "ttl_s", _DEFAULT_TTL_S) for c in connectors}
        return {sid: a for sid, a in answers.items() if (now - a.answered_at).total_seconds() <= ttl[sid]}

    def _share(
        self, connector: Connector, planned: Sequence[PlannedQuery], query: PatientQuery, deadline: Deadline
    ) -> SharedRequest:
        """The request for a source's answer: the one an identical query has in flight, or a new one.

        Every caller releases it (:meth:`_release`) once; it is cancelled only when every query
        waiting for it has given up.
        """
        key = (query.cache_key() or "", connector.id)
        shared = self._inflight.get(key) if key[0] else None
        if (
            shared is None
            or shared.task.done()
            or shared.task.cancelling()
            or shared.deadline.at + _JOIN_SLACK_S < deadline.at  # the source would give up well before
        ):
            task = self._spawn(self._ask(connector, planned, deadline))
            shared = self._judged(connector, SharedRequest(task, key, deadline))
            if key[0]:
                self._inflight[key] = shared
                task.add_done_callback(functools.partial(self._forget_inflight_of, key, shared))
        shared.waiters += 1
        return shared

    def _forget_inflight_of(self, key: tuple[str, str], shared: SharedRequest, _: asyncio.Task[Any]) -> None:
        self._forget_inflight(key, shared)

    def _judged(self, connector: Connector, shared: SharedRequest) -> SharedRequest:
        """Have the source's circuit breaker judge this request once, when it ends, however many waited."""
        shared.task.add_done_callback(functools.partial(self._judge_request, connector.id, shared))
        return shared

    def _judge_request(self, source_id: str, shared: SharedRequest, task: asyncio.Task[SourceResult]) -> None:
        breaker = self._breakers[source_id]
        if task.cancelled():
            if shared.timed_out:  # every query waiting for it gave up at its deadline
                breaker.record_failure()
            else:  # abandoned by a purge, or by consumers gone: nothing learnt of the source
                breaker.release_probe()
        elif task.exception() is not None:
            breaker.release_probe()  # a fault of ours, reported by the task's own error handling
        else:
            self._judge(task.result().outcome)

    def _release(self, shared: SharedRequest, *, at_deadline: bool = False) -> None:
        """One query no longer waits for this request: the last one to leave cancels it."""
        shared.waiters -= 1
        if shared.waiters == 0 and not shared.task.done():
            shared.timed_out = at_deadline
            shared.task.cancel()
            if shared.key is not None:
                self._forget_inflight(shared.key, shared)

    @staticmethod
    def _result_of(connector: Connector, task: asyncio.Task[SourceResult]) -> SourceResult:
        """A finished request's result; one cancelled by the queries that started it was abandoned."""
        if task.cancelled():
            return not_asked(connector, SourceStatus.TIMEOUT, "the shared request was abandoned")
        return task.result()

    def _forget_inflight(self, key: tuple[str, str], shared: SharedRequest) -> None:
        if self._inflight.get(key) is shared:
            del self._inflight[key]

    def _refresh_in_background(
        self, connector: Connector, planned: Sequence[PlannedQuery], query: PatientQuery
    ) -> None:
        """Refresh a source's cached answer once (de-duplicated), after answering from the cache."""
        if (query.cache_key() or "", connector.id) in self._inflight or not self._breakers[
            connector.id
        ].allow():
            return

        epoch = self._epoch(query)

        async def refresh() -> None:
            shared = self._share(connector, planned, query, self.deadline_for(None))
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

    def circuit_state(self, source_id: str) -> CircuitState:
        """The circuit breaker state of one source."""
        return self._breakers[source_id].state

    def _judge(self, outcome: SourceOutcome) -> None:
        """Feed a source's outcome to its circuit breaker."""
        breaker = self._breakers[outcome.source.id]
        if outcome.status is SourceStatus.OK:
            breaker.record_success()
        elif outcome.status in (SourceStatus.TIMEOUT, SourceStatus.UNREACHABLE, SourceStatus.ERROR):
            breaker.record_failure()

    def _skipped(self, connector: Connector) -> SourceResult:
        retry = self._breakers[connector.id].retry_in_s()
        return SourceResult(
            SourceOutcome(
                source=connector.info,
                status=SourceStatus.SKIPPED,
                latency_ms=0,
                error=f"circuit open after repeated failures; next try in {retry:.0f} s",
            ),
            (),
        )

    def _epoch(self, query: PatientQuery) -> int:
        """How many times this patient's cached answers were purged: answers from before must not return."""
        return self._purges.get(query.cache_key() or "", 0)

    async def _write_answers(self, query: PatientQuery, answers: list[Answer], *, epoch: int) -> None:
        assert self._cache is not None
        if self._epoch(query) != epoch:
            return  # purged since these answers were asked for (a correction or an erasure request)
        key = query.cache_key() or ""
        task = asyncio.current_task()
        writes = self._writes.setdefault(key, set())
        if task is not None:
            writes.add(task)
        try:
            await self._cache.store_answers(query, answers)
        except CacheError:
            self._last_cache_status = CacheStatus.UNAVAILABLE
            raise
        finally:
            writes.discard(task)
            if not writes and self._writes.get(key) is writes:
                del self._writes[key]
            purges = self._late_writes.pop(task, []) if task is not None else []
        self._last_cache_status = CacheStatus.OK
        for source, _ in answers:  # purges that gave up waiting for this write: it undoes itself
            if any(purged in (None, source.id) for purged in purges):
                await self._cache.purge(query, source.id)

    async def _settle_writes(self, writes: list[asyncio.Task[None]]) -> tuple[CacheStatus, str | None]:
        if self._cache is None:
            return CacheStatus.DISABLED, None
        if not writes:
            return self._last_cache_status, None
        # Most writes are done by now: wait only for the others (asyncio.wait hooks every task).
        unsettled = [task for task in writes if not task.done()]
        pending: set[asyncio.Task[None]] = set()
        if unsettled:
            _, pending = await asyncio.wait(unsettled, timeout=self._cache_write_wait_s)
        done = [task for task in writes if task.done()]
        errors = [task.exception() for task in done if not task.cancelled() and task.exception() is not None]
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
                    latency_ms=millis_since(started),
                    error=error,
                )
            except ConnectorError as exc:
                status = status_for(exc)
                return SourceOutcome(
                    source=connector.info, status=status, latency_ms=millis_since(started), error=str(exc)
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
