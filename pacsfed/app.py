"""App wiring: the starlette application, its lifespan, and the engine built from settings."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import logging
from collections.abc import AsyncIterator, Coroutine, Sequence
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route, WebSocketRoute

from connectors.base import ConnectorContext
from connectors.registry import build_connectors
from dicom_facade import facade_from_settings
from federation.access.auth import Authenticator
from federation.access.expiry import Expiring, clean_periodically, cleanup_failures
from federation.access.principals import EmergencyWindows
from federation.access.share import MemoryShareStore, RedemptionLimiter, ShareCodes, ShareStore
from federation.access.share_elasticsearch import ElasticsearchShareStore
from federation.access.state_elasticsearch import (
    AccessStateIndex,
    ElasticsearchEmergencyWindows,
    ElasticsearchRedemptionLimiter,
    SharedEntries,
)
from federation.audit.records import AuditTrail
from federation.audit.trail import JournaledAuditTrail, build_audit_trail
from federation.cache.base import CacheHealth, ExamCache, MemoryExamCache
from federation.cache.elasticsearch import ElasticsearchExamCache
from federation.engine import EngineObserver
from federation.engine.engine import FederationEngine
from federation.errors import ConfigError
from federation.identity.elasticsearch import ElasticsearchIdentityStore
from federation.identity.resolver import IdentityStore, MemoryIdentityStore
from federation.models import CacheStatus
from federation.service import HistoryService
from federation.settings import Settings
from pacsfed.metrics import Metrics, metrics_endpoint
from pacsfed.telemetry import check_tracing, source_tracing
from schema.http import GraphQLHandler
from schema.query import build_schema
from schema.ws import GraphQLWebSocket
from web.cors import ApiCors
from web.dicomweb.qido import qido_routes
from web.dicomweb.wado import wado_routes
from web.fhir import FhirView
from web.graphiql import graphiql_routes
from web.http_access import AuthenticationMiddleware, RequestAccess, graphql_context
from web.overload_gate import OverloadGate
from web.page import page_routes
from web.page_config import page_config_routes, sign_in_origins
from web.report_document import report_document
from web.request_id import RequestIdMiddleware
from web.share_page import share_form, share_view

log = logging.getLogger(__name__)


def make_cache(settings: Settings) -> ExamCache:
    """The cache backend the settings ask for."""
    if settings.cache.backend == "memory":
        return MemoryExamCache()
    return ElasticsearchExamCache(settings.cache)


def make_identity_store(settings: Settings, cache: ExamCache) -> IdentityStore:
    """The cross-reference store beside the cache (sharing its Elasticsearch client)."""
    if isinstance(cache, ElasticsearchExamCache):
        return ElasticsearchIdentityStore(cache.client, settings.cache.index_prefix)
    return MemoryIdentityStore()


def make_http_client() -> httpx.AsyncClient:
    """The process's one HTTP client for DICOMweb sources (keep-alive, bounded pool)."""
    return httpx.AsyncClient(
        limits=httpx.Limits(max_connections=200, max_keepalive_connections=50, keepalive_expiry=30),
        timeout=httpx.Timeout(10.0),
        follow_redirects=False,
    )


@contextlib.asynccontextmanager
async def engine_from_settings(
    settings: Settings,
    cache: ExamCache | None = None,
    http_client: httpx.AsyncClient | None = None,
    observer: EngineObserver | None = None,
    *,
    start_stores: bool = True,
) -> AsyncIterator[FederationEngine]:
    """An engine with its connectors, cache and HTTP client, closed on exit (CLI and app alike).

    ``start_stores=False`` (``pacsfed check``) leaves the cache and identity store unstarted: no
    index templates or migration, and no hourly clean-up of expired indices.
    """
    async with contextlib.AsyncExitStack() as stack:
        if http_client is None:
            http_client = await stack.enter_async_context(make_http_client())
        connectors = build_connectors(
            settings.sources, ConnectorContext(http_client=http_client), allow=settings.connectors.allow
        )
        cache = cache if cache is not None else make_cache(settings)
        identity_store = make_identity_store(settings, cache)
        engine = FederationEngine(
            connectors,
            cache,
            settings.query,
            cache_write_wait_s=settings.cache.write_wait_s,
            identity_store=identity_store,
            national_issuer=settings.identity.national_issuer,
            max_pending_queries=settings.server.max_pending_queries,
            observer=observer,
        )
        try:
            if start_stores:
                await cache.start()
                await identity_store.start()
            yield engine
        finally:
            await engine.aclose()


