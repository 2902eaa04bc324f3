"""GraphQL over HTTP on starlette: POST JSON to /graphql; GraphiQL for a browser in development.

Hardening (issue 5): the body is counted as it streams and refused past ``max_body_bytes`` (413);
bad JSON, a wrong content type or a batch (a JSON list) is a 400/415 with a GraphQL-shaped error;
every document passes :class:`schema.limits.DocumentChecker` (tokens, depth, aliases, fields;
no introspection in production); no error message offers "Did you mean …?".

Media types (GraphQL over HTTP, https://graphql.github.io/graphql-over-http/draft/): a client that
names ``application/graphql-response+json`` in ``Accept`` gets that media type and its status codes:
400 when the request fails before execution (document parsing, validation, variable coercion: no
``data`` in the body), 200 once execution started. Every other client gets ``application/json``
and 200 for every GraphQL error, as before. Either way, a query refused because too many are in
progress (``OVERLOADED``, ``server.max_pending_queries``) is a 503 with ``Retry-After``.

Errors always come back as GraphQL errors with ``extensions.code`` and ``extensions.requestId``.
The messages of our own exceptions that carry a ``code`` are shown (they never carry patient
data); values a client sent are cut out of coercion messages; anything else is masked as
``INTERNAL_ERROR`` and logged with the request id and the exception type only. A bad query is a
GraphQL error, never an HTTP 500.

The GraphQL context (the engine, the request, and whatever authentication adds) is built in one
place, the :data:`ContextFactory` given to the handler (:func:`default_context` unless told).
"""

from __future__ import annotations

import inspect
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

import graphene
from graphql import (
    DocumentNode,
    ExecutionResult,
    FieldNode,
    GraphQLError,
    OperationDefinitionNode,
    OperationType,
    execute,
    get_operation_ast,
)
from graphql.error import GraphQLSyntaxError
from starlette.requests import HTTPConnection, Request
from starlette.responses import HTMLResponse, JSONResponse, Response

from federation.errors import AccessError, Overloaded, PacsfedError
from federation.settings import ServerSettings
from schema._graphiql import EXAMPLE_QUERY as EXAMPLE_QUERY
from schema._graphiql import GRAPHIQL_HTML
from schema.execution import FastExecutionContext, is_awaitable
from schema.limits import DocumentChecker
from web.request_id import current_request_id

log = logging.getLogger(__name__)

ContextFactory = Callable[[HTTPConnection], Awaitable[dict[str, Any]]]
"""Builds the GraphQL context of one HTTP request or one WebSocket connection."""

GRAPHQL_RESPONSE_JSON = "application/graphql-response+json"
"""The GraphQL-over-HTTP media type: request errors have 4xx status codes."""

_SUGGESTION = re.compile(r"\s*Did you mean [^?]*\?", re.DOTALL)
_VALUE_TAILS = (
    # "String cannot represent a non string value: <value>", "Date cannot represent value: <value>"
    (re.compile(r"(cannot represent [\w -]*?value)\s*:.*$", re.DOTALL), r"\1."),
    # "Expected value of type 'Date!', found <literal>; <scalar message>"
    (re.compile(r"(Expected value of type '[^']+'), found .*$", re.DOTALL), r"\1."),
    # "Expected type 'Date'. <the scalar's own message>"
    (re.compile(r"^(Expected type '[^']+')\. .*$", re.DOTALL), r"\1."),
    # "Value '<value>' does not exist in 'Freshness' enum."
    (
        re.compile(r"^Value .* does not exist in ('\w+' enum\.)$", re.DOTALL),
        r"The value does not exist in \1",
    ),
)


async def default_context(connection: HTTPConnection) -> dict[str, Any]:
    """The engine and the request (or WebSocket) of one operation."""
    return {"engine": connection.app.state.engine, "request": connection}


