"""App wiring: the starlette application, its lifespan, and the engine built from settings."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

import httpx
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute

from connectors.base import ConnectorContext
from connectors.registry import build_connectors
from federation.cache import ExamCache, MemoryExamCache
from federation.cache_elasticsearch import ElasticsearchExamCache
from federation.engine import FederationEngine
from federation.identity import IdentityStore, MemoryIdentityStore
from federation.identity_elasticsearch import ElasticsearchIdentityStore
from federation.models import CacheStatus
from federation.request_id import RequestIdMiddleware
from federation.settings import Settings
from schema.http import GraphQLHandler
from schema.query import build_schema
from schema.ws import GraphQLWebSocket

log = logging.getLogger("pacsfed.app")


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
    settings: Settings, cache: ExamCache | None = None
) -> AsyncIterator[FederationEngine]:
    """An engine with its connectors, cache and HTTP client, closed on exit (CLI and app alike)."""
    async with make_http_client() as http_client:
        connectors = build_connectors(settings.sources, ConnectorContext(http_client=http_client))
        cache = cache if cache is not None else make_cache(settings)
        identity_store = make_identity_store(settings, cache)
        engine = FederationEngine(
            connectors,
            cache,
            settings.query,
            cache_write_wait_s=settings.cache.write_wait_s,
            identity_store=identity_store,
            national_issuer=settings.identity.national_issuer,
        )
        try:
            await cache.start()
            await identity_store.start()
            yield engine
        finally:
            await engine.aclose()


async def healthz(_request: Request) -> JSONResponse:
    """Liveness: the process serves HTTP."""
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> JSONResponse:
    """Readiness: able to answer queries; a down cache is reported as degraded, not as unready."""
    engine: FederationEngine = request.app.state.engine
    health = await engine.cache_health()
    cache = (
        {"backend": health.backend, "status": health.status.value, "detail": health.detail}
        if health is not None
        else {"status": CacheStatus.DISABLED.value}
    )
    degraded = health is not None and health.status is not CacheStatus.OK
    circuits = {source.id: engine.circuit_state(source.id).value for source in engine.sources}
    return JSONResponse(
        {
            "status": "degraded" if degraded else "ready",
            "cache": cache,
            "sources": len(engine.sources),
            "circuits": circuits,
        }
    )


def create_app(settings: Settings, cache: ExamCache | None = None, graphiql: bool = True) -> Starlette:
    """The pacsfed ASGI application; the engine lives for the lifespan of the app."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with engine_from_settings(settings, cache) as engine:
            app.state.engine = engine
            log.info("pacsfed ready: %d sources, cache=%s", len(engine.sources), settings.cache.backend)
            yield

    schema = build_schema()
    graphql = GraphQLHandler(schema, graphiql=graphiql)
    graphql_ws = GraphQLWebSocket(schema)
    return Starlette(
        routes=[
            Route("/graphql", graphql.handle, methods=["GET", "POST"]),
            WebSocketRoute("/graphql", graphql_ws.handle),
            Route("/healthz", healthz),
            Route("/readyz", readyz),
        ],
        middleware=[Middleware(RequestIdMiddleware)],
        lifespan=lifespan,
    )
