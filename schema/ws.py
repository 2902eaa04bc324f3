"""GraphQL over WebSocket, the ``graphql-transport-ws`` protocol (as served by graphql-ws).

connection_init → connection_ack; subscribe {id, payload} → next … → complete; complete from
the client stops an operation; ping → pong. Protocol violations close the socket with the
protocol's codes (4400 bad message, 4401 not acknowledged, 4403 forbidden, 4408 init timeout,
4409 duplicate id, 4429 repeated init); a message over ``max_body_bytes`` closes it with 1009.

Each operation passes the same :class:`schema.limits.DocumentChecker` as HTTP (tokens, depth,
aliases, fields; no introspection in production) and its errors are masked the same way, with
a request id per operation; a subscription's own errors (bad arguments, access) keep their codes.

The context is built by the handler's context factory after ``connection_init`` (whose payload
is left in ``websocket.state.connection_params``), and built again, re-checking the credential,
for every new operation. A rejected credential closes the socket with 4403. The caller of an
open socket lapses when its credential expires (``Principal.expires_at``), when the context's
``revoked`` event is set (a share revoked in this process), or when a re-check refuses it (every
:data:`RECHECK_PERIOD_S` while operations run: a revocation made elsewhere); then every running
operation gets an ``error`` and the socket is closed with 4403. No ``next`` leaves after that.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import inspect
import json
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

import graphene
from graphql import (
    DocumentNode,
    ExecutionResult,
    GraphQLError,
    OperationType,
    create_source_event_stream,
    execute,
    get_operation_ast,
)
from starlette.websockets import WebSocket, WebSocketDisconnect

from federation.access.principals import AccessContext
from federation.errors import AccessError, AuthenticationError, Overloaded, PacsfedError
from federation.settings import ServerSettings
from schema.execution import FastExecutionContext, is_awaitable, sharing_memo
from schema.http import ContextFactory, default_context, format_error
from schema.limits import DocumentChecker

log = logging.getLogger(__name__)

SUBPROTOCOL = "graphql-transport-ws"
INIT_TIMEOUT_S = 10.0
RECHECK_PERIOD_S = 10.0
"""How often the credential of a socket with running operations is checked again."""
FORBIDDEN = 4403
_PAST_EXPIRY_S = 0.01
"""Wake this long after an expiry, so that a timer firing early does not spin on re-checks."""


class _Close(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code, self.reason = code, reason


MAX_OPERATIONS = 8
"""Operations running at once on one connection."""


def _arriving(websocket: WebSocket) -> contextlib.AbstractContextManager[None]:
    """The service's admission door for a subscription (``server.max_pending_queries``), if the app has a service."""
    app = websocket.scope.get("app")
    admission = getattr(getattr(app, "state", None), "admission", None)
    door: contextlib.AbstractContextManager[None] = (
        admission.door("graphql") if admission is not None else contextlib.nullcontext()
    )
    return door


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
        """Run one connection until the client leaves, breaks the protocol or its credential lapses."""
        if SUBPROTOCOL not in websocket.scope.get("subprotocols", []):
            await websocket.close(code=4406, reason="Subprotocol not acceptable")
            return
        await websocket.accept(subprotocol=SUBPROTOCOL)
        connection: _Connection | None = None
        watching: asyncio.Task[None] | None = None
        try:
            connection = _Connection(self, websocket, await self._handshake(websocket))
            watching = asyncio.create_task(connection.watch())
            while connection.lapsed is None:
                message = await self._receive(websocket)
                kind = message.get("type")
                if kind == "ping":
                    await websocket.send_json({"type": "pong"})
                elif kind == "pong":
                    continue
                elif kind == "subscribe":
                    await self._subscribe(connection, message)
                elif kind == "complete":
                    # The id is free at once (a client may reuse it in its next message); the
                    # cancelled operation sends nothing more.
                    stopping = connection.operations.pop(str(message.get("id")), None)
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
            if watching is not None:
                watching.cancel()
            if connection is not None:
                for task in connection.operations.values():
                    task.cancel()

    async def _subscribe(self, connection: _Connection, message: dict[str, Any]) -> None:
        """Start one operation, once the caller has been checked again."""
        op_id = message.get("id")
        payload = message.get("payload")
        if not isinstance(op_id, str) or not op_id or not isinstance(payload, dict):
            raise _Close(4400, "Invalid subscribe message")
        operations = connection.operations
        if op_id in operations:
            raise _Close(4409, f"Subscriber for {op_id} already exists")
        if len(operations) >= MAX_OPERATIONS:
            # One connection must not start unbounded fan-outs (each asks every source).
            refusal = f"at most {MAX_OPERATIONS} operations at once per connection"
            error = {"message": refusal, "extensions": {"code": "TOO_MANY_OPERATIONS"}}
            await connection.websocket.send_json({"id": op_id, "type": "error", "payload": [error]})
            return
        place = contextlib.ExitStack()
        try:  # past server.max_pending_queries: refused before the caller is checked or the query parsed
            place.enter_context(_arriving(connection.websocket))
        except Overloaded as refused:
            error = {
                "message": str(refused),
                "extensions": {"code": refused.code, "requestId": uuid.uuid4().hex},
            }
            await connection.websocket.send_json({"id": op_id, "type": "error", "payload": [error]})
            return
        with place:
            context = await connection.recheck(refusing=op_id)
            if context is None or connection.lapsed is not None:
                return  # the caller lapsed (here or in the watcher meanwhile): the connection is closed
            operations[op_id] = asyncio.create_task(self._operate(connection, op_id, payload, context))
            operations[op_id].add_done_callback(_forget(operations, op_id))
            held = place.pop_all()  # the place is held until the operation ends
            operations[op_id].add_done_callback(lambda _: held.close())

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
        except AccessError as exc:  # a rejected connection_init: 4403, as graphql-transport-ws says
            raise _Close(FORBIDDEN, "Forbidden") from exc
        except PacsfedError as exc:  # the credential cannot be checked (e.g. the share store is down)
            log.error("cannot check a WebSocket's credential: %s", type(exc).__name__)
            raise _Close(1011, "Internal error") from exc
        await websocket.send_json({"type": "connection_ack"})
        return context

    async def _receive(self, websocket: WebSocket) -> dict[str, Any]:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            raise WebSocketDisconnect(message.get("code", 1000), message.get("reason"))
        text = message.get("text")
        if not isinstance(text, str):  # graphql-transport-ws speaks text frames only
            raise _Close(4400, "Binary frames are not supported")
        if len(text) > self.server.graphql.max_body_bytes:
            raise _Close(1009, "Message too big")
        try:
            parsed = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise _Close(4400, "Invalid message") from exc
        if not isinstance(parsed, dict):
            raise _Close(4400, "Invalid message")
        return parsed

    async def _operate(
        self, connection: _Connection, op_id: str, payload: dict[str, Any], context: dict[str, Any]
    ) -> None:
        """Run one operation: a subscription streams events; a query or mutation sends one."""
        websocket = connection.websocket
        request_id = uuid.uuid4().hex
        try:
            async for result in self._results(payload, context, request_id):
                lapsed = connection.expired_or_revoked()
                if lapsed is not None:  # not one more event for a caller who lost the right to it
                    await connection.end(lapsed)
                    return
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
            # graphql-core's subscribe() maps each event with execute() but without our cheaper
            # awaitable check (schema.execution), which a history's thousands of values each pay.
            stream = await create_source_event_stream(
                self.schema.graphql_schema,
                checked,
                context_value=context,
                variable_values=variables,
                operation_name=operation_name,
                hide_suggestions=True,
            )
            if isinstance(stream, ExecutionResult):
                raise _OperationErrors([self._format(e, request_id) for e in stream.errors or []])
            # The events share what they completed: an unchanged source status or location is
            # completed once for the subscription, not once per event.
            context_class = sharing_memo()
            try:
                async for event in stream:
                    mapped = execute(
                        self.schema.graphql_schema,
                        checked,
                        root_value=event,
                        context_value=context,
                        variable_values=variables,
                        operation_name=operation_name,
                        hide_suggestions=True,
                        is_awaitable=is_awaitable,
                        execution_context_class=context_class,
                    )
                    yield await mapped if inspect.isawaitable(mapped) else mapped
            except PacsfedError as exc:
                # Raised by the subscription's source (bad arguments, access): graphql-core does not
                # wrap these, but they carry their own code, as on HTTP (never INTERNAL_ERROR).
                if not isinstance(getattr(exc, "code", None), str):
                    raise
                raise _OperationErrors(
                    [self._format(GraphQLError(str(exc), original_error=exc), request_id)]
                ) from exc
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
            execution_context_class=FastExecutionContext,
        )
        yield await outcome if inspect.isawaitable(outcome) else outcome