def _error(message: str, code: str, request_id: str | None = None, **extra: Any) -> dict[str, Any]:
    rid = request_id if request_id is not None else current_request_id()
    return {"message": message, "extensions": {"code": code, "requestId": rid, **extra}}


def _clean(message: str) -> str:
    """A graphql-core message without suggestions and without the values the client sent."""
    message = _SUGGESTION.sub("", message)
    for pattern, replacement in _VALUE_TAILS:
        message = pattern.sub(replacement, message)
    return message


def _variable_message(error: GraphQLError) -> str:
    """``Variable '$p' got an invalid value at 'p.birthDate'; …`` without the value itself."""
    match = re.match(r"Variable '\$(\w+)'", error.message)
    if match is None:
        return _clean(error.message)
    name = match.group(1)
    where = re.search(r" at '(" + re.escape(name) + r"[\w.\[\]]*)'; ", error.message)
    message = f"Variable '${name}' got an invalid value" + (f" at '{where.group(1)}'" if where else "")
    original = error.original_error
    detail = _clean(original.message) if isinstance(original, GraphQLError) else ""
    return f"{message}; {detail}" if detail else f"{message}."


def format_error(
    error: GraphQLError, *, request_id: str | None = None, development: bool = False
) -> dict[str, Any]:
    """A GraphQL error with a code and the request id; unexpected exceptions are masked."""
    request_id = request_id if request_id is not None else current_request_id()
    original = error.original_error
    code = (error.extensions or {}).get("code")
    payload: dict[str, Any]
    if isinstance(error, GraphQLSyntaxError):
        payload = _error(_clean(error.message), "GRAPHQL_PARSE_FAILED", request_id)
    elif isinstance(original, PacsfedError) and isinstance(getattr(original, "code", None), str):
        payload = _error(str(original), original.code, request_id)  # type: ignore[attr-defined]
    elif isinstance(original, GraphQLError) and error.message.startswith("Variable '$"):
        payload = _error(_variable_message(error), "BAD_USER_INPUT", request_id)
    elif original is None and isinstance(code, str):
        payload = _error(_clean(error.message), code, request_id)
    elif original is None and not error.path:
        bad_input = error.message.startswith("Variable '$")
        code = "BAD_USER_INPUT" if bad_input else "GRAPHQL_VALIDATION_FAILED"
        payload = _error(_clean(error.message), code, request_id)
    else:
        kind = type(original).__name__ if original is not None else "GraphQLError"
        where = ".".join(map(str, error.path or ()))
        log.error("unexpected %s while resolving %s (request %s)", kind, where or "-", request_id)
        extra = {"exception": kind} if development else {}
        payload = _error("internal error", "INTERNAL_ERROR", request_id, **extra)
    if error.locations:
        payload["locations"] = [{"line": loc.line, "column": loc.column} for loc in error.locations]
    if error.path:
        payload["path"] = list(error.path)
    return payload


def overloaded(result: ExecutionResult) -> Overloaded | None:
    """The refusal of a result whose operation was refused for load (OVERLOADED), if it was."""
    for error in result.errors or ():
        if isinstance(error.original_error, Overloaded):
            return error.original_error
    return None


def _quality(accept: str) -> dict[str, float]:
    """``Accept`` as media range -> q (RFC 9110 12.5.1); a range named twice keeps its best q."""
    ranges: dict[str, float] = {}
    for item in accept.split(","):
        media, *params = (part.strip() for part in item.split(";"))
        q = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = min(max(float(value), 0.0), 1.0)
                except ValueError:
                    q = 0.0
        if media:
            ranges[media.lower()] = max(q, ranges.get(media.lower(), 0.0))
    return ranges


def wants_graphql_response(accept: str) -> bool:
    """True when ``Accept`` names application/graphql-response+json at least as high as JSON.

    Only an explicit mention counts: ``*/*`` or no ``Accept`` is answered with application/json
    (the GraphQL-over-HTTP spec's rule for legacy clients).
    """
    ranges = _quality(accept)
    preferred = ranges.get(GRAPHQL_RESPONSE_JSON, 0.0)
    json_q = max(ranges.get(m, 0.0) for m in ("application/json", "application/*", "*/*"))
    return preferred > 0.0 and preferred >= json_q


