"""GraphQL over WebSocket (graphql-transport-ws), with a small in-test schema and socket."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import graphene
from starlette.websockets import WebSocketDisconnect

from federation.settings import ServerSettings
from schema.ws import GraphQLWebSocket


class Query(graphene.ObjectType):
    hello = graphene.String()


class Subscription(graphene.ObjectType):
    ticks = graphene.Int()

    @staticmethod
    async def subscribe_ticks(_root: Any, _info: Any):  # type: ignore[no-untyped-def]
        for i in range(1000):
            yield i
            await asyncio.sleep(0.05)


SCHEMA = graphene.Schema(query=Query, subscription=Subscription)


class FakeWebSocket:
    """Just what GraphQLWebSocket uses; messages the client already sent are buffered (as in uvicorn)."""

    def __init__(self) -> None:
        self.scope = {"subprotocols": ["graphql-transport-ws"]}
        self.state = type("State", (), {})()
        self.inbox: asyncio.Queue[str | None] = asyncio.Queue()
        self.sent: list[dict[str, Any]] = []
        self.closed: tuple[int, str] | None = None

    async def accept(self, subprotocol: str | None = None) -> None:
        pass

    async def receive_text(self) -> str:
        text = await self.inbox.get()
        if text is None:
            raise WebSocketDisconnect(1000)
        return text

    async def send_json(self, data: dict[str, Any]) -> None:
        self.sent.append(data)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        self.closed = (code, reason)


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
