"""Searches the history path does not cover: by study keys or a name pattern, and below the study.

Each capable source is asked once, all at once, under one deadline, through the same circuit
breakers and per-source slots (``max_concurrency``) as patient histories; a source whose
connector lacks the capability is not asked (UNSUPPORTED). Failures and lateness are statuses.
A search by patient id goes through :meth:`FederationEngine.patient_history` instead (identity
resolution, the cache, shared requests), its study keys checked by pacsfed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, Protocol, TypeVar

from federation.engine._overload import Attempt
from federation.engine._query_state import failure_of, millis_since
from federation.engine._requests import RequestSharing
from federation.models import (
    Deadline,
    InstanceQuery,
    InstanceRecord,
    SeriesQuery,
    SeriesRecord,
    SourceOutcome,
    SourceStatus,
    StudyQuery,
    StudyRecord,
)

if TYPE_CHECKING:  # connectors import the engine's models: no import at run time, no cycle
    from connectors.base import Connector

__all__ = ["LevelAnswer", "SearchFanOut"]

R = TypeVar("R")
R_co = TypeVar("R_co", covariant=True)
_NO_SLOT = "not asked: pacsfed's own limit of requests at once to this source (max_concurrency) held until the deadline"


class _Answer(Protocol[R_co]):  # what find_studies, find_series and find_instances answer
    @property
    def records(self) -> Sequence[R_co]: ...
    @property
    def warnings(self) -> Sequence[str]: ...
    @property
    def truncated(self) -> bool: ...


@dataclass(frozen=True, slots=True)
class LevelAnswer(Generic[R]):
    """Every asked source's status (configuration order) and what they returned, source by source."""

    outcomes: tuple[SourceOutcome, ...]
    records: tuple[R, ...]
    elapsed_ms: int

    @property
    def complete(self) -> bool:
        """Every source answered."""
        return all(outcome.status is SourceStatus.OK for outcome in self.outcomes)


class SearchFanOut(RequestSharing):
    """Study-key, name, series and instance searches fanned out to the capable sources."""

    async def search_study_keys(
        self, keys: StudyQuery, source_ids: Sequence[str] | None, deadline: Deadline
    ) -> LevelAnswer[StudyRecord]:
        """Studies by their own keys (and a PatientName pattern), from sources that match on them.

        A name pattern needs ``supports_demographic_search``; study keys alone need
        ``supports_study_keys``; a UID list goes whole to ``supports_uid_lists`` connectors, one
        UID per request to others (as many at once as the source's free slots allow). Records
        failing the keys (a source ignored one) are dropped.
        """

        def unable(connector: Connector) -> str | None:
            if keys.patient_name is not None and not connector.supports_demographic_search:
                return "this source's connector cannot search by name"
            if keys.has_study_keys and not connector.supports_study_keys:
                return "this source's connector cannot match study keys"
            return None

        async def call(connector: Connector, deadline: Deadline) -> _Answer[StudyRecord]:
            answer = await _find_studies(connector, keys, deadline, self._limits[connector.id])
            kept = [r for r in answer.records if keys.matches_study_keys(r)]
            if len(kept) == len(answer.records):
                return answer
            dropped = f"{len(answer.records) - len(kept)} answers not matching the study keys were discarded"
            return _Kept(kept, (*answer.warnings, dropped), answer.truncated)

        return await self._each(self.select(source_ids), unable, call, deadline)

    async def search_series(
        self, query: SeriesQuery, source_ids: Sequence[str] | None, deadline: Deadline
    ) -> LevelAnswer[SeriesRecord]:
        """A study's series from every source whose connector lists series."""

        def unable(connector: Connector) -> str | None:
            return None if connector.supports_series_query else "this source's connector cannot list series"

        async def call(connector: Connector, deadline: Deadline) -> _Answer[SeriesRecord]:
            answer = await connector.find_series(query, deadline)
            kept = [r for r in answer.records if r.study_instance_uid == query.study_instance_uid]
            return _Kept(kept, answer.warnings, answer.truncated)

        return await self._each(self.select(source_ids), unable, call, deadline)

    async def search_instances(
        self, query: InstanceQuery, source_ids: Sequence[str] | None, deadline: Deadline
    ) -> LevelAnswer[InstanceRecord]:
        """A series' instances from every source whose connector lists instances."""

        def unable(connector: Connector) -> str | None:
            if connector.supports_instance_query:
                return None
            return "this source's connector cannot list instances"

        async def call(connector: Connector, deadline: Deadline) -> _Answer[InstanceRecord]:
            answer = await connector.find_instances(query, deadline)
            kept = [r for r in answer.records if r.series_instance_uid == query.series_instance_uid]
            return _Kept(kept, answer.warnings, answer.truncated)

        return await self._each(self.select(source_ids), unable, call, deadline)

    async def _each(
        self,
        connectors: Sequence[Connector],
        unable: Callable[[Connector], str | None],
        call: Callable[[Connector, Deadline], Awaitable[_Answer[R]]],
        deadline: Deadline,
    ) -> LevelAnswer[R]:
        started = time.monotonic()
        results = await asyncio.gather(*(self._one(c, unable, call, deadline) for c in connectors))
        return LevelAnswer(
            outcomes=tuple(outcome for outcome, _ in results),
            records=tuple(record for _, records in results for record in records),
            elapsed_ms=millis_since(started),
        )

    async def _one(
        self,
        connector: Connector,
        unable: Callable[[Connector], str | None],
        call: Callable[[Connector, Deadline], Awaitable[_Answer[R]]],
        deadline: Deadline,
    ) -> tuple[SourceOutcome, Sequence[R]]:
        """One source's answer and status; never raises but for cancellation."""
        why = unable(connector)
        if why is not None:
            return _outcome(connector, SourceStatus.UNSUPPORTED, 0, error=why), ()
        breaker = self._breakers[connector.id]
        if not breaker.allow():
            return self._skipped(connector).outcome, ()
        started = time.monotonic()
        limit, attempt = self._limits[connector.id], Attempt()
        try:
            async with asyncio.timeout(deadline.remaining()):
                await limit.acquire()
        except TimeoutError:
            breaker.release_probe()
            self._overload.note("sources_busy")
            return _outcome(connector, SourceStatus.BUSY, millis_since(started), error=_NO_SLOT), ()
        except BaseException:
            breaker.release_probe()
            raise
        try:
            attempt.sent(deadline.remaining(), deadline.at - started)
            async with asyncio.timeout(deadline.remaining()):
                answer = await call(connector, deadline)
        except TimeoutError:
            outcome = _outcome(
                connector, SourceStatus.TIMEOUT, millis_since(started), error="no answer before the deadline"
            )
            self._judge(outcome, attempt)
            return outcome, ()
        except asyncio.CancelledError:
            breaker.release_probe()
            raise
        except Exception as exc:  # a ConnectorError, or a plugin's bug: a status, never the whole answer
            status, error = failure_of(connector, exc)
            outcome = _outcome(connector, status, millis_since(started), error=error)
            self._judge(outcome, attempt)
            return outcome, ()
        finally:
            limit.release()
        warnings = list(answer.warnings)
        if answer.truncated and not any("max_results" in w for w in warnings):
            warnings.append("the answer was truncated")
        outcome = _outcome(
            connector,
            SourceStatus.OK,
            millis_since(started),
            count=len(answer.records),
            warnings=tuple(dict.fromkeys(warnings)),
        )
        self._judge(outcome, attempt)
        return outcome, answer.records


