"""pacsfed's front door under overload: past ``server.max_pending_queries``, a query is refused unread.

The service refuses a query past the limit too (``OVERLOADED``), but only once the request was
read, authenticated and its GraphQL parsed and checked, all on the one event loop. Under a flood
of clients that work took the loop from the queries already admitted, which then ran long past
their deadline and kept the process slow for seconds after the flood. Here the same refusal
(503, ``Retry-After``, the body each front end gives) is answered from the request line alone.

The decision is the service's (``app.state.admission``, :class:`federation.service.Admission`).
Under ``pacsfed serve`` the HTTP server asked it before starting the request at all
(``web/http_server.py``); a request it let in is only counted here. Here is where requests from
another ASGI server, or with an ``Origin`` (the refusal then carries CORS headers), are refused.
"""

from __future__ import annotations

import contextlib

from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from federation.errors import Overloaded
from web.fhir.responses import error_response
from web.request_id import current_request_id

GRAPHQL_RESPONSE_JSON = "application/graphql-response+json"


ADMITTED_AT_DOOR = "pacsfed.admitted_at_door"
"""Scope key the HTTP server sets on a query request it let in past the service's admission."""


def channel(scope: Scope) -> str:
    """The audit channel of a query request: graphql or fhir."""
    return "graphql" if scope.get("path") == "/graphql" else "fhir"


def gated(scope: Scope) -> bool:
    """A request that may run a patient query: POST /graphql, a FHIR search."""
    path: str = scope.get("path", "")
    if path == "/graphql":
        return scope.get("method") == "POST"
    return path.startswith("/fhir/") and path != "/fhir/metadata"


def refusal_response(scope: Scope, refused: Overloaded, request_id: str | None = None) -> Response:
    """The 503 the front end itself would give: a GraphQL error, or a FHIR OperationOutcome."""
    retry = {"Retry-After": str(refused.retry_after_s)}
    if request_id is not None:
        retry["X-Request-Id"] = request_id
    if scope.get("path") != "/graphql":
        return error_response(
            503, "transient", "too many queries in progress; try again", refused.code, retry
        )
    accept = dict(scope.get("headers") or ()).get(b"accept", b"").decode("latin-1")
    error = {
        "message": str(refused),
        "extensions": {"code": refused.code, "requestId": request_id or current_request_id()},
    }
    media_type = GRAPHQL_RESPONSE_JSON if GRAPHQL_RESPONSE_JSON in accept else "application/json"
    return JSONResponse({"errors": [error]}, status_code=503, headers=retry, media_type=media_type)


class OverloadGate:
    """Counts each API request from its first byte; with the admitted queries at the limit, the 503 before anything is read."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Refuse a query request past the limit, or let it through holding its place until it is answered."""
        if scope["type"] != "http" or not gated(scope):
            await self.app(scope, receive, send)
            return
        admission = scope["app"].state.admission
        place = contextlib.ExitStack()
        try:  # let in by the HTTP server before it read the request: counted here, not asked twice
            place.enter_context(admission.door(channel(scope), let_in=bool(scope.get(ADMITTED_AT_DOOR))))
        except Overloaded as refused:
            await refusal_response(scope, refused)(scope, receive, send)
            return
        with place:
            await self.app(scope, receive, send)
