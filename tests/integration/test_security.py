"""Authentication, scopes, break-the-glass, share codes and the audit trail, end to end over HTTP.

The app runs with JWT authentication (the demo's signer: a throw-away ES256 key) in front of the
demo's simulated hospitals; every negative case of issue 5's controls has a test here.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager

from federation.errors import ConfigError
from federation.settings import settings_from_mapping
from pacsfed.app import create_app
from pacsfed.demo import start_demo_hospitals
from pacsfed.demo.signer import DemoSigner

pytestmark = pytest.mark.integration

HISTORY = """query($id: String!, $reason: String) {
  patientHistory(patient: {id: $id}, reason: $reason) { complete exams { studyInstanceUid } }
}"""
CREATE = """mutation($id: String!, $studies: [ID!], $ttl: Int, $once: Boolean) {
  createShareCode(patient: {id: $id}, studies: $studies, ttlSeconds: $ttl, singleUse: $once) {
    code expiresAt urlPath url qrSvg singleUse
  }
}"""
REDEEM = "mutation($code: String!) { redeemShareCode(code: $code) { token expiresAt patientId studies } }"
REVOKE = "mutation($code: String!) { revokeShareCode(code: $code) { revoked } }"
AUDIT = """query($id: String) {
  auditEvents(patientId: $id, first: 100) { at actor action patientIds outcome reason emergency sources examCount }
}"""


class Api:
    """A client for the running app, with a token factory."""

    def __init__(self, client: httpx.AsyncClient, signer: DemoSigner) -> None:
        self.client = client
        self.signer = signer

    def token(self, *scopes: str, subject: str = "dr-er", **claims: Any) -> str:
        return self.signer.token(subject=subject, scopes=scopes, **claims)

    async def post(self, query: str, token: str | None = None, **variables: Any) -> httpx.Response:
        headers = {"authorization": f"Bearer {token}"} if token else {}
        return await self.client.post(
            "/graphql", json={"query": query, "variables": variables}, headers=headers
        )

    async def call(self, query: str, token: str | None = None, **variables: Any) -> dict[str, Any]:
        response = await self.post(query, token, **variables)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body


def codes(body: dict[str, Any]) -> list[str]:
    return [error["extensions"]["code"] for error in body.get("errors", [])]


@contextlib.asynccontextmanager
async def secured_app(tmp_path: Path) -> AsyncIterator[Api]:
    async with await start_demo_hospitals() as hospitals:
        signer = DemoSigner(tmp_path / "keys")
        settings = settings_from_mapping(
            {
                "cache": {"backend": "memory"},
                "sources": hospitals.sources_config(),
                "auth": {**signer.auth_config(), "emergency_window_s": 3600},
                "audit": {"journal_dir": str(tmp_path / "audit")},
            }
        )
        app = create_app(settings)
        async with LifespanManager(app, startup_timeout=60, shutdown_timeout=60) as manager:
            transport = httpx.ASGITransport(app=manager.app, client=("10.20.30.40", 5555))
            async with httpx.AsyncClient(
                transport=transport, base_url="http://pacsfed.test", timeout=30
            ) as client:
                yield Api(client, signer)


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    async with secured_app(tmp_path) as api:
        yield api


def test_mode_none_is_refused_without_the_development_flag() -> None:
    with pytest.raises(ConfigError, match="insecure-dev"):
        create_app(settings_from_mapping({"cache": {"backend": "memory"}, "auth": {"mode": "none"}}))


async def test_no_or_bad_credentials_get_401(api: Api) -> None:
    response = await api.post(HISTORY, id="DEMO-001")
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert codes(response.json()) == ["UNAUTHENTICATED"]
    now = dt.datetime.now(dt.UTC)
    other = DemoSigner(api.signer.public_key_file.parent.parent / "other-keys")
    for token, code in [
        (api.token("history:read", exp=now - dt.timedelta(hours=1)), "TOKEN_EXPIRED"),
        (api.token("history:read", nbf=now + dt.timedelta(hours=1)), "TOKEN_NOT_YET_VALID"),
        (api.token("history:read", aud="another-api"), "BAD_AUDIENCE"),
        (api.token("history:read", exp=1e20), "BAD_TOKEN"),
        (api.token("history:read", pacsfed_sources="hosp-a"), "BAD_TOKEN"),
        (other.token(scopes=("history:read",)), "BAD_SIGNATURE"),
        ("not.a.jwt", "BAD_TOKEN"),
    ]:
        response = await api.post(HISTORY, token, id="DEMO-001")
        assert response.status_code == 401, code
        assert codes(response.json()) == [code]


async def test_a_reader_reads_and_a_token_without_the_scope_does_not(api: Api) -> None:
    body = await api.call(HISTORY, api.token("history:read"), id="DEMO-001")
    assert body["data"]["patientHistory"]["exams"]
    body = await api.call(HISTORY, api.token("audit:read"), id="DEMO-001")
    assert codes(body) == ["FORBIDDEN"]
    assert "DEMO-001" not in str(body["errors"])


async def test_break_the_glass_needs_a_reason_and_is_flagged_for_review(api: Api) -> None:
    er = api.token("history:emergency", subject="dr-night")
    body = await api.call(HISTORY, er, id="DEMO-002")
    assert codes(body) == ["REASON_REQUIRED"]
    body = await api.call(HISTORY, er, id="DEMO-002", reason="unconscious, no relatives, CT head")
    assert body["data"]["patientHistory"]["exams"]
    body = await api.call(AUDIT, api.token("audit:read", subject="privacy-officer"), id="DEMO-002")
    events = [e for e in body["data"]["auditEvents"] if e["action"] == "PATIENT_QUERY"]
    # Newest first: the outcome, the access journaled before any hospital was asked, the refusal.
    assert [(e["outcome"], e["emergency"]) for e in events] == [
        ("SUCCESS", True),
        ("SUCCESS", True),
        ("DENIED", False),
    ]
    assert all(e["reason"] == "unconscious, no relatives, CT head" for e in events[:2])
    assert all(e["actor"] == "user:dr-night" for e in events[:2])
    assert events[0]["examCount"] > 0 and events[1]["examCount"] is None


async def test_audit_events_need_audit_read(api: Api) -> None:
    body = await api.call(AUDIT, api.token("history:read"), id="DEMO-001")
    assert codes(body) == ["FORBIDDEN"]


async def test_a_share_code_opens_exactly_its_scope_for_at_most_24_hours(api: Api) -> None:
    creator = api.token("history:read", "share:create")
    full = await api.call(HISTORY, creator, id="DEMO-001")
    uids = [e["studyInstanceUid"] for e in full["data"]["patientHistory"]["exams"]]
    created = (await api.call(CREATE, creator, id="DEMO-001", studies=uids[:1], ttl=7 * 24 * 3600))["data"][
        "createShareCode"
    ]
    assert created["url"] == f"http://pacsfed.test{created['urlPath']}"
    assert created["qrSvg"].startswith("<svg")  # to show on screen and scan: never e-mailed
    expires = dt.datetime.fromisoformat(created["expiresAt"])
    assert expires - dt.datetime.now(dt.UTC) <= dt.timedelta(hours=24)
    redeemed = (await api.call(REDEEM, None, code=created["code"]))["data"]["redeemShareCode"]
    assert redeemed["patientId"] == "DEMO-001" and redeemed["studies"] == uids[:1]
    shared = await api.call(HISTORY, redeemed["token"], id="DEMO-001")
    assert [e["studyInstanceUid"] for e in shared["data"]["patientHistory"]["exams"]] == uids[:1]
    other = await api.call(HISTORY, redeemed["token"], id="DEMO-002")
    assert codes(other) == ["FORBIDDEN"]
    no_more = await api.call(CREATE, redeemed["token"], id="DEMO-001")
    assert codes(no_more) == ["FORBIDDEN"]


async def test_used_revoked_and_guessed_codes_do_not_open(api: Api) -> None:
    creator = api.token("history:read", "share:create")
    once = (await api.call(CREATE, creator, id="DEMO-001", once=True))["data"]["createShareCode"]
    assert (await api.call(REDEEM, None, code=once["code"]))["data"]["redeemShareCode"]["token"]
    assert codes(await api.call(REDEEM, None, code=once["code"])) == ["BAD_SHARE_CODE"]
    revoked = (await api.call(CREATE, creator, id="DEMO-001"))["data"]["createShareCode"]
    token = (await api.call(REDEEM, None, code=revoked["code"]))["data"]["redeemShareCode"]["token"]
    assert (await api.call(REVOKE, creator, code=revoked["code"]))["data"]["revokeShareCode"]["revoked"]
    assert codes(await api.call(REDEEM, None, code=revoked["code"])) == ["BAD_SHARE_CODE"]
    response = await api.post(HISTORY, token, id="DEMO-001")
    assert response.status_code == 401  # the token died with its code


async def test_brute_force_through_aliases_is_locked_out(api: Api) -> None:
    creator = api.token("history:read", "share:create")
    good = (await api.call(CREATE, creator, id="DEMO-003"))["data"]["createShareCode"]["code"]
    guesses = " ".join(f'g{n}: redeemShareCode(code: "AAAA-BBBB-{n:04d}") {{ token }}' for n in range(10))
    body = await api.call(f"mutation {{ {guesses} }}")
    assert codes(body) == ["BAD_SHARE_CODE"] * 10  # each alias is one attempt
    body = await api.call(REDEEM, None, code=good)
    assert codes(body) == ["LOCKED_OUT"]


async def test_the_share_page_redeems_on_post_only(api: Api) -> None:
    creator = api.token("history:read", "share:create")
    code = (await api.call(CREATE, creator, id="DEMO-001", once=True))["data"]["createShareCode"]["code"]
    page = await api.client.get(f"/s/{code}")
    assert page.status_code == 200 and "Open the shared exams" in page.text
    assert page.headers["cache-control"] == "no-store"
    own = {"origin": "http://pacsfed.test"}  # what a browser sends from the page above
    shown = await api.client.post("/s", data={"code": code}, headers=own)
    assert shown.status_code == 200
    assert "<table>" in shown.text
    # Who the exams are of, in the body (a mix-up must be seen), never in the title (tab bars, history).
    head, body = shown.text.split("</head>")
    assert "Müller, Anna" in body and "born 1967-03-12" in body and "Müller" not in head
    again = await api.client.post("/s", data={"code": code}, headers=own)
    assert again.status_code == 403


async def test_readyz_says_authentication_is_enforced(api: Api) -> None:
    ready = (await api.client.get("/readyz")).json()
    assert ready["auth"] == "enforced" and ready["warnings"] == []


async def test_authentication_failures_are_audited(api: Api) -> None:
    await api.post(HISTORY, "not.a.jwt", id="DEMO-001")
    body = await api.call(AUDIT, api.token("audit:read"))
    failures = [e for e in body["data"]["auditEvents"] if e["action"] == "AUTHENTICATION"]
    assert failures and failures[0]["outcome"] == "DENIED" and failures[0]["actor"] == "anonymous"


WS_SUBSCRIPTION = """subscription($patient: PatientInput!) {
  patientHistoryUpdates(patient: $patient) { phase history { complete } }
}"""


def test_websockets_authenticate_with_a_header_or_the_connection_init_payload(tmp_path: Path) -> None:
    from starlette.testclient import TestClient
    from starlette.websockets import WebSocketDisconnect

    signer = DemoSigner(tmp_path / "keys")
    settings = settings_from_mapping(
        {
            "cache": {"backend": "memory"},
            "auth": signer.auth_config(),
            "audit": {"journal_dir": str(tmp_path / "audit")},
        }
    )
    token = signer.token(scopes=("history:read",))
    subscribe = {
        "id": "1",
        "type": "subscribe",
        "payload": {"query": WS_SUBSCRIPTION, "variables": {"patient": {"id": "X-1"}}},
    }
    with TestClient(create_app(settings)) as client:
        with client.websocket_connect("/graphql", subprotocols=["graphql-transport-ws"]) as ws:
            ws.send_json({"type": "connection_init", "payload": {"Authorization": f"Bearer {token}"}})
            assert ws.receive_json()["type"] == "connection_ack"
            ws.send_json(subscribe)
            assert ws.receive_json()["payload"]["data"]["patientHistoryUpdates"]["phase"] == "FINAL"
        headers = {"authorization": f"Bearer {token}"}
        with client.websocket_connect(
            "/graphql", subprotocols=["graphql-transport-ws"], headers=headers
        ) as ws:
            ws.send_json({"type": "connection_init"})
            assert ws.receive_json()["type"] == "connection_ack"
        for payload in ({}, {"Authorization": "Bearer not.a.jwt"}):
            with client.websocket_connect("/graphql", subprotocols=["graphql-transport-ws"]) as ws:
                ws.send_json({"type": "connection_init", "payload": payload})
                with pytest.raises(WebSocketDisconnect) as closed:
                    ws.receive_json()
            assert closed.value.code == 4403
        # A bad header too: the upgrade is accepted, then closed with a code the client can read.
        bad = {"authorization": "Bearer not.a.jwt"}
        with client.websocket_connect("/graphql", subprotocols=["graphql-transport-ws"], headers=bad) as ws:
            ws.send_json({"type": "connection_init"})
            with pytest.raises(WebSocketDisconnect) as closed:
                ws.receive_json()
        assert closed.value.code == 4403