CLEANUP_INTERVAL_S = 3600.0
"""How often each process deletes expired share codes and access-state entries (also once at start-up)."""


async def _start_then_clean(
    starts: Sequence[Coroutine[Any, Any, None]], stores: Sequence[Expiring], interval_s: float
) -> None:
    await asyncio.gather(*starts)
    await clean_periodically(stores, interval_s)


@dataclasses.dataclass(frozen=True)
class Services:
    """Everything a front end needs: the guarded service, the authenticator, the engine beneath."""

    engine: FederationEngine
    history: HistoryService
    authenticator: Authenticator
    audit: AuditTrail
    access: RequestAccess


@contextlib.asynccontextmanager
async def services_from_settings(
    settings: Settings,
    cache: ExamCache | None = None,
    observer: EngineObserver | None = None,
    *,
    cleanup_interval_s: float = CLEANUP_INTERVAL_S,
) -> AsyncIterator[Services]:
    """The engine wrapped in authorization and auditing, with the audit trail running (CLI and app)."""
    async with make_http_client() as http, engine_from_settings(settings, cache, http, observer) as engine:
        es_client = engine.cache.client if isinstance(engine.cache, ElasticsearchExamCache) else None
        audit = build_audit_trail(settings, es_client)
        share_store: ShareStore = (
            ElasticsearchShareStore(es_client, settings.cache.index_prefix)
            if es_client is not None
            else MemoryShareStore()
        )
        # Decision state every worker and instance must see (break-the-glass windows, lock-outs,
        # report links) lives beside the share codes; in this process with the memory cache.
        windows = EmergencyWindows(settings.auth.emergency_window_s)
        limiter = RedemptionLimiter(settings.share.max_failures, settings.share.lockout_s)
        shared: SharedEntries | None = None
        starts = [share_store.start()]
        expiring: list[Expiring] = [share_store] if isinstance(share_store, ElasticsearchShareStore) else []
        if es_client is not None:
            prefix = settings.cache.index_prefix
            state = AccessStateIndex(es_client, prefix)  # one index set-up for the three
            windows = ElasticsearchEmergencyWindows(
                es_client, prefix, settings.auth.emergency_window_s, index=state
            )
            limiter = ElasticsearchRedemptionLimiter(
                es_client, prefix, settings.share.max_failures, settings.share.lockout_s, index=state
            )
            shared = SharedEntries(es_client, prefix, index=state)
            starts += [windows.start()]  # the limiter's start would prepare the same index again
            expiring.append(state)
        # Index creation and clean-up wait for nothing: a slow or down node must not delay start-up.
        # The clean-up then runs periodically, so that a long-running process deletes what expires later.
        share_start = asyncio.create_task(
            _start_then_clean(starts, expiring, cleanup_interval_s), name="shared-state-clean-up"
        )
        shares = ShareCodes(settings.share, share_store, limiter)
        history = HistoryService(
            engine,
            audit,
            shares,
            emergency_window_s=settings.auth.emergency_window_s,
            national_issuer=settings.identity.national_issuer,
            reports=settings.reports,
            windows=windows,
            shared=shared,
        )
        authenticator = Authenticator(settings.auth, http, share_tokens=history.share_principal)
        await audit.start()
        summaries = asyncio.create_task(
            history.journal_flood_summaries_forever(), name="audit-flood-summaries"
        )
        try:
            yield Services(engine, history, authenticator, audit, RequestAccess(authenticator, history))
        finally:
            share_start.cancel()
            summaries.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await summaries
            await history.journal_flood_summaries()  # what was counted since the last minute
            await history.admission.aclose()  # the refusals of the last second
            await audit.aclose()


