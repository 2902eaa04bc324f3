"""QIDO-RS under ``/dicom-web``: study, series and instance searches answered by the federation (PS3.18 10.6).

``GET /dicom-web/studies``, ``/studies/{study}/series`` (also ``/series?StudyInstanceUID=…``),
``/studies/{study}/series/{series}/instances`` and a whole study's ``/studies/{study}/instances``:
the caller authenticates as for ``/graphql`` (``web.http_access``: a JWT or an API key as a bearer token; none with ``auth: {mode: none}`` and
``--insecure-dev``), and :class:`HistoryService` searches (scopes, sources, audit on the
``dicomweb`` channel, admission, the configured deadline). The answer is a DICOM JSON array
(``application/dicom+json``) paged by ``limit`` and ``offset``; what pacsfed matches on is in
``web.dicomweb.qido_params``. Sources that failed, were late or could not be asked are named in
``Warning: 299 {service}: "…"`` headers (PS3.18 8.3.5.1): the answer is then partial.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Sequence
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from federation.access.principals import AccessContext
from federation.errors import AccessError, AuditError, Overloaded, PacsfedError, QueryError
from federation.models import SourceOutcome, SourceStatus
from federation.search import InstanceSearchResult
from federation.service import HistoryService
from web.dicomweb.qido_json import instance_json, series_json, study_json
from web.dicomweb.qido_params import QidoQuery, read_query
from web.http_access import RequestAccess
from web.public_url import public_base

__all__ = ["DICOM_JSON", "qido_routes"]

log = logging.getLogger(__name__)

DICOM_JSON = "application/dicom+json"
CHANNEL = "dicomweb"
_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}
_NOT_FAILURES = frozenset({SourceStatus.OK, SourceStatus.NO_IDENTIFIER})
"""Statuses that leave nothing out: answered, or not asked since it knows no identifier of the patient."""


def qido_routes() -> list[BaseRoute]:
    """``/studies``, ``/series``, ``/studies/{uid}/series``, ``…/series/{uid}/instances``, ``/studies/{uid}/instances``."""
    return [
        Route("/studies", _studies, methods=["GET"]),
        Route("/series", _series, methods=["GET"]),
        Route("/studies/{study}/series", _series, methods=["GET"]),
        Route("/studies/{study}/series/{series}/instances", _instances, methods=["GET"]),
        Route("/studies/{study}/instances", _study_instances, methods=["GET"]),
    ]


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(
        {"error": {"code": code, "message": message}}, status_code=status, headers=_HEADERS | (headers or {})
    )


def _failure(exc: PacsfedError) -> Response:
    """A refused or failed search as its HTTP status (messages hold no patient data)."""
    if isinstance(exc, AccessError):
        challenge = {"WWW-Authenticate": 'Bearer realm="pacsfed"'} if exc.status == 401 else None
        return _error(exc.status, exc.code, str(exc), challenge)
    if isinstance(exc, QueryError):
        return _error(400, exc.code, str(exc))
    if isinstance(exc, Overloaded):
        return _error(
            503, exc.code, "too many queries in progress; try again", {"Retry-After": str(exc.retry_after_s)}
        )
    if isinstance(exc, AuditError):
        return _error(503, "AUDIT_UNAVAILABLE", "the audit journal cannot take records now")
    log.warning("qido search failed: %s", type(exc).__name__)
    return _error(500, getattr(exc, "code", None) or "INTERNAL", "the search failed")


def _acceptable(request: Request) -> bool:
    accept = request.headers.get("accept", "")
    return not accept or any(kind in accept for kind in ("*/*", "application/*", "json"))


def _warning(service: str, text: str) -> tuple[bytes, bytes]:
    quoted = text.replace("\\", "\\\\").replace('"', '\\"')
    return b"warning", f'299 {service}: "{quoted}"'.encode("latin-1", "replace")


def _source_warnings(outcomes: Sequence[SourceOutcome]) -> list[str]:
    """One line per source whose part is missing from the answer (its id, status and reason: no patient data)."""
    lines = []
    for outcome in outcomes:
        if outcome.status in _NOT_FAILURES:
            continue
        why = f": {outcome.error}" if outcome.error else ""
        lines.append(f"source {outcome.source.id} {outcome.status.value}{why}")
    return lines


def _answer(
    request: Request,
    items: list[dict[str, Any]],
    query: QidoQuery,
    outcomes: Sequence[SourceOutcome],
    notes: Sequence[str] = (),
) -> Response:
    """The page of ``items`` the request asked for, with a Warning for each thing the answer lacks."""
    service = _base(request)
    page = items[query.offset : query.offset + query.limit]
    lines = _source_warnings(outcomes) + list(notes)
    lines += [f"{keyword} is not a matching key here: ignored" for keyword in dict.fromkeys(query.ignored)]
    if query.fuzzy:
        lines.append("fuzzymatching is not supported: names were matched as given")
    if query.offset + query.limit < len(items):
        lines.append("there are more matches: ask with a higher offset")
    body = json.dumps(page, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    response = Response(body, media_type=DICOM_JSON, headers=_HEADERS)
    response.raw_headers += [_warning(service, line[:300]) for line in dict.fromkeys(lines)]
    return response


def _base(request: Request) -> str:
    """pacsfed's DICOMweb root as callers reach it (``server.public_url``, else the request's Host)."""
    return public_base(request) + "/dicom-web"


async def _access(request: Request) -> tuple[HistoryService, AccessContext]:
    services = request.app.state.services
    door: RequestAccess = services.access
    return services.history, await door.access_for(request, CHANNEL)


async def _run(request: Request, level: str, search: Callable[..., Any]) -> Response:
    if not _acceptable(request):
        return _error(406, "NOT_ACCEPTABLE", f"QIDO answers {DICOM_JSON}")
    try:
        query = read_query(request.query_params, level)
        service, access = await _access(request)
        return await search(request, service, access, query)  # type: ignore[no-any-return]
    except PacsfedError as exc:
        return _failure(exc)


async def _studies(request: Request) -> Response:
    """``GET /studies``: matching studies, merged across the hospitals holding them."""

    async def search(
        request: Request, service: HistoryService, access: AccessContext, query: QidoQuery
    ) -> Response:
        result = await service.search_studies(query.study_search(), access)
        base = _base(request)
        items = [study_json(match, base) for match in result.studies]
        return _answer(request, items, query, result.sources, result.warnings)

    return await _run(request, "studies", search)


async def _series(request: Request) -> Response:
    """``GET /studies/{study}/series`` (or ``/series?StudyInstanceUID=…``): the study's series from every source."""

    async def search(
        request: Request, service: HistoryService, access: AccessContext, query: QidoQuery
    ) -> Response:
        result = await service.search_series(query.series_search(request.path_params.get("study")), access)
        base = _base(request)
        return _answer(
            request, [series_json(m, base) for m in result.series], query, result.sources, result.warnings
        )

    return await _run(request, "series", search)


