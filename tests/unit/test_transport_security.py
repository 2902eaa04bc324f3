"""OAuth 2.0 client credentials (token caching, single flight, refresh on 401, errors) and TLS contexts."""

from __future__ import annotations

import asyncio
import json
import ssl
from pathlib import Path

import httpx
import pytest

from connectors.oauth2 import OAuth2ClientCredentialsAuth
from federation.errors import ConfigError, SourceAuthError
from federation.settings_security import OAuth2ClientCredentials, TlsSettings
from federation.tls import client_context

SECRET = "very-s3cret"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakePacs:
    """Token endpoint at /token, QIDO at /studies accepting only tokens not revoked."""

    def __init__(self, *, token_status: int = 200, token_body: object | None = None, expires_in: int = 60):
        self.token_status = token_status
        self.token_body = token_body
        self.expires_in = expires_in
        self.issued: list[str] = []
        self.revoked: set[str] = set()
        self.token_requests: list[httpx.Request] = []

    async def handler(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/token":
            self.token_requests.append(request)
            await asyncio.sleep(0.01)
            if self.token_body is not None:
                return httpx.Response(self.token_status, json=self.token_body)
            token = f"tok-{len(self.issued) + 1}"
            self.issued.append(token)
            return httpx.Response(
                self.token_status,
                json={"access_token": token, "token_type": "bearer", "expires_in": self.expires_in},
            )
        token = request.headers.get("authorization", "").removeprefix("Bearer ")
        if token in self.issued and token not in self.revoked:
            return httpx.Response(200, json=[])
        return httpx.Response(401)


def auth(clock: Clock | None = None, **settings: object) -> OAuth2ClientCredentialsAuth:
    config = OAuth2ClientCredentials(
        type="oauth2",
        token_url="https://pacs.example/token",
        client_id="pacsfed id",
        client_secret=SECRET,
        **settings,  # type: ignore[arg-type]
    )
    return OAuth2ClientCredentialsAuth(config, clock or Clock())


async def test_one_token_for_many_concurrent_requests_and_basic_client_auth() -> None:
    pacs = FakePacs()
    async with httpx.AsyncClient(transport=httpx.MockTransport(pacs.handler)) as client:
        flow = auth(scope="qido read")
        responses = await asyncio.gather(
            *(client.get("https://pacs.example/studies", auth=flow) for _ in range(20))
        )
    assert {r.status_code for r in responses} == {200}
    assert len(pacs.token_requests) == 1
    request = pacs.token_requests[0]
    assert request.headers["authorization"].startswith("Basic ")
    assert b"grant_type=client_credentials" in request.content
    assert b"scope=qido+read" in request.content
    assert SECRET.encode() not in request.content  # sent in the Basic header only


async def test_the_token_is_renewed_before_it_expires() -> None:
    pacs, clock = FakePacs(expires_in=60), Clock()
    flow = auth(clock)
    async with httpx.AsyncClient(transport=httpx.MockTransport(pacs.handler)) as client:
        await client.get("https://pacs.example/studies", auth=flow)
        clock.now += 44
        await client.get("https://pacs.example/studies", auth=flow)
        assert pacs.issued == ["tok-1"]
        clock.now += 2  # 46 s of 60: renewed a quarter of its lifetime (at most 30 s) early
        await client.get("https://pacs.example/studies", auth=flow)
    assert pacs.issued == ["tok-1", "tok-2"]


async def test_a_401_fetches_one_new_token_and_retries_once() -> None:
    pacs = FakePacs()
    flow = auth()
    async with httpx.AsyncClient(transport=httpx.MockTransport(pacs.handler)) as client:
        await client.get("https://pacs.example/studies", auth=flow)
        pacs.revoked.add("tok-1")
        response = await client.get("https://pacs.example/studies", auth=flow)
        assert response.status_code == 200
        assert pacs.issued == ["tok-1", "tok-2"]
        pacs.revoked.add("tok-2")
        pacs.revoked.add("tok-3")  # the next one is refused too: the 401 comes back, no loop
        response = await client.get("https://pacs.example/studies", auth=flow)
    assert response.status_code == 401
    assert pacs.issued == ["tok-1", "tok-2", "tok-3"]


@pytest.mark.parametrize(
    ("status", "body", "message"),
    [
        (
            401,
            {"error": "invalid_client", "error_description": "secret very-s3cret is wrong"},
            "invalid_client",
        ),
        (500, {"oops": True}, "HTTP 500"),
        (200, {"token_type": "bearer"}, "no access_token"),
        (200, {"access_token": "x", "token_type": "mac"}, "not a bearer token"),
        (200, ["not", "an", "object"], "not a JSON object"),
    ],
)
async def test_token_endpoint_errors_are_source_auth_errors(status: int, body: object, message: str) -> None:
    pacs = FakePacs(token_status=status, token_body=body)
    async with httpx.AsyncClient(transport=httpx.MockTransport(pacs.handler)) as client:
        with pytest.raises(SourceAuthError, match=message) as raised:
            await client.get("https://pacs.example/studies", auth=auth())
    assert SECRET not in str(raised.value)
    assert "secret" not in str(raised.value)


def test_the_secret_is_in_no_repr() -> None:
    flow = auth()
    assert SECRET not in repr(flow)
    assert SECRET not in repr(flow._settings)
    assert "pacsfed id" in repr(flow)


def test_tls_context_settings(tmp_path: Path) -> None:
    context = client_context(TlsSettings(min_version="1.3"))
    assert context.minimum_version == ssl.TLSVersion.TLSv1_3
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname
    assert client_context(None).minimum_version == ssl.TLSVersion.TLSv1_2
    off = client_context(TlsSettings(), verify=False)
    assert off.verify_mode == ssl.CERT_NONE
    assert not off.check_hostname
    assert client_context(TlsSettings(min_version="1.3")) is context  # cached


def test_unusable_tls_files_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        client_context(TlsSettings(ca_file=tmp_path / "nope.pem"))
    garbage = tmp_path / "key.pem"
    garbage.write_text("-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWtleS1ieXRlcw==\n-----END PRIVATE KEY-----\n")
    with pytest.raises(ConfigError) as raised:
        client_context(TlsSettings(cert_file=garbage, key_file=garbage))
    assert "c2VjcmV0" not in str(raised.value)
    assert "cert_file/key_file" in str(raised.value)
    assert json.dumps(str(raised.value))  # a plain, printable message
