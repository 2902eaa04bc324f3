"""GraphQL over WebSocket, the ``graphql-transport-ws`` protocol (as served by graphql-ws).

connection_init → connection_ack; subscribe {id, payload} → next … → complete; complete from
the client stops an operation; ping → pong. Protocol violations close the socket with the
protocol's codes (4400 bad message, 4401 not acknowledged, 4408 init timeout, 4409 duplicate id).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import graphene
from graphql import ExecutionResult, OperationType, execute, get_operation_ast, parse, subscribe, validate
from graphql.error import GraphQLSyntaxError
from starlette.websockets import WebSocket, WebSocketDisconnect

from schema.http import format_error

log = logging.getLogger("pacsfed.graphql.ws")

SUBPROTOCOL = "graphql-transport-ws"
INIT_TIMEOUT_S = 10.0


class _Close(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code, self.reason = code, reason


class GraphQLWebSocket:
    """Serves one schema over graphql-transport-ws, with the engine in each operation's context."""

    def __init__(self, schema: graphene.Schema) -> None:
        self.schema = schema

    async def handle(self, websocket: WebSocket) -> None:
        """Run one connection until the client leaves or breaks the protocol."""
        if SUBPROTOCOL not in websocket.scope.get("subprotocols", []):
            await websocket.close(code=4406, reason="Subprotocol not acceptable")
            return
        await websocket.accept(subprotocol=SUBPROTOCOL)
        operations: dict[str, asyncio.Task[None]] = {}
        try:
            await self._handshake(websocket)
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
                    operations[op_id] = asyncio.create_task(self._operate(websocket, op_id, payload))
                    operations[op_id].add_done_callback(_forget(operations, op_id))
                elif kind == "complete":
                    stopping = operations.get(str(message.get("id")))
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

    async def _handshake(self, websocket: WebSocket) -> None:
        try:
            message = await asyncio.wait_for(self._receive(websocket), timeout=INIT_TIMEOUT_S)
        except TimeoutError as exc:
            raise _Close(4408, "Connection initialisation timeout") from exc
        if message.get("type") != "connection_init":
            raise _Close(4401, "Unauthorized")
        await websocket.send_json({"type": "connection_ack"})

    @staticmethod
    async def _receive(websocket: WebSocket) -> dict[str, Any]:
        text = await websocket.receive_text()
        try:
            message = json.loads(text)
        except ValueError as exc:
            raise _Close(4400, "Invalid message") from exc
        if not isinstance(message, dict):
            raise _Close(4400, "Invalid message")
        return message

    async def _operate(self, websocket: WebSocket, op_id: str, payload: dict[str, Any]) -> None:
        """Run one operation: a subscription streams events; a query or mutation sends one."""
        try:
            async for result in self._results(websocket, payload):
                body: dict[str, Any] = {"data": result.data}
                if result.errors:
                    body["errors"] = [format_error(e) for e in result.errors]
                await websocket.send_json({"id": op_id, "type": "next", "payload": body})
            await websocket.send_json({"id": op_id, "type": "complete"})
        except _OperationErrors as failed:
            await websocket.send_json({"id": op_id, "type": "error", "payload": failed.errors})
        except (WebSocketDisconnect, RuntimeError):
            pass  # the client went away

    async def _results(self, websocket: WebSocket, payload: dict[str, Any]) -> AsyncIterator[ExecutionResult]:
        query, variables = payload.get("query"), payload.get("variables")
        operation_name = payload.get("operationName")
        if not isinstance(query, str) or (variables is not None and not isinstance(variables, dict)):
            raise _OperationErrors(
                [{"message": "payload needs a query string", "extensions": {"code": "BAD_REQUEST"}}]
            )
        try:
            document = parse(query, max_tokens=5000)
        except GraphQLSyntaxError as exc:
            raise _OperationErrors([format_error(exc)]) from exc
        problems = validate(self.schema.graphql_schema, document)
        if problems:
            raise _OperationErrors([format_error(e) for e in problems])
        context = {"engine": websocket.app.state.engine, "request": websocket}
        operation = get_operation_ast(document, operation_name)
        if operation is not None and operation.operation is OperationType.SUBSCRIPTION:
            stream = await subscribe(
                self.schema.graphql_schema,
                document,
                variable_values=variables,
                operation_name=operation_name,
                context_value=context,
            )
            if isinstance(stream, ExecutionResult):
                raise _OperationErrors([format_error(e) for e in stream.errors or []])
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
            document,
            variable_values=variables,
            operation_name=operation_name,
            context_value=context,
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
