"""``GET /reports/<id>``: a document report (an encapsulated PDF) served to the caller its link was made for.

The caller authenticates as for /graphql (same credentials); the service checks the link is theirs
and unexpired, audits the access and fetches the document again from its source.
"""

from __future__ import annotations

import logging

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from federation.errors import AccessError, AuditError, ConnectorError, SourceBusy, SourceSkipped
from federation.service import HistoryService
from web.http_access import RequestAccess

log = logging.getLogger(__name__)

_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'none'; sandbox",
}


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(
        {"error": {"code": code, "message": message}},
        status_code=status,
        headers={**_HEADERS, **(headers or {})},
    )


async def report_document(request: Request) -> Response:
    """The document's bytes with its media type; 401/403/404 for callers and links that do not fit.

    503 with ``Retry-After`` when its source is not asked now (SOURCE_UNAVAILABLE: circuit open; BUSY).
    """
    services = request.app.state.services
    access_door: RequestAccess = services.access
    service: HistoryService = services.history
    try:
        access = await access_door.access_for(request, "reports")
        document = await service.report_document(request.path_params["link_id"], access)
    except AccessError as exc:
        challenge = {"WWW-Authenticate": 'Bearer realm="pacsfed"'} if exc.status == 401 else None
        return _error(exc.status, exc.code, str(exc), challenge)
    except AuditError:
        return _error(503, "AUDIT_UNAVAILABLE", "the audit journal cannot take records now")
    except (SourceSkipped, SourceBusy) as exc:  # not asked: its circuit is open, or pacsfed's slots are taken
        return _error(503, exc.code, str(exc), {"Retry-After": str(exc.retry_after_s)})
    except ConnectorError as exc:
        log.warning("report document: the source failed (%s)", type(exc).__name__)
        return _error(502, "SOURCE_ERROR", str(exc))
    return Response(
        document.content,
        media_type=document.mime_type,
        headers={**_HEADERS, "Content-Disposition": 'inline; filename="report.pdf"'}
        if document.mime_type == "application/pdf"
        else _HEADERS,
    )