_GC_YOUNG_THRESHOLD = 10_000
"""Container allocations (net) between young collections; Python's default is 700."""


def _tune_collector() -> None:
    """Freeze the start-up heap and collect the young generation less often.

    The objects of imports and start-up live as long as the process; left in the oldest
    generation, each full collection walked them all again (~80 ms, every ~30 queries at 50
    sources: ~2.5 ms a query). A query at 50 sources holds a few thousand young containers at
    once (decoded DICOM JSON, records), so the default threshold of 700 collected them ~2 times
    a query at ~0.5 ms each, to free almost nothing: reference counting frees them anyway.
    """
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(_GC_YOUNG_THRESHOLD, middle, old)


INSECURE_WARNING = "authentication is OFF (auth: {mode: none}): development only, never with patient data"


async def healthz(request: Request) -> JSONResponse:
    """Liveness: the process serves HTTP (with ``--workers``, which worker answered)."""
    worker: int | None = getattr(request.app.state, "worker", None)
    return JSONResponse({"status": "ok"} if worker is None else {"status": "ok", "worker": worker})


READYZ_CACHE_WAIT_S = 1.0
"""How long /readyz waits for the cache's own health check before saying it did not answer."""


async def readyz(request: Request) -> JSONResponse:
    """Readiness: able to answer queries; a down cache or saturation is degraded, a journal that cannot write is not ready.

    The body also carries the in-process load counters (``load``): pending and refused queries,
    BUSY sources, stale answers served and every circuit breaker transition since start; and
    ``maintenance_failures``: failed rounds of the cache's deletion by age, failed clean-ups by index.
    """
    engine: FederationEngine = request.app.state.engine
    services: Services = request.app.state.services
    if isinstance(services.audit, JournaledAuditTrail) and (reason := await services.audit.unavailable()):
        # Every query needs its access journaled first: none can be answered now.
        return JSONResponse(
            {"status": "not_ready", "reason": reason, "audit": "unavailable"}, status_code=503
        )
    try:  # a cache slow to answer (saturated) must not leave /readyz unanswered: that is degraded too
        health = await asyncio.wait_for(engine.cache_health(), READYZ_CACHE_WAIT_S)
    except TimeoutError:
        backend = engine.cache.backend if engine.cache is not None else "none"
        health = CacheHealth(
            CacheStatus.UNAVAILABLE, backend, f"no answer within {READYZ_CACHE_WAIT_S:.0f} s"
        )
    cache = (
        {"backend": health.backend, "status": health.status.value, "detail": health.detail}
        if health is not None
        else {"status": CacheStatus.DISABLED.value}
    )
    saturation = engine.saturation()
    degraded = (health is not None and health.status is not CacheStatus.OK) or bool(saturation)
    circuits = {source.id: engine.circuit_state(source.id).value for source in engine.sources}
    warnings = [INSECURE_WARNING] if services.authenticator.insecure else []
    return JSONResponse(
        {
            "status": "degraded" if degraded else "ready",
            **({"reason": "saturated: " + "; ".join(saturation)} if saturation else {}),
            "saturation": saturation,
            "load": engine.load_counters(),
            "auth": "none" if services.authenticator.insecure else "enforced",
            "warnings": warnings,
            "audit": services.audit.sink_status() if isinstance(services.audit, JournaledAuditTrail) else {},
            "cache": cache,
            "sources": len(engine.sources),
            "circuits": circuits,
            "maintenance_failures": {
                "cache": engine.cache.maintenance_failures
                if isinstance(engine.cache, ElasticsearchExamCache)
                else 0,
                "cleanup": cleanup_failures(),
            },
        }
    )


