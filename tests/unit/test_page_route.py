"""``GET /`` serves the physician's page: everything from this server, the demo's token only when given."""

from __future__ import annotations

import re

from starlette.applications import Starlette
from starlette.testclient import TestClient

from web.page import ASSETS_DIR, ASSETS_PATH, page_routes


def client() -> TestClient:
    return TestClient(Starlette(routes=page_routes()))


def test_the_page_has_the_patient_id_field_in_a_form_and_a_strict_policy() -> None:
    response = client().get("/")
    assert response.status_code == 200
    assert '<input name="patientId"' in response.text and "<form" in response.text
    policy = response.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "connect-src 'self'" in policy and "script-src 'self'" in policy
    assert response.headers["cache-control"] == "no-store"


def test_every_asset_the_page_names_is_served_from_here() -> None:
    served = client()
    page = served.get("/").text
    # named relative to the page ("page/assets/…"), so that they follow it under a proxy's path
    assets = ["/" + path for path in re.findall(rf'(?:src|href)="({ASSETS_PATH.lstrip("/")}/[^"]+)"', page)]
    modules = {
        f"{ASSETS_PATH}/{name}"
        for script in ASSETS_DIR.glob("*.js")
        for name in re.findall(r'from "\./([^"]+)"', script.read_text(encoding="utf-8"))
    }
    assert len(assets) >= 2 and modules
    for path in {*assets, *modules}:
        assert served.get(path).status_code == 200, path


def test_no_asset_names_another_host() -> None:
    for asset in ASSETS_DIR.iterdir():
        assert not re.search(r"(?:https?:)?//[a-z0-9.-]+\.[a-z]", asset.read_text(encoding="utf-8")), (
            asset.name
        )


def test_the_page_itself_never_carries_a_token() -> None:
    """Tokens reach the page only through auth.js (config.json in the demo, OIDC otherwise)."""
    page = client().get("/").text
    assert "token" not in page.lower() and '<script type="module" src="page/assets/auth.js">' in page


def test_an_identity_provider_s_origin_is_the_only_other_place_the_page_may_connect_to() -> None:
    routes = page_routes(connect_origins=("https://idp.hospital.test",))
    policy = TestClient(Starlette(routes=routes)).get("/").headers["content-security-policy"]
    assert "connect-src 'self' https://idp.hospital.test;" in policy
    # Silent renewal: the provider in a hidden frame, whose answer lands on this page framed by itself.
    assert "frame-src 'self' https://idp.hospital.test;" in policy and "frame-ancestors 'self'" in policy
    assert "frame-src 'none'" in client().get("/").headers["content-security-policy"]