def _errors_only(status: int, *errors: dict[str, Any], headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"errors": list(errors)}, status_code=status, headers=headers)


def _bad_request(message: str, status: int = 400) -> JSONResponse:
    return _errors_only(status, _error(message, "BAD_REQUEST"))


OperationObserver = Callable[[str, str, float], None]
"""Told of one executed operation: its type (query, mutation), its first root field, its seconds."""


def _root_field(operation: OperationDefinitionNode) -> str:
    """The operation's first root field (a schema name, never the client's operation name)."""
    first = operation.selection_set.selections[0] if operation.selection_set.selections else None
    return first.name.value if isinstance(first, FieldNode) else "-"


class _TooLarge(Exception):
    pass


class GraphQLHandler:
    """Executes GraphQL requests against one schema, within one server's limits.

    GraphiQL is served only in development mode (and when ``graphiql`` is true); introspection
    is refused in production mode.
    """

    def __init__(
        self,
        schema: graphene.Schema,
        server: ServerSettings | None = None,
        *,
        context: ContextFactory = default_context,
        graphiql: bool = True,
        observe: OperationObserver | None = None,
    ) -> None:
        self.schema = schema
        self.observe = observe
        """Told each executed operation's type, first root field and seconds (metrics)."""
        self.server = server if server is not None else ServerSettings()
        self.development = self.server.mode == "development"
        self.graphiql = graphiql and self.development
        self.context = context
        self.checker = DocumentChecker(schema, self.server)

    async def handle(self, request: Request) -> Response:
        """Route GET (GraphiQL or a query string) and POST (JSON body); never an unmasked 500."""
        graphql_response = wants_graphql_response(request.headers.get("accept", ""))
        response: Response
        try:
            response = await self._handle(request, graphql_response)
        except AccessError as exc:
            response = _errors_only(exc.status, _error(str(exc), exc.code))
        except Exception as exc:
            log.error(
                "unexpected %s serving GraphQL (request %s)",
                type(exc).__name__,
                current_request_id(),
                exc_info=self.development,
            )
            response = _errors_only(500, _error("internal error", "INTERNAL_ERROR"))
        if isinstance(response, JSONResponse):
            response.headers.add_vary_header("Accept")  # the media type and status depend on it
            if graphql_response:
                response.headers["content-type"] = f"{GRAPHQL_RESPONSE_JSON}; charset=utf-8"
        return response

    async def _handle(self, request: Request, graphql_response: bool) -> Response:
        limit = self.server.graphql.max_body_bytes
        if request.method == "GET":
            if self.graphiql and "text/html" in request.headers.get("accept", ""):
                return HTMLResponse(GRAPHIQL_HTML)
            if len(request.url.query) > limit:
                return _bad_request("the query string is too long", 414)
            params = dict(request.query_params)
            if "query" not in params:
                return _bad_request("send a POST with a JSON body, or ?query=")
            variables = params.get("variables")
            try:
                parsed_variables = json.loads(variables) if variables else None
            except (ValueError, RecursionError):
                return _bad_request("variables is not valid JSON")
            if parsed_variables is not None and not isinstance(parsed_variables, dict):
                return _bad_request("variables must be an object")
            return await self.execute(
                request,
                params["query"],
                parsed_variables,
                params.get("operationName"),
                get=True,
                graphql_response=graphql_response,
            )
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type not in ("application/json", ""):
            return _bad_request("POST application/json", 415)
        try:
            body = await self._read_body(request, limit)
        except _TooLarge:
            return _bad_request(f"the request body is larger than {limit} bytes", 413)
        try:
            payload = json.loads(body)
        except (ValueError, RecursionError):
            return _bad_request("the body is not valid JSON")
        if isinstance(payload, list):
            return _bad_request("query batching is not supported: send one operation per request")
        if not isinstance(payload, dict) or not isinstance(payload.get("query"), str):
            return _bad_request("the body must be an object with a 'query' string")
        variables = payload.get("variables")
        if variables is not None and not isinstance(variables, dict):
            return _bad_request("variables must be an object")
        operation = payload.get("operationName")
        if operation is not None and not isinstance(operation, str):
            return _bad_request("operationName must be a string")
        extensions = payload.get("extensions")
        if extensions is not None and not isinstance(extensions, dict):
            return _bad_request("extensions must be an object")
        return await self.execute(
            request, payload["query"], variables, operation, graphql_response=graphql_response
        )

    @staticmethod
    async def _read_body(request: Request, limit: int) -> bytes:
        """The body, counted as it streams (a Content-Length is not trusted, nor needed)."""
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise _TooLarge
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise _TooLarge
            chunks.append(chunk)
        return b"".join(chunks)

    async def execute(
        self,
        request: Request,
        query: str,
        variables: dict[str, Any] | None,
        operation_name: str | None,
        get: bool = False,
        *,
        graphql_response: bool = False,
    ) -> Response:
        """Check, then run one operation; always a GraphQL-shaped JSON answer.

        With ``graphql_response`` (the client accepts application/graphql-response+json), an
        answer without ``data`` (the request failed before execution) is a 400.
        """
        request_error = 400 if graphql_response else 200
        checked = self.checker.check(query)
        if not isinstance(checked, DocumentNode):
            return JSONResponse({"errors": [self.format(e) for e in checked]}, status_code=request_error)
        operation = get_operation_ast(checked, operation_name)
        if get and operation is not None and operation.operation is not OperationType.QUERY:
            return _errors_only(
                405, _error("only queries may be sent with GET", "BAD_REQUEST"), headers={"allow": "POST"}
            )
        if operation is not None and operation.operation is OperationType.SUBSCRIPTION:
            return JSONResponse(
                {
                    "errors": [
                        _error(
                            "subscriptions are served over WebSocket (graphql-transport-ws) at this path",
                            "BAD_REQUEST",
                        )
                    ]
                },
                status_code=request_error,
            )
        context = await self.context(request)
        started = time.perf_counter()
        try:
            outcome = execute(
                self.schema.graphql_schema,
                checked,
                variable_values=variables,
                operation_name=operation_name,
                context_value=context,
                hide_suggestions=True,
                is_awaitable=is_awaitable,
                execution_context_class=FastExecutionContext,
            )
            result: ExecutionResult = await outcome if inspect.isawaitable(outcome) else outcome
        except RecursionError:
            return JSONResponse(
                {"errors": [_error("The operation is nested too deeply.", "QUERY_TOO_DEEP")]},
                status_code=request_error,
            )
        if self.observe is not None and operation is not None:
            self.observe(operation.operation.value, _root_field(operation), time.perf_counter() - started)
        body = self.result_body(result)
        refused = overloaded(result)
        if refused is not None:  # pacsfed's own load, not the query's fault: come back in a moment
            return JSONResponse(body, status_code=503, headers={"retry-after": str(refused.retry_after_s)})
        return JSONResponse(body, status_code=200 if "data" in body else request_error)

    def format(self, error: GraphQLError, request_id: str | None = None) -> dict[str, Any]:
        """:func:`format_error` with this server's mode."""
        return format_error(error, request_id=request_id, development=self.development)

    def result_body(self, result: ExecutionResult, request_id: str | None = None) -> dict[str, Any]:
        """The JSON body of one execution result, errors formatted and masked."""
        body: dict[str, Any] = {}
        if result.errors:
            body["errors"] = [self.format(e, request_id) for e in result.errors]
        if result.data is not None or not result.errors or any(e.path for e in result.errors):
            body["data"] = result.data  # null once execution started; absent for a request error
        return body
