"""Credentials on open WebSockets, seen by real clients of a real `pacsfed serve` (issue 12, item 2).

A share token revoked, or a JWT past its ``exp``, stops reading data on a socket opened before:
the running subscription gets an ``error``, the socket closes with 4403, and no ``next`` follows.
The clients are the Python ``websockets`` library (to see every frame), ``gql`` over it, and the
reference JavaScript client ``graphql-ws``. A hung source keeps a subscription running.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from fakes import SilentListener
from gql import Client, gql
from gql.transport.exceptions import TransportError, TransportQueryError
from gql.transport.websockets import WebsocketsTransport

from pacsfed.demo.signer import DemoSigner

PROTOCOL = "graphql-transport-ws"
UPDATES = """subscription($deadline: Int) {
  patientHistoryUpdates(patient: {id: "PA-001"}, deadlineMs: $deadline, freshness: LIVE) {
    phase source { id } history { exams { studyInstanceUid } }
  }
}"""
CREATE = 'mutation { createShareCode(patient: {id: "PA-001"}, ttlSeconds: 3600) { code } }'
REDEEM = "mutation($code: String!) { redeemShareCode(code: $code) { token } }"
REVOKE = "mutation($code: String!) { revokeShareCode(code: $code) { revoked } }"
UPDATES_2S = UPDATES.replace("subscription($deadline: Int)", "subscription").replace("$deadline", "2000")


@pytest.fixture
def hung() -> Iterator[SilentListener]:
    """A DICOMweb source that accepts and never answers: keeps a subscription running."""
    with SilentListener() as silent:
        yield silent


@pytest.fixture
def served(
    pacsfed_server: Callable[..., Any],
    serve_config: Callable[..., dict[str, Any]],
    orthanc_c: Any,
    hung: SilentListener,
) -> Any:
    """``pacsfed serve`` (JWT auth, production) over a real Orthanc and a hung source."""
    return pacsfed_server(
        serve_config(
            [
                {"id": "hosp-c", "kind": "dicomweb", "url": orthanc_c.dicomweb_url},
                {"id": "hung", "kind": "dicomweb", "url": f"http://127.0.0.1:{hung.port}/dicom-web"},
            ]
        )
    )


def _call(server: Any, query: str, token: str | None = None, **variables: Any) -> dict[str, Any]:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    body = {"query": query, "variables": variables}
    answer: dict[str, Any] = httpx.post(server.graphql_url, json=body, headers=headers, timeout=30).json()
    assert "errors" not in answer, answer
    return answer["data"]


def _share(server: Any, signer: DemoSigner) -> tuple[str, str, str]:
    """A share code for PA-001, its redeemed token, and the creator's JWT (who may revoke it)."""
    creator = signer.token(subject="dr-share", scopes=("history:read", "share:create"))
    code = _call(server, CREATE, creator)["createShareCode"]["code"]
    token = _call(server, REDEEM, code=code)["redeemShareCode"]["token"]
    return code, token, creator


def _subscribe(op_id: str, deadline: int) -> str:
    payload = {"query": UPDATES, "variables": {"deadline": deadline}}
    return json.dumps({"id": op_id, "type": "subscribe", "payload": payload})


async def _until_closed(socket: Any) -> tuple[list[dict[str, Any]], int | None, str | None]:
    """Every message until the server closes the socket, and its close code and reason."""
    seen: list[dict[str, Any]] = []
    try:
        while True:
            seen.append(json.loads(await asyncio.wait_for(socket.recv(), 60)))
    except websockets.ConnectionClosed as closed:
        received = closed.rcvd
        return seen, received.code if received else None, received.reason if received else None


def _has_data(message: dict[str, Any]) -> bool:
    return bool(message["payload"]["data"]["patientHistoryUpdates"]["history"]["exams"])


def test_a_revoked_share_token_ends_the_running_subscription_and_closes_4403(
    served: Any, signer: DemoSigner
) -> None:
    code, token, creator = _share(served, signer)

    async def session() -> tuple[list[dict[str, Any]], list[dict[str, Any]], int | None, str | None]:
        async with websockets.connect(served.ws_url, subprotocols=[PROTOCOL]) as socket:
            await socket.send(
                json.dumps({"type": "connection_init", "payload": {"Authorization": f"Bearer {token}"}})
            )
            assert json.loads(await socket.recv()) == {"type": "connection_ack"}
            await socket.send(_subscribe("1", 60000))  # hosp-c answers; "hung" never does
            before = [json.loads(await asyncio.wait_for(socket.recv(), 60))]
            while not any(m["type"] == "next" and _has_data(m) for m in before):
                before.append(json.loads(await asyncio.wait_for(socket.recv(), 60)))
            await asyncio.to_thread(_call, served, REVOKE, creator, code=code)
            after, close_code, reason = await _until_closed(socket)
            return before, after, close_code, reason

    before, after, close_code, reason = asyncio.run(session())
    assert before[-1]["payload"]["data"]["patientHistoryUpdates"]["source"]["id"] == "hosp-c"
    # What a revoked share token sees on its open socket: one error for the running operation,
    # then the close; never another next.
    assert after == [
        {
            "id": "1",
            "type": "error",
            "payload": [{"message": "the share has been revoked", "extensions": {"code": "BAD_TOKEN"}}],
        }
    ]
    assert (close_code, reason) == (4403, "Forbidden")


