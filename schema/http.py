"""GraphQL over HTTP on starlette: POST JSON to /graphql, GraphiQL for a browser's GET.

Errors always come back as GraphQL errors with ``extensions.code`` and the request id; an
unexpected exception is masked (no stack trace, no message that could quote patient data).
"""

from __future__ import annotations

import inspect
import json
import logging
from typing import Any

import graphene
from graphql import GraphQLError, OperationType, execute, get_operation_ast, parse, validate
from graphql.error import GraphQLSyntaxError
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response

from federation.errors import PacsfedError, QueryError
from federation.request_id import current_request_id

log = logging.getLogger("pacsfed.graphql")

MAX_BODY_BYTES = 256 * 1024


def _error(message: str, code: str, **extra: Any) -> dict[str, Any]:
    return {"message": message, "extensions": {"code": code, "requestId": current_request_id(), **extra}}


def format_error(error: GraphQLError) -> dict[str, Any]:
    """A GraphQL error with a code; unexpected exceptions are masked."""
    original = error.original_error
    payload: dict[str, Any]
    if original is None:
        payload = _error(error.message, "GRAPHQL_VALIDATION_FAILED")
    elif isinstance(original, QueryError):
        payload = _error(str(original), original.code)
    elif isinstance(original, PacsfedError):
        payload = _error(str(original), type(original).__name__.upper())
    else:
        log.error(
            "unexpected %s while resolving %s", type(original).__name__, ".".join(map(str, error.path or ()))
        )
        payload = _error("internal error", "INTERNAL_SERVER_ERROR")
    if error.locations:
        payload["locations"] = [{"line": loc.line, "column": loc.column} for loc in error.locations]
    if error.path:
        payload["path"] = list(error.path)
    return payload


def _errors_only(status: int, *errors: dict[str, Any]) -> JSONResponse:
    return JSONResponse({"errors": list(errors)}, status_code=status)


class GraphQLHandler:
    """Executes GraphQL requests against one schema with the engine in the context."""

    def __init__(self, schema: graphene.Schema, graphiql: bool = True) -> None:
        self.schema = schema
        self.graphiql = graphiql

    async def handle(self, request: Request) -> Response:
        """Route GET (GraphiQL or a query string) and POST (JSON body)."""
        if request.method == "GET":
            if self.graphiql and "text/html" in request.headers.get("accept", ""):
                return HTMLResponse(GRAPHIQL_HTML)
            params = dict(request.query_params)
            if "query" not in params:
                return _errors_only(400, _error("send a POST with a JSON body, or ?query=", "BAD_REQUEST"))
            variables = params.get("variables")
            try:
                parsed_variables = json.loads(variables) if variables else None
            except ValueError:
                return _errors_only(400, _error("variables is not valid JSON", "BAD_REQUEST"))
            return await self.execute(
                request, params["query"], parsed_variables, params.get("operationName"), get=True
            )
        body = await request.body()
        if len(body) > MAX_BODY_BYTES:
            return _errors_only(413, _error("request body too large", "BAD_REQUEST"))
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type not in ("application/json", "application/graphql-response+json", ""):
            return _errors_only(415, _error("POST application/json", "BAD_REQUEST"))
        try:
            payload = json.loads(body)
        except ValueError:
            return _errors_only(400, _error("the body is not valid JSON", "BAD_REQUEST"))
        if isinstance(payload, list):
            return _errors_only(400, _error("query batching is not supported", "BAD_REQUEST"))
        if not isinstance(payload, dict) or not isinstance(payload.get("query"), str):
            return _errors_only(
                400, _error("the body must be an object with a 'query' string", "BAD_REQUEST")
            )
        variables = payload.get("variables")
        if variables is not None and not isinstance(variables, dict):
            return _errors_only(400, _error("variables must be an object", "BAD_REQUEST"))
        operation = payload.get("operationName")
        return await self.execute(
            request, payload["query"], variables, operation if isinstance(operation, str) else None
        )

    async def execute(
        self,
        request: Request,
        query: str,
        variables: dict[str, Any] | None,
        operation_name: str | None,
        get: bool = False,
    ) -> Response:
        """Parse, validate and run one operation; always a GraphQL-shaped JSON answer."""
        try:
            document = parse(query, max_tokens=5000)
        except GraphQLSyntaxError as exc:
            return JSONResponse({"errors": [_error(exc.message, "GRAPHQL_PARSE_FAILED")]})
        validation_errors = validate(self.schema.graphql_schema, document)
        if validation_errors:
            return JSONResponse({"errors": [format_error(e) for e in validation_errors]})
        if get:
            operation = get_operation_ast(document, operation_name)
            if operation is not None and operation.operation is not OperationType.QUERY:
                return _errors_only(405, _error("only queries may be sent with GET", "BAD_REQUEST"))
        outcome = execute(
            self.schema.graphql_schema,
            document,
            variable_values=variables,
            operation_name=operation_name,
            context_value={"engine": request.app.state.engine, "request": request},
        )
        result = await outcome if inspect.isawaitable(outcome) else outcome
        response: dict[str, Any] = {}
        if result.errors:
            response["errors"] = [format_error(e) for e in result.errors]
        if result.data is not None or not result.errors:
            response["data"] = result.data
        return JSONResponse(response)


EXAMPLE_QUERY = """query {
  sources { id name kind }
  patientHistory(patient: {id: "DEMO-001"}, deadlineMs: 3000) {
    complete
    exams {
      studyInstanceUid studyDate studyTime modalities description accessionNumber
      patientName numberOfSeries numberOfInstances
      locations { source { id name } patientId retrieveUrl retrieveAeTitle }
    }
    sources { source { id } status latencyMs examCount error }
  }
}"""
"""The query the demo prints and GraphiQL opens with."""

GRAPHIQL_HTML = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>pacsfed · GraphiQL</title>
  <style>body { margin: 0; height: 100vh; } #graphiql { height: 100vh; }</style>
  <link rel="stylesheet" href="https://unpkg.com/graphiql@3.7.1/graphiql.min.css">
</head>
<body>
  <div id="graphiql">Loading GraphiQL…</div>
  <script src="https://unpkg.com/react@18.3.1/umd/react.production.min.js" crossorigin></script>
  <script src="https://unpkg.com/react-dom@18.3.1/umd/react-dom.production.min.js" crossorigin></script>
  <script src="https://unpkg.com/graphiql@3.7.1/graphiql.min.js" crossorigin></script>
  <script>
    const fetcher = GraphiQL.createFetcher({ url: window.location.pathname });
    const defaultQuery = `__EXAMPLE_QUERY__`;
    ReactDOM.createRoot(document.getElementById("graphiql")).render(
      React.createElement(GraphiQL, { fetcher, defaultQuery })
    );
  </script>
</body>
</html>
"""
GRAPHIQL_HTML = GRAPHIQL_HTML.replace("__EXAMPLE_QUERY__", EXAMPLE_QUERY)