async def _instances(request: Request) -> Response:
    """``GET /studies/{study}/series/{series}/instances``: the series' instances from every source."""

    async def search(
        request: Request, service: HistoryService, access: AccessContext, query: QidoQuery
    ) -> Response:
        params = request.path_params
        result = await service.search_instances(
            query.instance_search(params["study"], params["series"]), access
        )
        base = _base(request)
        items = [instance_json(m, base) for m in result.instances]
        return _answer(request, items, query, result.sources, result.warnings)

    return await _run(request, "instances", search)


_SERIES_AT_ONCE = 4
"""A study's series whose instances are asked at once (each is one search of every holding source)."""


async def _study_instances(request: Request) -> Response:
    """``GET /studies/{study}/instances``: the study's series, then each series' instances (PS3.18 10.6.1.2)."""

    async def search(
        request: Request, service: HistoryService, access: AccessContext, query: QidoQuery
    ) -> Response:
        study = request.path_params["study"]
        found = await service.search_series(query.series_search(study), access)
        gate = asyncio.Semaphore(_SERIES_AT_ONCE)

        async def instances(series: str) -> InstanceSearchResult:
            async with gate:
                return await service.search_instances(query.instance_search(study, series), access)

        uids = dict.fromkeys(match.record.series_instance_uid for match in found.series)
        results = await asyncio.gather(*(instances(uid) for uid in uids))
        outcomes: dict[str, SourceOutcome] = {}
        for outcome in [*found.sources, *(o for result in results for o in result.sources)]:
            if outcome.source.id not in outcomes or outcome.status not in _NOT_FAILURES:
                outcomes[outcome.source.id] = outcome  # a source that failed once is named
        notes = [*found.warnings, *(note for result in results for note in result.warnings)]
        base = _base(request)
        items = [instance_json(match, base) for result in results for match in result.instances]
        return _answer(request, items, query, list(outcomes.values()), list(dict.fromkeys(notes)))

    return await _run(request, "study-instances", search)
