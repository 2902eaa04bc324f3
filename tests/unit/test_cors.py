"""server.cors_origins: a browser app on another origin may call /graphql with its bearer token."""

from __future__ import annotations

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

EHR = "https://ehr.example.org"
PREFLIGHT = {
    "origin": EHR,
    "access-control-request-method": "POST",
    "access-control-request-headers": "authorization, content-type",
}
QUERY = {"query": "{ sources { id } }"}

Serving = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]


@pytest.fixture
def signer(tmp_path: Path) -> DemoSigner:
    return DemoSigner(tmp_path / "keys")


@pytest.fixture
def serving(tmp_path: Path, signer: DemoSigner) -> Serving:
    @asynccontextmanager
    async def serve(**server: Any) -> AsyncIterator[httpx.AsyncClient]:
        settings = settings_from_mapping(
            {
                "cache": {"backend": "memory"},
                "sources": [],
                "auth": signer.auth_config(),
                "audit": {"journal_dir": str(tmp_path / "audit")},
                "server": {"mode": "production", **server},
            }
        )
        async with LifespanManager(create_app(settings), startup_timeout=60, shutdown_timeout=60) as manager:
            transport = httpx.ASGITransport(app=manager.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://pacsfed.test") as client:
                yield client

    return serve


async def test_an_allowed_origin_gets_its_preflight_answered_without_credentials(
    serving: Serving, signer: DemoSigner
) -> None:
    async with serving(cors_origins=[EHR, "http://localhost:3000"]) as client:
        preflight = await client.options("/graphql", headers=PREFLIGHT)
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == EHR
        allowed = {h.strip() for h in preflight.headers["access-control-allow-headers"].lower().split(",")}
        assert {"authorization", "content-type"} <= allowed
        assert "POST" in preflight.headers["access-control-allow-methods"]
        assert "access-control-allow-credentials" not in preflight.headers

        token = {"authorization": f"Bearer {signer.token()}", "origin": EHR}
        answer = await client.post("/graphql", json=QUERY, headers=token)
        assert answer.json() == {"data": {"sources": []}}
        assert answer.headers["access-control-allow-origin"] == EHR
        assert "access-control-allow-credentials" not in answer.headers
        refused = await client.post("/graphql", json=QUERY, headers={"origin": EHR})
        assert refused.status_code == 401  # and the app may read why
        assert refused.headers["access-control-allow-origin"] == EHR


async def test_other_origins_and_other_paths_get_no_cors(serving: Serving, signer: DemoSigner) -> None:
    async with serving(cors_origins=[EHR]) as client:
        other = {**PREFLIGHT, "origin": "https://evil.example"}
        preflight = await client.options("/graphql", headers=other)
        assert preflight.status_code == 400
        assert "access-control-allow-origin" not in preflight.headers
        token = {"authorization": f"Bearer {signer.token()}", "origin": "https://evil.example"}
        answer = await client.post("/graphql", json=QUERY, headers=token)
        assert "access-control-allow-origin" not in answer.headers
        share_page = await client.options("/s", headers=PREFLIGHT)
        assert "access-control-allow-origin" not in share_page.headers


async def test_no_cors_by_default(serving: Serving) -> None:
    async with serving() as client:
        preflight = await client.options("/graphql", headers=PREFLIGHT)
        assert preflight.status_code in (401, 405)
        assert "access-control-allow-origin" not in preflight.headers


@pytest.mark.parametrize(
    "origin", ["*", "https://ehr.example.org/", "https://ehr.example.org/app", "ehr.org"]
)
def test_cors_origins_are_exact_origins(origin: str) -> None:
    with pytest.raises(ConfigError):
        settings_from_mapping({"server": {"cors_origins": [origin]}})


def test_cors_origins_load() -> None:
    origins = [EHR, "http://127.0.0.1:8080", "http://[::1]:3000"]
    assert settings_from_mapping({"server": {"cors_origins": origins}}).server.cors_origins == origins


async def test_an_allowed_origin_may_search_the_fhir_view(serving: Serving, signer: DemoSigner) -> None:
    async with serving(cors_origins=[EHR]) as client:
        preflight = await client.options(
            "/fhir/ImagingStudy", headers={**PREFLIGHT, "access-control-request-method": "GET"}
        )
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == EHR
        token = {"authorization": f"Bearer {signer.token()}", "origin": EHR}
        answer = await client.get("/fhir/ImagingStudy", params={"patient.identifier": "X-1"}, headers=token)
        assert answer.status_code == 200
        assert answer.headers["access-control-allow-origin"] == EHR


async def test_an_allowed_origin_may_search_the_dicomweb_facade_and_read_its_warnings(
    serving: Serving, signer: DemoSigner
) -> None:
    async with serving(cors_origins=[EHR]) as client:
        get = {
            **PREFLIGHT,
            "access-control-request-method": "GET",
            "access-control-request-headers": "authorization",
        }
        preflight = await client.options("/dicom-web/studies", headers=get)
        assert (preflight.status_code, preflight.headers["access-control-allow-origin"]) == (200, EHR)
        token = {"authorization": f"Bearer {signer.token()}", "origin": EHR}
        answer = await client.get("/dicom-web/studies", params={"PatientID": "X-1"}, headers=token)
        assert (answer.status_code, answer.json()) == (200, [])
        assert answer.headers["access-control-allow-origin"] == EHR
        assert "warning" in answer.headers["access-control-expose-headers"].lower()
        share_page = await client.options("/dicom-webs", headers=get)
        assert "access-control-allow-origin" not in share_page.headers
