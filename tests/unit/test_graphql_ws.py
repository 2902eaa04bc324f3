"""GraphQL over WebSocket (graphql-transport-ws), with a small in-test schema and socket."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from typing import Any

import graphene

from federation.access.principals import AccessContext, Principal, PrincipalKind
from federation.errors import AccessError, AuthenticationError, QueryError
from federation.settings import ServerSettings
from schema import ws as ws_module
from schema.ws import GraphQLWebSocket


class Query(graphene.ObjectType):
    hello = graphene.String()


class Subscription(graphene.ObjectType):
    ticks = graphene.Int()
    refused = graphene.Int(code=graphene.String(required=True))

    @staticmethod
    async def subscribe_ticks(_root: Any, _info: Any):  # type: ignore[no-untyped-def]
        for i in range(1000):
            yield i
            await asyncio.sleep(0.05)

    @staticmethod
    async def subscribe_refused(_root: Any, _info: Any, code: str):  # type: ignore[no-untyped-def]
        # As the service does: arguments are checked when the stream starts.
        if code == "FORBIDDEN":
            raise AccessError("not this patient", code=code)
        raise QueryError("bad argument", code=code)
        yield 0


SCHEMA = graphene.Schema(query=Query, subscription=Subscription)


class FakeWebSocket:
    """Just what GraphQLWebSocket uses; messages the client already sent are buffered (as in uvicorn)."""

    def __init__(self) -> None:
        self.scope = {"subprotocols": ["graphql-transport-ws"]}
        self.state = type("State", (), {})()
        self.inbox: asyncio.Queue[str | bytes | None] = asyncio.Queue()
        self.sent: list[dict[str, Any]] = []
        self.closed: tuple[int, str] | None = None
        self.changed = asyncio.Event()

    async def accept(self, subprotocol: str | None = None) -> None:
        pass

    async def receive(self) -> dict[str, Any]:
        frame = await self.inbox.get()
        if frame is None:
            return {"type": "websocket.disconnect", "code": 1000}
        key = "bytes" if isinstance(frame, bytes) else "text"
        return {"type": "websocket.receive", key: frame}

    async def send_json(self, data: dict[str, Any]) -> None:
        if self.closed is not None:  # as starlette: nothing is sent after a close
            raise RuntimeError("Cannot call send once a close message has been sent.")
        self.sent.append(data)
        self.changed.set()

    async def close(self, code: int = 1000, reason: str = "") -> None:
        self.closed = (code, reason)
        self.changed.set()

    async def until(self, condition: Any) -> None:
        """Wait until ``condition()`` holds, checked whenever the server sends or closes.

        The bound is far above what any of these needs: it turns a hang into a failure.
        """

        async def wait() -> None:
            while not condition():
                self.changed.clear()
                await self.changed.wait()

        await asyncio.wait_for(wait(), 30)

    def send(self, message: dict[str, Any] | None) -> None:
        """What the client sends (None: it leaves)."""
        self.inbox.put_nowait(None if message is None else json.dumps(message))


async def no_context(_ws: Any) -> dict[str, Any]:
    return {}


async def test_an_id_is_free_again_right_after_complete() -> None:
    ws = FakeWebSocket()
    handler = GraphQLWebSocket(SCHEMA, ServerSettings(mode="development"), context=no_context)
    serving = asyncio.ensure_future(handler.handle(ws))  # type: ignore[arg-type]

    def send(message: dict[str, Any] | None) -> None:
        ws.inbox.put_nowait(None if message is None else json.dumps(message))

    send({"type": "connection_init"})
    send({"id": "1", "type": "subscribe", "payload": {"query": "subscription { ticks }"}})
    await asyncio.sleep(0.12)
    assert any(m.get("type") == "next" for m in ws.sent)
    # The client stops operation 1 and at once starts a new one under the freed id (the protocol
    # allows it: graphql-ws deletes the id on complete); both frames arrive in one read.
    before = len(ws.sent)
    send({"id": "1", "type": "complete"})
    send({"id": "1", "type": "subscribe", "payload": {"query": "subscription { ticks }"}})
    await asyncio.sleep(0.12)
    send(None)
    await asyncio.wait_for(serving, 2)
    assert ws.closed is None, ws.closed
    # The new operation started from its first event, under the same id.
    assert {"id": "1", "type": "next", "payload": {"data": {"ticks": 0}}} in ws.sent[before:]


TICKS = {"query": "subscription { ticks }"}


class Credential:
    """A context factory whose caller can be revoked (as a share) or made to expire (as a JWT)."""

    def __init__(self, expires_in_s: float | None = None) -> None:
        self.valid = True
        self.revoked = asyncio.Event()
        self.checks = 0
        expires_at = None
        if expires_in_s is not None:
            expires_at = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=expires_in_s)
        self.principal = Principal("share:s1", PrincipalKind.SHARE, frozenset(), expires_at=expires_at)

    async def __call__(self, _ws: Any) -> dict[str, Any]:
        self.checks += 1
        if not self.valid:
            raise AuthenticationError("the share has been revoked or has expired", code="BAD_TOKEN")
        return {"access": AccessContext(self.principal), "revoked": self.revoked}


async def _serve(context: Any) -> tuple[FakeWebSocket, asyncio.Future[None]]:
    ws = FakeWebSocket()
    handler = GraphQLWebSocket(SCHEMA, ServerSettings(mode="development"), context=context)
    serving = asyncio.ensure_future(handler.handle(ws))  # type: ignore[arg-type]
    ws.send({"type": "connection_init"})
    await ws.until(lambda: ws.sent or ws.closed)
    return ws, serving


def _lapsed_then_closed(ws: FakeWebSocket, op_id: str) -> None:
    """After the caller lapsed: an error for the operation, the socket closed 4403, no next after."""
    errors = [i for i, m in enumerate(ws.sent) if m.get("type") == "error" and m.get("id") == op_id]
    assert errors, ws.sent
    assert not [m for m in ws.sent[errors[0] :] if m.get("type") == "next"]
    assert ws.closed == (4403, "Forbidden")


async def test_a_binary_frame_closes_the_socket_cleanly() -> None:
    ws, serving = await _serve(no_context)
    ws.inbox.put_nowait(b'{"type": "ping"}')
    await asyncio.wait_for(serving, 5)
    assert ws.closed == (4400, "Binary frames are not supported")


async def test_subscription_argument_errors_keep_their_codes() -> None:
    for code in ("BAD_PATIENT_INPUT", "BAD_DEADLINE", "UNKNOWN_SOURCE", "FORBIDDEN"):
        ws, serving = await _serve(no_context)
        query = "subscription($c: String!) { refused(code: $c) }"
        ws.send({"id": "1", "type": "subscribe", "payload": {"query": query, "variables": {"c": code}}})
        await ws.until(lambda: len(ws.sent) > 1)  # noqa: B023 (awaited within the iteration)
        ws.send(None)
        await asyncio.wait_for(serving, 5)
        assert ws.sent[1]["type"] == "error"
        assert [e["extensions"]["code"] for e in ws.sent[1]["payload"]] == [code]


async def test_a_rejected_connection_init_closes_with_4403() -> None:
    credential = Credential()
    credential.valid = False
    ws, serving = await _serve(credential)
    await asyncio.wait_for(serving, 5)
    assert ws.sent == []
    assert ws.closed == (4403, "Forbidden")


async def test_each_new_operation_checks_the_credential_again() -> None:
    credential = Credential()
    ws, serving = await _serve(credential)
    assert ws.sent == [{"type": "connection_ack"}]
    credential.valid = False  # revoked elsewhere (another instance): only a new check can tell
    ws.send({"id": "1", "type": "subscribe", "payload": TICKS})
    await ws.until(lambda: ws.closed is not None)
    ws.send(None)
    await asyncio.wait_for(serving, 5)
    assert ws.sent[1:] == [
        {
            "id": "1",
            "type": "error",
            "payload": [
                {
                    "message": "the share has been revoked or has expired",
                    "extensions": {"code": "BAD_TOKEN"},
                }
            ],
        }
    ]
    assert ws.closed == (4403, "Forbidden")


async def test_a_revocation_notice_ends_a_running_subscription() -> None:
    credential = Credential()
    ws, serving = await _serve(credential)
    ws.send({"id": "1", "type": "subscribe", "payload": TICKS})
    await ws.until(lambda: any(m.get("type") == "next" for m in ws.sent))
    credential.revoked.set()
    await ws.until(lambda: ws.closed is not None)
    ws.send(None)
    await asyncio.wait_for(serving, 5)
    _lapsed_then_closed(ws, "1")


async def test_a_running_subscription_ends_when_its_credential_expires() -> None:
    credential = Credential(expires_in_s=0.5)
    ws, serving = await _serve(credential)
    ws.send({"id": "1", "type": "subscribe", "payload": TICKS})
    await ws.until(lambda: ws.closed is not None)
    ws.send(None)
    await asyncio.wait_for(serving, 5)
    _lapsed_then_closed(ws, "1")
    assert any(m.get("type") == "next" for m in ws.sent)  # it did run before
    error = next(m for m in ws.sent if m.get("type") == "error")
    assert error["payload"][0]["extensions"]["code"] == "TOKEN_EXPIRED"


async def test_a_running_subscription_is_checked_again_periodically(monkeypatch: Any) -> None:
    monkeypatch.setattr(ws_module, "RECHECK_PERIOD_S", 0.2)
    credential = Credential()
    ws, serving = await _serve(credential)
    ws.send({"id": "1", "type": "subscribe", "payload": TICKS})
    await ws.until(lambda: any(m.get("type") == "next" for m in ws.sent))
    credential.valid = False  # revoked by another instance: no notice reaches this one
    await ws.until(lambda: ws.closed is not None)
    ws.send(None)
    await asyncio.wait_for(serving, 5)
    _lapsed_then_closed(ws, "1")
    assert credential.checks >= 3  # connection_init, the subscribe, the periodic re-check
