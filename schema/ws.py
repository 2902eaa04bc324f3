"""GraphQL over WebSocket, the ``graphql-transport-ws`` protocol (as served by graphql-ws).

connection_init → connection_ack; subscribe {id, payload} → next … → complete; complete from
the client stops an operation; ping → pong. Protocol violations close the socket with the
protocol's codes (4400 bad message, 4401 not acknowledged, 4403 forbidden, 4408 init timeout,
4409 duplicate id, 4429 repeated init); a message over ``max_body_bytes`` closes it with 1009.

Each operation passes the same :class:`schema.limits.DocumentChecker` as HTTP (tokens, depth,
aliases, fields; no introspection in production) and its errors are masked the same way, with
a request id per operation. The context is built once per connection, after ``connection_init``
(whose payload is left in ``websocket.state.connection_params``), by the handler's context factory.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

import graphene
from graphql import DocumentNode, ExecutionResult, OperationType, execute, get_operation_ast, subscribe
from starlette.websockets import WebSocket, WebSocketDisconnect

from federation.errors import AccessError, AuthenticationError
from federation.settings import ServerSettings
from schema.execution import is_awaitable
from schema.http import ContextFactory, default_context, format_error
from schema.limits import DocumentChecker

log = logging.getLogger("pacsfed.graphql.ws")

SUBPROTOCOL = "graphql-transport-ws"
INIT_TIMEOUT_S = 10.0


class _Close(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code, self.reason = code, reason


MAX_OPERATIONS = 8
"""Operations running at once on one connection."""


class GraphQLWebSocket:
    """Serves one schema over graphql-transport-ws, within one server's limits."""

    def __init__(
        self,
        schema: graphene.Schema,
        server: ServerSettings | None = None,
        *,
        context: ContextFactory = default_context,
    ) -> None:
        self.schema = schema
        self.server = server if server is not None else ServerSettings()
        self.development = self.server.mode == "development"
        self.context = context
        self.checker = DocumentChecker(schema, self.server)

    async def handle(self, websocket: WebSocket) -> None:
        """Run one connection until the client leaves or breaks the protocol."""
        if SUBPROTOCOL not in websocket.scope.get("subprotocols", []):
            await websocket.close(code=4406, reason="Subprotocol not acceptable")
            return
        await websocket.accept(subprotocol=SUBPROTOCOL)
        operations: dict[str, asyncio.Task[None]] = {}
        try:
            context = await self._handshake(websocket)
            while True:
                message = await self._receive(websocket)
                kind = message.get("type")
                if kind == "ping":
                    await websocket.send_json({"type": "pong"})
                elif kind == "pong":
                    continue
                elif kind == "subscribe":
                    op_id = message.get("id")
                    payload = message.get("payload")
                    if not isinstance(op_id, str) or not op_id or not isinstance(payload, dict):
                        raise _Close(4400, "Invalid subscribe message")
                    if op_id in operations:
                        raise _Close(4409, f"Subscriber for {op_id} already exists")
                    if len(operations) >= MAX_OPERATIONS:
                        # One connection must not start unbounded fan-outs (each asks every source).
                        await websocket.send_json(
                            {
                                "id": op_id,
                                "type": "error",
                                "payload": [
                                    {
                                        "message": f"at most {MAX_OPERATIONS} operations at once per connection",
                                        "extensions": {"code": "TOO_MANY_OPERATIONS"},
                                    }
                                ],
                            }
                        )
                        continue
                    operations[op_id] = asyncio.create_task(self._operate(websocket, op_id, payload, context))
                    operations[op_id].add_done_callback(_forget(operations, op_id))
                elif kind == "complete":
                    # The id is free at once (a client may reuse it in its next message); the
                    # cancelled operation sends nothing more.
                    stopping = operations.pop(str(message.get("id")), None)
                    if stopping is not None:
                        stopping.cancel()
                elif kind == "connection_init":
                    raise _Close(4429, "Too many initialisation requests")
                else:
                    raise _Close(4400, "Unknown message type")
        except _Close as close:
            with contextlib.suppress(Exception):
                await websocket.close(code=close.code, reason=close.reason)
        except WebSocketDisconnect:
            pass
        finally:
            for task in operations.values():
                task.cancel()

    async def _handshake(self, websocket: WebSocket) -> dict[str, Any]:
        """Wait for connection_init, build the connection's context, acknowledge."""
        try:
            message = await asyncio.wait_for(self._receive(websocket), timeout=INIT_TIMEOUT_S)
        except TimeoutError as exc:
            raise _Close(4408, "Connection initialisation timeout") from exc
        if message.get("type") != "connection_init":
            raise _Close(4401, "Unauthorized")
        params = message.get("payload")
        websocket.state.connection_params = params if isinstance(params, dict) else None
        try:
            context = await self.context(websocket)
        except AuthenticationError as exc:
            raise _Close(4401, "Unauthorized") from exc
        except AccessError as exc:
            raise _Close(4403, "Forbidden") from exc
        await websocket.send_json({"type": "connection_ack"})
        return context

    async def _receive(self, websocket: WebSocket) -> dict[str, Any]:
        text = await websocket.receive_text()
        if len(text) > self.server.graphql.max_body_bytes:
            raise _Close(1009, "Message too big")
        try:
            message = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise _Close(4400, "Invalid message") from exc
        if not isinstance(message, dict):
            raise _Close(4400, "Invalid message")
        return message

    async def _operate(
        self, websocket: WebSocket, op_id: str, payload: dict[str, Any], context: dict[str, Any]
    ) -> None:
        """Run one operation: a subscription streams events; a query or mutation sends one."""
        request_id = uuid.uuid4().hex
        try:
            async for result in self._results(payload, context, request_id):
                body: dict[str, Any] = {"data": result.data}
                if result.errors:
                    body["errors"] = [self._format(e, request_id) for e in result.errors]
                await websocket.send_json({"id": op_id, "type": "next", "payload": body})
            await websocket.send_json({"id": op_id, "type": "complete"})
        except _OperationErrors as failed:
            await websocket.send_json({"id": op_id, "type": "error", "payload": failed.errors})
        except (WebSocketDisconnect, RuntimeError):
            pass  # the client went away
        except Exception as exc:
            log.error(
                "unexpected %s in a WebSocket operation (request %s)",
                type(exc).__name__,
                request_id,
                exc_info=self.development,
            )
            with contextlib.suppress(Exception):
                error = {
                    "message": "internal error",
                    "extensions": {"code": "INTERNAL_ERROR", "requestId": request_id},
                }
                await websocket.send_json({"id": op_id, "type": "error", "payload": [error]})

    def _format(self, error: Any, request_id: str) -> dict[str, Any]:
        return format_error(error, request_id=request_id, development=self.development)

    async def _results(
        self, payload: dict[str, Any], context: dict[str, Any], request_id: str
    ) -> AsyncIterator[ExecutionResult]:
        query, variables = payload.get("query"), payload.get("variables")
        operation_name = payload.get("operationName")
        if (
            not isinstance(query, str)
            or (variables is not None and not isinstance(variables, dict))
            or (operation_name is not None and not isinstance(operation_name, str))
        ):
            message = "payload needs a query string (and variables an object, operationName a string)"
            raise _OperationErrors(
                [{"message": message, "extensions": {"code": "BAD_REQUEST", "requestId": request_id}}]
            )
        checked = self.checker.check(query)
        if not isinstance(checked, DocumentNode):
            raise _OperationErrors([self._format(e, request_id) for e in checked])
        context = {**context, "request_id": request_id}
        operation = get_operation_ast(checked, operation_name)
        if operation is not None and operation.operation is OperationType.SUBSCRIPTION:
            stream = await subscribe(
                self.schema.graphql_schema,
                checked,
                variable_values=variables,
                operation_name=operation_name,
                context_value=context,
                hide_suggestions=True,
            )
            if isinstance(stream, ExecutionResult):
                raise _OperationErrors([self._format(e, request_id) for e in stream.errors or []])
            try:
                async for result in stream:
                    yield result
            finally:
                aclose = getattr(stream, "aclose", None)
                if aclose is not None:
                    await aclose()
            return
        outcome = execute(
            self.schema.graphql_schema,
            checked,
            variable_values=variables,
            operation_name=operation_name,
            context_value=context,
            hide_suggestions=True,
            is_awaitable=is_awaitable,
        )
        yield await outcome if inspect.isawaitable(outcome) else outcome


def _forget(operations: dict[str, asyncio.Task[None]], op_id: str) -> Any:
    """A done-callback that drops a finished operation (only if it is still the one under that id)."""

    def forget(task: asyncio.Task[None]) -> None:
        if operations.get(op_id) is task:
            del operations[op_id]

    return forget


class _OperationErrors(Exception):
    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__("operation refused")
        self.errors = errors
