"""The per-query bookkeeping of the federation engine: results, shared requests, statuses."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from federation.cache.base import CachedAnswer
from federation.engine._overload import Attempt
from federation.engine.resilience import CircuitBreaker, Transition
from federation.errors import ConnectorError
from federation.identity.resolver import SourceIdentity
from federation.merge import RunningMerge
from federation.models import (
    CacheStatus,
    Candidate,
    Deadline,
    PatientHistory,
    SourceOutcome,
    SourceStatus,
    StudyRecord,
    status_of_failure,
)

if TYPE_CHECKING:  # connectors import the engine's models: no import at run time, no cycle
    import asyncio

    from connectors.base import Connector

log = logging.getLogger(__name__)


def status_for(exc: ConnectorError) -> SourceStatus:
    """The source status a connector failure is reported as (the vocabulary's mapping, the kit's too)."""
    return status_of_failure(exc)


@dataclass(frozen=True)
class SourceResult:
    outcome: SourceOutcome
    records: Sequence[StudyRecord]


def millis_since(since: float) -> int:
    return round((time.monotonic() - since) * 1000)


class SharedRequest:
    """One request to a source that several identical queries wait for."""

    def __init__(
        self,
        task: asyncio.Task[SourceResult],
        key: tuple[str, str] | None,
        deadline: Deadline,
        waiters: int = 0,
        attempt: Attempt | None = None,
    ) -> None:
        self.task = task
        self.attempt = attempt if attempt is not None else Attempt()
        """Whether the source was asked at all (it may be waiting for one of pacsfed's slots)."""
        self.key = key
        """Where the engine lists it as in flight (cache key, source id); None if unlisted."""
        self.deadline = deadline
        """The deadline the source was given: a query due later must not join (it would time out early)."""
        self.waiters = waiters
        self.timed_out = False
        """Set when its last waiter left at its deadline: the source did not answer in time."""


def not_asked(connector: Connector, status: SourceStatus, why: str) -> SourceResult:
    """A source that was not asked, and why."""
    return SourceResult(SourceOutcome(source=connector.info, status=status, latency_ms=0, error=why), ())


def not_searchable(connector: Connector, demographic: bool, state: QueryState) -> None:
    """A source whose connector cannot search by name and birth date, as data: its status or a warning."""
    if demographic:
        state.results[connector.id] = not_asked(
            connector,
            SourceStatus.UNSUPPORTED,
            "this source's connector cannot search by name and birth date",
        )
    elif connector.id in state.results:
        previous = state.results[connector.id]
        warnings = (*previous.outcome.warnings, "candidate search: not supported by this source's connector")
        state.results[connector.id] = SourceResult(
            previous.outcome.model_copy(update={"warnings": warnings}), previous.records
        )


def from_cache(connector: Connector, answer: CachedAnswer) -> SourceResult:
    """A source's cached answer as this query's result for it."""
    return SourceResult(
        SourceOutcome(
            source=connector.info,
            status=SourceStatus.OK,
            latency_ms=0,
            exam_count=len(answer.records),
            cached=True,
            cached_at=answer.answered_at,
        ),
        [record.cached(answer.answered_at) for record in answer.records],
    )


_STALE_SERVED = frozenset(
    {
        SourceStatus.SKIPPED,
        SourceStatus.BUSY,
        SourceStatus.TIMEOUT,
        SourceStatus.UNREACHABLE,
        SourceStatus.ERROR,
    }
)
"""Where a source gave no answer now, an older cached one is served (its status kept)."""


def with_stale(result: SourceResult, stale: CachedAnswer | None) -> SourceResult:
    """A source's failed result with its older cached answer's exams, if it has one (``stale_cached_at``)."""
    if stale is None or result.outcome.status not in _STALE_SERVED:
        return result
    outcome = result.outcome.model_copy(
        update={"stale_cached_at": stale.answered_at, "exam_count": len(stale.records)}
    )
    return SourceResult(outcome, [record.cached(stale.answered_at) for record in stale.records])


def source_setting(connector: Connector, name: str, default: Any) -> Any:
    """A source setting, or the default for connectors whose settings lack it."""
    return getattr(connector.settings, name, default)


def breaker_for(connector: Connector, on_change: Transition | None = None) -> CircuitBreaker:
    circuit = source_setting(connector, "circuit", None)
    if circuit is None:
        return CircuitBreaker(failures=5, reset_s=30.0, on_change=on_change)
    return CircuitBreaker(failures=circuit.failures, reset_s=circuit.reset_s, on_change=on_change)


def identity_of(connector: Connector) -> SourceIdentity:
    """The identity settings of a connector's source."""
    settings = connector.settings
    # A capability, not only a setting: a connector that cannot send the key is never asked to.
    match_issuer = bool(getattr(settings, "match_issuer", False))
    if match_issuer and not connector.supports_issuer_of_patient_id:
        log.warning(
            "source %s: match_issuer is set, but a %s connector cannot send IssuerOfPatientID: not sent",
            connector.id,
            connector.kind,
        )
        match_issuer = False
    return SourceIdentity(
        source_id=connector.id,
        issuer=getattr(settings, "issuer", None),
        national_id_in=getattr(settings, "national_id_in", "none"),
        match_issuer=match_issuer,
    )


def failure_of(connector: Connector, exc: BaseException) -> tuple[SourceStatus, str]:
    """A connector failure as a status and a message that holds no patient data."""
    if isinstance(exc, ConnectorError):
        status = status_for(exc)
        log.warning("source %s: %s (%s)", connector.id, status.value, exc)
        return status, str(exc)
    # Foreign messages may quote patient data: report the type only.
    log.error("source %s: unexpected %s in connector", connector.id, type(exc).__name__)
    return SourceStatus.ERROR, f"internal connector error ({type(exc).__name__})"


class QueryState:
    """What one patient query has gathered so far."""

    def __init__(self, connectors: Sequence[Connector], started: float) -> None:
        self.connectors = connectors
        self.infos = {c.id: c.info for c in connectors}
        self.started = started
        self.results: dict[str, SourceResult] = {}
        self.candidates: list[Candidate] = []
        self.warnings: list[str] = []
        self.changed: frozenset[str] = frozenset()
        """The StudyInstanceUIDs whose exam the last :meth:`history` added or changed."""
        self._merge = RunningMerge(self.infos)
        self.stale: dict[str, CachedAnswer] = {}
        """Every cached answer read for this query, fresh or not: served where a source cannot answer."""
        self.cache_unread = False
        """The cache was to be read but could not be: the answer says the cache was unavailable."""

    def history(self, cache_status: CacheStatus, cache_error: str | None = None) -> PatientHistory:
        """The history as it stands: merged exams, statuses in configuration order, candidates.

        Merges only the studies of results new since the last call (their UIDs in :attr:`changed`).
        """
        self.changed = self._merge.update({source_id: r.records for source_id, r in self.results.items()})
        outcomes = tuple(self.results[c.id].outcome for c in self.connectors if c.id in self.results)
        complete = len(outcomes) == len(self.connectors) and all(
            o.status is SourceStatus.OK for o in outcomes
        )
        if self.cache_unread and cache_status is CacheStatus.OK:
            cache_status, cache_error = CacheStatus.UNAVAILABLE, cache_error or "the cache could not be read"
        return PatientHistory(
            complete=complete,
            exams=tuple(self._merge.exams()),
            sources=outcomes,
            candidates=tuple(self.candidates),
            cache_status=cache_status,
            cache_error=cache_error,
            elapsed_ms=millis_since(self.started),
            warnings=tuple(dict.fromkeys(self.warnings)),
        )
