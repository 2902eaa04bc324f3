"""Prometheus metrics: the series ``GET /metrics`` exports, from one process or from every worker.

What the engine learns per query (each source's status and latency, the fan-out, cache reads,
failed cache writes) reaches :class:`Metrics` as the engine's :class:`EngineObserver`, a few
dictionary look-ups and additions per source. The counters that already live elsewhere (the
load counters and circuit breaker transitions shown by ``/readyz``, the audit shipping state) are
not counted twice: :meth:`Metrics.sync` copies what they say into the exported series, at each
scrape, and every :data:`SYNC_INTERVAL_S` in each worker under ``--workers``.

Under ``pacsfed serve --workers N`` the supervisor gives every worker one
``PROMETHEUS_MULTIPROC_DIR`` (see :mod:`pacsfed.workers`) and prometheus-client's multiprocess
mode writes each worker's values there; a scrape, whichever worker answers it, reads them all
(counters and histograms summed over the workers, dead ones included; gauges over the live ones).
No series carries patient data: labels are source ids, statuses, sink and store names, and
GraphQL root field names. The series and what to alert on: ``docs/METRICS.md``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from typing import cast

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from federation.access.expiry import cleanup_failures
from federation.access.principals import METRICS_READ
from federation.audit.records import AuditTrail
from federation.audit.trail import JournaledAuditTrail
from federation.cache.elasticsearch import ElasticsearchExamCache
from federation.engine import CircuitState, EngineObserver, FederationEngine
from federation.errors import AccessError
from federation.models import SourceOutcome

__all__ = ["MULTIPROCESS_DIR_ENV", "SYNC_INTERVAL_S", "Metrics", "metrics_endpoint", "multiprocess"]

MULTIPROCESS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
SYNC_INTERVAL_S = 5.0
"""How often each worker copies the counters that live elsewhere into the shared files (``--workers``)."""
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_FAN_OUT_BUCKETS = (0, 1, 2, 5, 10, 20, 50, 100, 200, 500)
_CIRCUIT = {CircuitState.CLOSED: 0, CircuitState.HALF_OPEN: 1, CircuitState.OPEN: 2}
_LOAD_EVENTS = (
    "queries_refused",
    "sources_busy",
    "retrievals_busy",
    "stale_answers_served",
    "refreshes_deferred",
)


def multiprocess() -> bool:
    """Whether this process writes its values for a multiprocess scrape (``PROMETHEUS_MULTIPROC_DIR``)."""
    return MULTIPROCESS_DIR_ENV in os.environ


class Metrics(EngineObserver):
    """The series of one pacsfed process, fed by its engine, its GraphQL handler and :meth:`sync`."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.source_latency = Histogram(
            "pacsfed_source_query_duration_seconds",
            "Time from a query's start to a source's answer, sources asked live only",
            ["source"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.source_queries = Counter(
            "pacsfed_source_queries",
            "Sources' outcomes in patient queries, by status; cached: answered from the cache",
            ["source", "status", "cached"],
            registry=r,
        )
        self.fan_out = Histogram(
            "pacsfed_query_fanout_sources",
            "Sources asked live at once by one query",
            buckets=_FAN_OUT_BUCKETS,
            registry=r,
        )
        self.cache_lookups = Counter(
            "pacsfed_cache_lookups",
            "Sources' cached answers looked up by queries, hit or miss",
            ["result"],
            registry=r,
        )
        self.es_write_errors = Counter(
            "pacsfed_elasticsearch_write_errors",
            "Writes to Elasticsearch that failed: cache answers, audit deliveries",
            ["store"],
            registry=r,
        )
        self.graphql_latency = Histogram(
            "pacsfed_graphql_operation_duration_seconds",
            "GraphQL operations over HTTP, from the checked document to the result",
            ["operation", "field"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.circuit = Gauge(
            "pacsfed_circuit_state",
            "Circuit breaker of a source: 0 closed, 1 half-open, 2 open (the worst over the workers)",
            ["source"],
            multiprocess_mode="livemax",
            registry=r,
        )
        self.circuit_transitions = Counter(
            "pacsfed_circuit_transitions", "Circuit breaker transitions", ["source", "transition"], registry=r
        )
        self.pending = Gauge(
            "pacsfed_pending_queries", "Patient queries in progress", multiprocess_mode="livesum", registry=r
        )
        self.load_events = {
            name: Counter(f"pacsfed_{name}", f"Load counter {name} (also in /readyz)", registry=r)
            for name in _LOAD_EVENTS
        }
        self.audit_lag = Gauge(
            "pacsfed_audit_shipping_lag_seconds",
            "Seconds since an audit sink last had every journaled record (0: caught up)",
            ["sink"],
            multiprocess_mode="livemax",
            registry=r,
        )
        self.audit_failures = Counter(
            "pacsfed_audit_ship_failures",
            "Failed deliveries of audit records to a sink",
            ["sink"],
            registry=r,
        )
        self.cleanup_failures = Counter(
            "pacsfed_cleanup_failures",
            "Failed clean-ups of expired share codes and access-state entries, by index",
            ["index"],
            registry=r,
        )
        self.cache_maintenance_failures = Counter(
            "pacsfed_cache_maintenance_failures",
            "Failed rounds of deleting the cache's indices past keep_days",
            registry=r,
        )
        self._latency: dict[str, Histogram] = {}
        self._statuses: dict[tuple[str, str, str], Counter] = {}
        self._operations: dict[tuple[str, str], Histogram] = {}
        self._hits = self.cache_lookups.labels("hit")
        self._misses = self.cache_lookups.labels("miss")
        self._cache_write_errors = self.es_write_errors.labels("cache")
        self._copied: dict[tuple[str, ...], float] = {}
        """The last value of each counter that lives elsewhere, as copied by :meth:`sync`."""

    # --- the engine's observer: a few look-ups per source and query ---

    def source_answered(self, outcome: SourceOutcome, *, live: bool) -> None:
        """Count the source's status; a live answer's latency goes into its histogram."""
        source = outcome.source.id
        key = (source, outcome.status.value, "true" if outcome.cached else "false")
        statuses = self._statuses.get(key)
        if statuses is None:
            statuses = self._statuses[key] = self.source_queries.labels(*key)
        statuses.inc()
        if live:
            latency = self._latency.get(source)
            if latency is None:
                latency = self._latency[source] = self.source_latency.labels(source)
            latency.observe(outcome.latency_ms / 1000)

    def fanned_out(self, sources: int) -> None:
        """One query's fan-out size."""
        self.fan_out.observe(sources)

    def cache_read(self, hits: int, misses: int) -> None:
        """Hits and misses of one query's cache read."""
        if hits:
            self._hits.inc(hits)
        if misses:
            self._misses.inc(misses)

    def cache_write_failed(self) -> None:
        """A failed write of answers to the cache."""
        self._cache_write_errors.inc()

    def graphql_operation(self, operation: str, field: str, seconds: float) -> None:
        """One GraphQL operation's latency (``operation``: query or mutation; ``field``: its first root field)."""
        key = (operation, field)
        histogram = self._operations.get(key)
        if histogram is None:
            histogram = self._operations[key] = self.graphql_latency.labels(*key)
        histogram.observe(seconds)

    # --- what lives elsewhere, copied ---

    def sync(self, engine: FederationEngine, audit: AuditTrail) -> None:
        """Copy the engine's load counters, breaker states, clean-up failures and the audit shipping state."""
        load = engine.load_counters()
        self.pending.set(cast(int, load["pending_queries"]))
        for name, counter in self.load_events.items():
            self._copy(counter, (name,), cast(int, load[name]))
        transitions = cast(dict[str, dict[str, int]], load["circuit_transitions"])
        for source, counts in transitions.items():
            for transition, count in counts.items():
                self._copy(self.circuit_transitions.labels(source, transition), (source, transition), count)
        for info in engine.sources:
            self.circuit.labels(info.id).set(_CIRCUIT[engine.circuit_state(info.id)])
        for index, failures in cleanup_failures().items():
            self._copy(self.cleanup_failures.labels(index), ("cleanup", index), failures)
        if isinstance(engine.cache, ElasticsearchExamCache):
            self._copy(
                self.cache_maintenance_failures, ("cache-maintenance",), engine.cache.maintenance_failures
            )
        if isinstance(audit, JournaledAuditTrail):
            for sink, (lag_s, failures) in audit.shipping().items():
                self.audit_lag.labels(sink).set(lag_s)
                self._copy(self.audit_failures.labels(sink), ("audit", sink), failures)
                if sink == "elasticsearch":
                    self._copy(self.es_write_errors.labels("audit"), ("es-audit",), failures)

    def _copy(self, counter: Counter, key: tuple[str, ...], value: float) -> None:
        """Advance ``counter`` by what ``value`` grew since the last copy."""
        grown = value - self._copied.get(key, 0.0)
        if grown > 0:
            counter.inc(grown)
            self._copied[key] = value

    def exposition(self) -> bytes:
        """The Prometheus text format: this process's series, or every worker's in multiprocess mode."""
        if not multiprocess():
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry)

    @contextlib.asynccontextmanager
    async def syncing(self, engine: FederationEngine, audit: AuditTrail) -> AsyncIterator[None]:
        """In multiprocess mode, :meth:`sync` every :data:`SYNC_INTERVAL_S` while the block runs."""
        if not multiprocess():
            yield
            return

        async def every_interval() -> None:
            while True:
                self.sync(engine, audit)
                await asyncio.sleep(SYNC_INTERVAL_S)

        task = asyncio.create_task(every_interval(), name="metrics-sync")
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def _refused(status: int, code: str, message: str) -> JSONResponse:
    headers = {"WWW-Authenticate": 'Bearer realm="pacsfed"'} if status == 401 else None
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


async def metrics_endpoint(request: Request) -> Response:
    """``GET /metrics``: the Prometheus text format, for callers holding ``metrics:read`` (anyone in --insecure-dev)."""
    services = request.app.state.services
    metrics: Metrics = request.app.state.metrics
    try:
        access = await services.access.access_for(request, "metrics")
    except AccessError as exc:
        return _refused(exc.status, exc.code, str(exc))
    if not access.principal.has(METRICS_READ):
        return _refused(403, "FORBIDDEN", f"reading metrics needs the scope {METRICS_READ}")
    metrics.sync(services.engine, services.audit)
    return Response(
        metrics.exposition(), media_type=CONTENT_TYPE_LATEST, headers={"Cache-Control": "no-store"}
    )
