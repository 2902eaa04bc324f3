"""WADO-RS under ``/dicom-web/studies/{study}``: forwarded to a source holding the study, streamed back.

PS3.18 10.4: a study, series or instance (``multipart/related``), its metadata (DICOM JSON, with
``BulkDataURI`` and RetrieveURL values rewritten to point here), frames, rendered and thumbnail
resources where the origin offers them, and the bulk data an instance's metadata points to. The
caller authenticates as for ``/graphql`` (``web.http_access``; the same scopes), on the channel
``dicomweb``; the service (``HistoryService.retrieve``) authorizes, audits (``IMAGE_READ``) and
finds the holder. Errors are DICOMweb statuses: 400 for a malformed path, 401/403, 404 when no
source holds the study, 502 when the holders failed, 504 when they were late, 503 OVERLOADED (or
AUDIT_UNAVAILABLE) with ``Retry-After``, 503 SOURCE_UNAVAILABLE at once when every holder's circuit
breaker is open, 503 BUSY when pacsfed's own slots for the holders stayed taken (``Retry-After``).
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from federation.errors import (
    AccessError,
    AuditError,
    ConnectorError,
    Overloaded,
    PacsfedError,
    QueryError,
    SourceBusy,
    SourceSkipped,
    SourceTimeout,
)
from federation.retrieve import RetrieveRequest, RetrieveStream
from federation.service import HistoryService
from web.http_access import RequestAccess
from web.public_url import as_public

__all__ = ["wado_routes"]

log = logging.getLogger(__name__)

CHANNEL = "dicomweb"
_STUDY_PATH = re.compile(r"^(?P<root>.*?)/studies/(?P<study>[^/]+)(?:/(?P<resource>.*))?$")
_RENDERED = ("/rendered", "/thumbnail")
_INSTANCE = "/studies/{study}/series/{series}/instances/{instance}"
_PATHS = (
    "/studies/{study}",
    "/studies/{study}/metadata",
    "/studies/{study}/rendered",
    "/studies/{study}/thumbnail",
    "/studies/{study}/series/{series}",
    "/studies/{study}/series/{series}/metadata",
    "/studies/{study}/series/{series}/rendered",
    "/studies/{study}/series/{series}/thumbnail",
    _INSTANCE,
    f"{_INSTANCE}/metadata",
    f"{_INSTANCE}/rendered",
    f"{_INSTANCE}/thumbnail",
    f"{_INSTANCE}/frames/{{frames}}",
    f"{_INSTANCE}/frames/{{frames}}/rendered",
    f"{_INSTANCE}/frames/{{frames}}/thumbnail",
    f"{_INSTANCE}/bulk/{{bulk:path}}",
    f"{_INSTANCE}/bulkdata/{{bulk:path}}",
)
"""Explicit paths, so that QIDO-RS's ``/studies/{study}/series`` and ``…/instances`` stay QIDO's."""


def wado_routes() -> list[BaseRoute]:
    """The WADO-RS routes, to mount under ``/dicom-web``."""
    return [Route(path, retrieve, methods=["GET"]) for path in _PATHS]


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(
        {"error": {"code": code, "message": message}},
        status_code=status,
        headers={"Cache-Control": "no-store", **(headers or {})},
    )


def retrieve_request(request: Request) -> RetrieveRequest:
    """The WADO-RS request a URL names (QueryError ``BAD_QUERY`` when it is not one)."""
    url = str(request.url.replace(query="", fragment=""))
    found = _STUDY_PATH.match(url)
    if found is None:
        raise QueryError("this is not a WADO-RS path", code="BAD_QUERY")
    resource = found["resource"] or ""
    rendered = resource in ("rendered", "thumbnail") or resource.endswith(_RENDERED)
    return RetrieveRequest(
        study_instance_uid=found["study"],
        resource=resource,
        accept=request.headers.get("accept"),
        query=request.url.query.encode("ascii", "ignore") if rendered else b"",
        base_url=as_public(request, found["root"]),
    )


async def retrieve(request: Request) -> Response:
    """One WADO-RS GET: the holding source's answer, streamed; or a DICOMweb error status."""
    services = request.app.state.services
    access_door: RequestAccess = services.access
    service: HistoryService = services.history
    try:
        wanted = retrieve_request(request)
        access = await access_door.access_for(request, CHANNEL)
        stream = await service.retrieve(wanted, access)
    except PacsfedError as exc:
        return _refused(exc)
    headers = {"Content-Type": stream.media_type, "Cache-Control": "private, no-store", **stream.headers}
    return _ClosingStream(_body(stream), status_code=stream.status, headers=headers)


class _ClosingStream(StreamingResponse):
    """A streamed answer whose body is closed however the response ends, a client gone mid-send too.

    Starlette leaves the body suspended when a disconnect cancels (or fails) a ``send``: closed
    here, the source's connection, the retrieval slot and the audit record come back at once, not
    at the next full garbage collection.
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            closing = getattr(self.body_iterator, "aclose", None)
            if closing is not None:
                await closing()


def _refused(exc: PacsfedError) -> Response:
    """A refusal or failure as its DICOMweb status (no patient data: the messages carry none)."""
    if isinstance(exc, AccessError):
        challenge = {"WWW-Authenticate": 'Bearer realm="pacsfed"'} if exc.status == 401 else None
        return _error(exc.status, exc.code, str(exc), challenge)
    if isinstance(exc, QueryError):
        status = 404 if exc.code == "NOT_FOUND" else 400
        return _error(status, exc.code, str(exc))
    if isinstance(exc, Overloaded):
        return _error(503, exc.code, str(exc), {"Retry-After": str(exc.retry_after_s)})
    if isinstance(
        exc, SourceSkipped | SourceBusy
    ):  # not asked now: circuit open, or pacsfed's own slots taken
        return _error(503, exc.code, str(exc), {"Retry-After": str(exc.retry_after_s)})
    if isinstance(exc, AuditError):
        message = "the audit journal cannot take records now"
        return _error(503, "AUDIT_UNAVAILABLE", message, {"Retry-After": "5"})
    if isinstance(exc, ConnectorError):
        log.warning("WADO-RS: the holding sources failed (%s)", type(exc).__name__)
        if isinstance(exc, SourceTimeout):
            return _error(504, "SOURCE_TIMEOUT", str(exc))
        return _error(502, "SOURCE_ERROR", str(exc))
    raise exc


async def _body(stream: RetrieveStream) -> AsyncIterator[bytes]:
    """The body as the source sends it; the source's connection released however it ends."""
    try:
        async for chunk in stream.chunks:
            yield chunk
    except PacsfedError as exc:
        # Headers are sent: the connection is broken off, so the caller cannot take a cut body for whole.
        log.warning("WADO-RS: the source's answer broke off (%s)", type(exc).__name__)
        raise
    finally:
        await stream.aclose()