class _Connection:
    """One socket's running operations and its caller, checked again until it lapses."""

    def __init__(self, handler: GraphQLWebSocket, websocket: WebSocket, context: dict[str, Any]) -> None:
        self.handler = handler
        self.websocket = websocket
        self.context = context
        self.operations: dict[str, asyncio.Task[None]] = {}
        self.lapsed: AccessError | None = None
        """Why the caller lost access; set once, then the socket is closed."""

    def expired_or_revoked(self) -> AccessError | None:
        """Why the caller has lapsed, as far as is known without asking (cheap: before each event)."""
        if self.lapsed is not None:
            return self.lapsed
        revoked: asyncio.Event | None = self.context.get("revoked")
        if revoked is not None and revoked.is_set():
            return AuthenticationError("the share has been revoked", code="BAD_TOKEN")
        expires_at = _expiry(self.context)
        if expires_at is not None and dt.datetime.now(dt.UTC) >= expires_at:
            return AuthenticationError("the credential has expired", code="TOKEN_EXPIRED")
        return None

    async def recheck(self, refusing: str | None = None) -> dict[str, Any] | None:
        """The context built again (the credential checked again), or None when the caller lapsed.

        A lapsed caller ends the connection; ``refusing`` names an operation that gets an error too.
        """
        lapsed = self.expired_or_revoked()
        if lapsed is None:
            try:
                self.context = await self.handler.context(self.websocket)
                return self.context
            except AccessError as exc:
                lapsed = exc
            except Exception as exc:  # the credential cannot be checked: fail closed
                log.error("cannot check a WebSocket's credential again: %s", type(exc).__name__)
                lapsed = AuthenticationError("the credential cannot be checked", code="AUTH_UNAVAILABLE")
        await self.end(lapsed, refusing)
        return None

    async def watch(self) -> None:
        """Check the caller at its expiry, on a revocation notice, and periodically while operations run."""
        while self.lapsed is None:
            timeout = RECHECK_PERIOD_S
            expires_at = _expiry(self.context)
            if expires_at is not None:
                until = (expires_at - dt.datetime.now(dt.UTC)).total_seconds()
                timeout = max(0.0, min(timeout, until + _PAST_EXPIRY_S))
            revoked: asyncio.Event | None = self.context.get("revoked")
            with contextlib.suppress(TimeoutError):
                if revoked is None:
                    await asyncio.sleep(timeout)
                else:
                    await asyncio.wait_for(revoked.wait(), timeout)
            if self.operations or self.expired_or_revoked() is not None:
                await self.recheck()

    async def end(self, lapsed: AccessError, refusing: str | None = None) -> None:
        """End every operation with an error and close the socket with 4403 (once)."""
        if self.lapsed is not None:
            return
        self.lapsed = lapsed
        current = asyncio.current_task()
        ended = list(self.operations.items())
        self.operations.clear()
        for _, task in ended:
            if task is not current:
                task.cancel()
        error = {"message": str(lapsed), "extensions": {"code": lapsed.code}}
        with contextlib.suppress(Exception):  # the client may be gone already
            for op_id in [op_id for op_id, _ in ended] + ([refusing] if refusing else []):
                await self.websocket.send_json({"id": op_id, "type": "error", "payload": [error]})
            await self.websocket.close(code=FORBIDDEN, reason="Forbidden")


def _expiry(context: dict[str, Any]) -> dt.datetime | None:
    access = context.get("access")
    return access.principal.expires_at if isinstance(access, AccessContext) else None


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