@dataclass(frozen=True, slots=True)
class _Kept(Generic[R]):
    records: Sequence[R]
    warnings: Sequence[str]
    truncated: bool


async def _find_studies(
    connector: Connector, keys: StudyQuery, deadline: Deadline, slots: asyncio.Semaphore
) -> _Answer[StudyRecord]:
    """The connector's studies; a UID list to one that cannot send it is asked one UID a request.

    The caller holds one of the source's ``slots``; more requests run at once only on slots free
    right now (taken without waiting, so never more than ``max_concurrency`` at the source, and no
    wait for a slot this search itself holds). On a failure the other requests are cancelled and
    awaited before it is raised: none runs on once the slot is released and the breaker judges.
    """
    if not keys.study_instance_uids or connector.supports_uid_lists:
        return await connector.find_studies(keys, deadline)
    each = [
        keys.model_copy(update={"study_instance_uid": uid, "study_instance_uids": ()})
        for uid in keys.study_instance_uids
    ]
    answers: list[_Answer[StudyRecord] | None] = [None] * len(each)
    pending = iter(range(len(each)))

    async def worker() -> None:
        for index in pending:  # shared: each UID asked once, by whichever request is free
            answers[index] = await connector.find_studies(each[index], deadline)

    borrowed = 0
    try:
        while borrowed < len(each) - 1 and not slots.locked():  # free now: acquire() does not wait
            await slots.acquire()
            borrowed += 1
        workers = [asyncio.ensure_future(worker()) for _ in range(borrowed + 1)]
        try:
            await asyncio.gather(*workers)
        except BaseException:
            for task in workers:
                task.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            raise
    finally:
        for _ in range(borrowed):
            slots.release()
    done = [answer for answer in answers if answer is not None]
    return _Kept(
        [record for answer in done for record in answer.records],
        list(dict.fromkeys(warning for answer in done for warning in answer.warnings)),
        any(answer.truncated for answer in done),
    )


def _outcome(
    connector: Connector,
    status: SourceStatus,
    latency_ms: int,
    *,
    error: str | None = None,
    count: int = 0,
    warnings: tuple[str, ...] = (),
) -> SourceOutcome:
    return SourceOutcome(
        source=connector.info,
        status=status,
        latency_ms=latency_ms,
        exam_count=count,
        error=error,
        warnings=warnings,
    )