def test_after_a_revocation_the_next_subscribe_gets_no_data(served: Any, signer: DemoSigner) -> None:
    code, token, creator = _share(served, signer)
    transport = WebsocketsTransport(
        url=served.ws_url,
        subprotocols=[WebsocketsTransport.GRAPHQLWS_SUBPROTOCOL],
        init_payload={"Authorization": f"Bearer {token}"},
    )

    async def session() -> tuple[list[dict[str, Any]], BaseException | None, list[dict[str, Any]]]:
        async with Client(transport=transport) as gql_session:
            first = [r async for r in gql_session.subscribe(gql(UPDATES_2S))]
            await asyncio.to_thread(_call, served, REVOKE, creator, code=code)
            second: list[dict[str, Any]] = []
            try:
                async for result in gql_session.subscribe(gql(UPDATES_2S)):
                    second.append(result)
            except TransportError as exc:
                return first, exc, second
            return first, None, second

    first, refused, second = asyncio.run(session())
    assert any(r["patientHistoryUpdates"]["history"]["exams"] for r in first)
    assert second == []
    # gql sees the socket closed with 4403 (revocation noticed at once), or an error for the operation.
    if isinstance(refused, TransportQueryError):
        assert refused.errors and refused.errors[0]["extensions"]["code"] == "BAD_TOKEN", refused.errors
    else:
        assert _close_code(refused) == 4403, repr(refused)


def _close_code(exc: BaseException | None) -> int | None:
    """The close code the server sent, found in a client exception's chain."""
    while exc is not None:
        if isinstance(exc, websockets.ConnectionClosed) and exc.rcvd is not None:
            return exc.rcvd.code
        if isinstance(getattr(exc, "code", None), int):
            return int(exc.code)
        exc = exc.__cause__ or exc.__context__
    return None


def test_a_running_subscription_ends_when_its_jwt_expires(
    served: Any, signer: DemoSigner, js_clients: Path
) -> None:
    token = signer.token(scopes=("history:read",), lifetime=dt.timedelta(seconds=8))
    run = subprocess.run(
        ["node", "subscribe.mjs", served.ws_url, f"Bearer {token}", UPDATES, json.dumps({"deadline": 60000})],
        cwd=js_clients,
        capture_output=True,
        text=True,
        timeout=200,
        check=False,
    )
    events = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    kinds = [e["event"] for e in events]
    assert run.returncode == 0, (run.stdout, run.stderr)
    assert "error" in kinds, events
    failed = kinds.index("error")
    assert "next" in kinds[:failed], events  # it was reading hosp-c before the token expired
    assert [e["errors"][0]["extensions"]["code"] for e in events if e["event"] == "error"] == [
        "TOKEN_EXPIRED"
    ]
    assert "next" not in kinds[failed:], events
    assert events[-1] == {"event": "closed", "code": 4403, "reason": "Forbidden"}


def test_an_idle_socket_of_a_revoked_share_is_closed_at_once(served: Any, signer: DemoSigner) -> None:
    code, token, creator = _share(served, signer)

    async def session() -> tuple[list[dict[str, Any]], int | None, str | None]:
        async with websockets.connect(served.ws_url, subprotocols=[PROTOCOL]) as socket:
            init = {"type": "connection_init", "payload": {"Authorization": f"Bearer {token}"}}
            await socket.send(json.dumps(init))
            assert json.loads(await socket.recv()) == {"type": "connection_ack"}
            await asyncio.to_thread(_call, served, REVOKE, creator, code=code)
            return await _until_closed(socket)

    assert asyncio.run(session()) == ([], 4403, "Forbidden")


def test_rejected_credentials_and_binary_frames_get_close_codes(
    pacsfed_server: Callable[..., Any], serve_config: Callable[..., dict[str, Any]], signer: DemoSigner
) -> None:
    server = pacsfed_server(serve_config([]))
    bad = "Bearer not.a.jwt"

    async def closes(headers: dict[str, str], init: dict[str, Any], frame: str | bytes | None = None) -> Any:
        async with websockets.connect(
            server.ws_url, subprotocols=[PROTOCOL], additional_headers=headers
        ) as socket:
            await socket.send(json.dumps(init))  # the upgrade was accepted: no refused handshake
            if frame is not None:
                assert json.loads(await socket.recv()) == {"type": "connection_ack"}
                await socket.send(frame)
            return await _until_closed(socket)

    # A rejected credential, in the upgrade's header or in connection_init: 4403, as the protocol says.
    assert asyncio.run(closes({"authorization": bad}, {"type": "connection_init"})) == ([], 4403, "Forbidden")
    init = {"type": "connection_init", "payload": {"Authorization": bad}}
    assert asyncio.run(closes({}, init)) == ([], 4403, "Forbidden")
    # A binary frame is a clean protocol close, not a server error.
    headers = {"authorization": f"Bearer {signer.token(scopes=('history:read',))}"}
    seen = asyncio.run(closes(headers, {"type": "connection_init"}, b'{"type": "ping"}'))
    assert seen == ([], 4400, "Binary frames are not supported")
    assert "Traceback" not in server.log_text()