def create_app(
    settings: Settings,
    cache: ExamCache | None = None,
    *,
    insecure_dev: bool = False,
    owns_process: bool = False,
    demo_token: str | None = None,
    worker: int | None = None,
) -> Starlette:
    """The pacsfed ASGI application; the engine lives for the lifespan of the app.

    ``auth: {mode: none}`` is refused unless ``insecure_dev`` (``pacsfed serve --insecure-dev``).
    ``owns_process`` (``pacsfed serve`` and ``demo``): once started, tune the process-wide garbage
    collector for serving (an app embedded in another program leaves it alone).
    ``demo_token`` (``pacsfed demo`` only): the page at ``/`` is signed in with it, without a form.
    ``worker``: this process's index under ``pacsfed serve --workers`` (shown by ``/healthz``).
    """
    if settings.auth.mode == "none" and not insecure_dev:
        raise ConfigError(
            "auth.mode is none (no authentication): configure auth {mode: jwt, issuer, audience,"
            " jwks_url | public_key_file} or auth {mode: api_key, api_keys: [...]} (pacsfed apikey"
            " create), or start with --insecure-dev for development"
        )

    # A signing key file that cannot be read is a ConfigError now (exit 2), not a start-up traceback.
    Authenticator(settings.auth)

    check_tracing(settings.telemetry)  # missing OpenTelemetry libraries: a ConfigError now (exit 2)
    metrics = Metrics()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        tracing = source_tracing(settings.telemetry)  # None when disabled: OpenTelemetry never imported
        metrics.source_span = tracing.opener if tracing is not None else None
        async with (
            services_from_settings(settings, cache, metrics) as services,
            metrics.syncing(services.engine, services.audit),
        ):
            app.state.engine = services.engine
            app.state.services = services
            app.state.admission = services.history.admission  # asked by every front end's door
            if services.authenticator.insecure:
                log.warning("!!! %s !!!", INSECURE_WARNING)
            if owns_process:
                _tune_collector()
            log.info(
                "pacsfed ready: %d sources, cache=%s", len(services.engine.sources), settings.cache.backend
            )
            async with contextlib.AsyncExitStack() as stack:
                if tracing is not None:  # shut down last, after every listener
                    stack.callback(tracing.shutdown)
                if settings.dicom_facade is not None and not worker:  # one DICOM listener: worker 0's
                    facade = facade_from_settings(
                        settings.dicom_facade, services.history, settings.query.default_deadline_ms
                    )
                    await facade.start()
                    stack.push_async_callback(facade.stop)
                    app.state.dicom_facade = facade
                yield

    schema = build_schema()
    graphql = GraphQLHandler(
        schema, settings.server, context=graphql_context, observe=metrics.graphql_operation
    )  # GraphiQL and introspection in development only
    graphql_ws = GraphQLWebSocket(schema, settings.server, context=graphql_context)
    origins = settings.server.cors_origins
    # Outermost: a browser's preflight carries no credentials and is answered before them.
    api_paths = ("/graphql", *FhirView.api_paths, "/dicom-web/")
    cors = [Middleware(ApiCors, origins=origins, paths=api_paths)] if origins else []
    app = Starlette(
        routes=[
            Route("/graphql", graphql.handle, methods=["GET", "POST"]),
            WebSocketRoute("/graphql", graphql_ws.handle),
            Route("/s", share_form, methods=["GET"]),
            Route("/s", share_view, methods=["POST"]),
            Route("/s/{code}", share_form, methods=["GET"]),
            Route("/reports/{link_id}", report_document, methods=["GET"]),
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            # One mount for both: starlette gives a path to the first mount whose prefix matches.
            Mount("/dicom-web", routes=[*qido_routes(), *wado_routes()]),
            Route("/metrics", metrics_endpoint),  # metrics:read (anyone with --insecure-dev)
            *FhirView(settings).routes(),
            *page_config_routes(settings.auth, demo_token),
            *graphiql_routes(settings.server.mode == "development"),
            *page_routes(connect_origins=sign_in_origins(settings.auth)),
        ],
        middleware=[
            *cors,
            Middleware(RequestIdMiddleware),
            Middleware(OverloadGate),  # past server.max_pending_queries: 503 before the body is read
            Middleware(
                AuthenticationMiddleware,
                max_body_bytes=settings.server.graphql.max_body_bytes,
                max_tokens=settings.server.graphql.max_tokens,
                trusted_origins=tuple(origins),
            ),
        ],
        lifespan=lifespan,
    )
    app.state.worker = worker
    app.state.public_url = settings.server.public_url  # web.public_url: the base of absolute URLs
    app.state.metrics = metrics
    return app
