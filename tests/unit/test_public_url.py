"""``server.public_url``: the start of every absolute URL pacsfed writes, whatever Host the request names."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from dev_app import dev_app
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from federation.errors import ConfigError
from federation.settings import settings_from_mapping
from web.http_access import cross_site
from web.public_url import as_public, public_base

PUBLIC = "https://pacsfed.example.org/imaging"


async def _links(request: Request) -> JSONResponse:
    return JSONResponse({"base": public_base(request), "self": as_public(request, str(request.url))})


def _client(public_url: str | None) -> TestClient:
    app = Starlette(routes=[Route("/fhir/ImagingStudy", _links)])
    app.state.public_url = public_url
    return TestClient(app, base_url="http://10.0.0.7:8000")


def test_the_configured_url_replaces_the_requests_own_base() -> None:
    answer = _client(PUBLIC + "/").get(
        "/fhir/ImagingStudy?patient.identifier=x", headers={"host": "internal"}
    )
    assert answer.json() == {"base": PUBLIC, "self": f"{PUBLIC}/fhir/ImagingStudy?patient.identifier=x"}


def test_without_it_the_requests_host_gives_the_base() -> None:
    answer = _client(None).get("/fhir/ImagingStudy?a=1", headers={"host": "10.0.0.7"})  # no port, as sent
    assert answer.json() == {"base": "http://10.0.0.7", "self": "http://10.0.0.7/fhir/ImagingStudy?a=1"}


@pytest.mark.parametrize(
    "value", ["pacsfed.example.org", "ftp://pacsfed.example.org", "https://a b", "https://x/?q=1"]
)
def test_a_public_url_must_be_an_http_address(value: str) -> None:
    with pytest.raises(ConfigError, match="server.public_url"):
        settings_from_mapping({"server": {"public_url": value}})


def test_a_public_url_may_carry_a_path() -> None:
    assert settings_from_mapping({"server": {"public_url": PUBLIC}}).server.public_url == PUBLIC


async def test_the_app_writes_its_links_from_the_setting() -> None:
    settings = settings_from_mapping({"cache": {"backend": "memory"}, "server": {"public_url": PUBLIC}})
    async with LifespanManager(dev_app(settings), startup_timeout=60) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            metadata: Any = (await client.get("/fhir/metadata")).json()
            search: Any = (
                await client.get("/fhir/ImagingStudy", params={"patient.identifier": "PA-1"})
            ).json()
            share = {"query": 'mutation { createShareCode(patient: {id: "PA-1"}) { code url } }'}
            created: Any = (await client.post("/graphql", json=share)).json()["data"]["createShareCode"]
    assert metadata["implementation"]["url"] == f"{PUBLIC}/fhir"
    assert created["url"] == f"{PUBLIC}/s/{created['code']}"
    assert search["link"] == [
        {"relation": "self", "url": f"{PUBLIC}/fhir/ImagingStudy?patient.identifier=PA-1"}
    ]


async def _cross_site(request: Request) -> JSONResponse:
    return JSONResponse(cross_site(request, origin_required=True))


@pytest.mark.parametrize(
    ("public_url", "origin", "refused"),
    [
        (PUBLIC, "https://pacsfed.example.org", False),  # its own page, reached through the proxy
        (PUBLIC, "https://evil.example", True),
        (PUBLIC, "http://pacsfed.example.org", True),  # another scheme is another origin
        (None, "https://pacsfed.example.org", True),
        (None, "http://10.0.0.7:8000", False),  # the Host it was asked at
    ],
)
def test_the_public_urls_origin_is_this_servers_own(
    public_url: str | None, origin: str, refused: bool
) -> None:
    app = Starlette(routes=[Route("/s", _cross_site, methods=["POST"])])
    app.state.public_url = public_url
    client = TestClient(app, base_url="http://10.0.0.7:8000")
    assert client.post("/s", headers={"origin": origin}).json() is refused
