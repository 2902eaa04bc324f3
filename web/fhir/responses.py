"""FHIR JSON answers of the ``/fhir`` routes: resources, and failures as an OperationOutcome with their status.

Every message is pacsfed's own (the error types' messages carry no patient data); a failure the
routes do not expect is logged by its type only.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from starlette.responses import Response

from federation.errors import (
    AccessError,
    AuditError,
    AuthenticationError,
    CacheError,
    Overloaded,
    PacsfedError,
    QueryError,
)
from web.fhir.resources import operation_outcome, outcome_issue
from web.request_id import current_request_id

__all__ = ["MEDIA_TYPE", "error_response", "failure", "fhir_json", "not_acceptable"]

log = logging.getLogger(__name__)

MEDIA_TYPE = "application/fhir+json"

_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}


def fhir_json(resource: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """A FHIR JSON response."""
    body = json.dumps(resource, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return Response(
        body,
        status_code=status,
        media_type=f"{MEDIA_TYPE}; charset=utf-8",
        headers=_HEADERS | (headers or {}),
    )


def error_response(
    status: int, code: str, text: str, error_code: str | None = None, headers: dict[str, str] | None = None
) -> Response:
    """An OperationOutcome with one error issue."""
    issue = outcome_issue("error", code, text, error_code)
    return fhir_json(operation_outcome([issue], current_request_id()), status, headers)


def failure(exc: PacsfedError) -> Response:
    """A failure of a search or read as the HTTP status and OperationOutcome it means (no patient data)."""
    code = getattr(exc, "code", None)
    if isinstance(exc, AuthenticationError):
        error = "invalid_request" if exc.code == "UNAUTHENTICATED" else "invalid_token"
        challenge = {"WWW-Authenticate": f'Bearer realm="pacsfed", error="{error}"'}
        return error_response(401, "login", str(exc), exc.code, challenge)
    if isinstance(exc, AccessError):
        return error_response(exc.status, "forbidden", str(exc), exc.code)
    if isinstance(exc, QueryError):
        return error_response(400, "invalid", str(exc), exc.code)
    if isinstance(exc, Overloaded):
        retry = {"Retry-After": str(exc.retry_after_s)}
        return error_response(503, "transient", "too many queries in progress; try again", exc.code, retry)
    if isinstance(exc, AuditError | CacheError):
        return error_response(503, "transient", "the service cannot answer now; try again", code)
    log.warning("fhir request failed: %s", type(exc).__name__)
    return error_response(500, "exception", "the request failed", code)


def not_acceptable() -> Response:
    """The 406 for a client that takes no FHIR JSON."""
    return error_response(
        406, "not-supported", "only FHIR JSON is served: application/fhir+json", "NOT_ACCEPTABLE"
    )
