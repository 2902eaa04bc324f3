"""auth.page: the page's OIDC client, validated at start-up and published at /page/config.json."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager

from federation.errors import ConfigError
from federation.settings import settings_from_mapping
from pacsfed.app import create_app
from pacsfed.demo.signer import DemoSigner

PAGE = {"client_id": "pacsfed-page", "scope": "openid history:read share:create"}

Serving = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]


@pytest.fixture
def signer(tmp_path: Path) -> DemoSigner:
    return DemoSigner(tmp_path / "keys")


@pytest.fixture
def serving(tmp_path: Path) -> Serving:
    @asynccontextmanager
    async def serve(auth: dict[str, Any], *, insecure_dev: bool = False) -> AsyncIterator[httpx.AsyncClient]:
        settings = settings_from_mapping(
            {
                "cache": {"backend": "memory"},
                "sources": [],
                "auth": auth,
                "audit": {"journal_dir": str(tmp_path / "audit")},
                "server": {"mode": "production"},
            }
        )
        app = create_app(settings, insecure_dev=insecure_dev)
        async with LifespanManager(app, startup_timeout=60, shutdown_timeout=60) as manager:
            transport = httpx.ASGITransport(app=manager.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://pacsfed.test") as client:
                yield client

    return serve


async def test_the_page_reads_its_issuer_and_public_client_without_credentials(
    serving: Serving, signer: DemoSigner
) -> None:
    async with serving({**signer.auth_config(), "page": PAGE}) as client:
        response = await client.get("/page/config.json")
        script = await client.get("/page/assets/auth.js")
    assert response.status_code == 200
    assert response.json() == {"mode": "oidc", "issuer": signer.auth_config()["issuer"], **PAGE}
    assert response.headers["cache-control"] == "no-store"
    assert script.status_code == 200 and "window.pacsfedAuth" in script.text
    assert script.headers["content-type"].startswith(("text/javascript", "application/javascript"))


async def test_insecure_dev_tells_the_page_there_is_no_sign_in(serving: Serving) -> None:
    async with serving({"mode": "none"}, insecure_dev=True) as client:
        response = await client.get("/page/config.json")
    assert response.json() == {"mode": "none"}


async def test_jwt_without_a_page_client_says_the_page_cannot_sign_in(
    serving: Serving, signer: DemoSigner
) -> None:
    async with serving(signer.auth_config()) as client:
        response = await client.get("/page/config.json")
    assert response.json() == {"mode": "unavailable"}


@pytest.mark.parametrize(
    ("auth", "message"),
    [
        ({"mode": "none", "page": PAGE}, "page (the page's sign-in) needs mode jwt"),
        ({"page": {"client_id": "pacsfed-page", "scope": "history:read"}}, "scope must include openid"),
        ({"page": {"client_id": "two words"}}, "client_id"),
        ({"issuer": "pacsfed-idp", "page": PAGE}, "issuer to be the identity provider's URL"),
    ],
)
def test_a_page_client_that_cannot_work_is_refused_at_start_up(
    signer: DemoSigner, auth: dict[str, Any], message: str
) -> None:
    config = {"cache": {"backend": "memory"}, "sources": [], "auth": {**signer.auth_config(), **auth}}
    with pytest.raises(ConfigError, match=re.escape(message)):
        settings_from_mapping(config)


async def test_the_demo_signs_the_page_in_as_the_demo_physician(tmp_path: Path, signer: DemoSigner) -> None:
    settings = settings_from_mapping(
        {
            "cache": {"backend": "memory"},
            "sources": [],
            "auth": signer.auth_config(),
            "audit": {"journal_dir": str(tmp_path / "audit")},
        }
    )
    token = signer.token()
    app = create_app(settings, demo_token=token)
    async with LifespanManager(app, startup_timeout=60, shutdown_timeout=60) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://pacsfed.test") as client:
            document = (await client.get("/page/config.json")).json()
            answer = await client.post(
                "/graphql",
                json={"query": "{ sources { id } }"},
                headers={"authorization": f"Bearer {document['token']}"},
            )
    assert document == {"mode": "demo", "token": token}
    assert answer.json() == {"data": {"sources": []}}
