"""What the physician's page needs to sign in: its OIDC client (``auth.page``), and its shipped files."""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from federation.errors import ConfigError
from federation.settings_security import AuthSettings

CONFIG_PATH = "/page/config.json"
"""Read by ``auth.js`` before anything else; public (it holds no secret)."""

ASSETS_PATH = "/static/page"
ASSETS_DIR = Path(__file__).parent / "static" / "page"
"""The page's own JavaScript and CSS, shipped inside the package (no CDN)."""

_NO_STORE = {"cache-control": "no-store"}


def page_sign_in(auth: AuthSettings, demo_token: str | None = None) -> dict[str, str]:
    """The page's sign-in document: ``oidc`` with the issuer and public client, or ``none``, ``demo``, ``unavailable``.

    ``none`` is ``auth: {mode: none}`` (``--insecure-dev``): no sign-in. ``demo`` (``pacsfed demo``
    only) hands the page the demo physician's token, which the demo prints anyway. ``unavailable`` is
    ``mode: api_key``, or ``mode: jwt`` without ``auth.page``: the page cannot sign a physician in.
    """
    if demo_token is not None:
        return {"mode": "demo", "token": demo_token}
    if auth.mode == "none":
        return {"mode": "none"}
    if auth.page is None or auth.issuer is None:
        return {"mode": "unavailable"}
    return {
        "mode": "oidc",
        "issuer": auth.issuer,
        "client_id": auth.page.client_id,
        "scope": auth.page.scope,
    }


def page_config_routes(auth: AuthSettings, demo_token: str | None = None) -> list[BaseRoute]:
    """``GET /page/config.json`` and the page's static files under ``/static/page``."""
    document = page_sign_in(auth, demo_token)

    async def config(_request: Request) -> JSONResponse:
        return JSONResponse(document, headers=_NO_STORE)

    if not ASSETS_DIR.is_dir():
        raise ConfigError(f"the page's files are missing from the installation ({ASSETS_DIR})")
    return [
        Route(CONFIG_PATH, config, methods=["GET"]),
        Mount(ASSETS_PATH, app=StaticFiles(directory=ASSETS_DIR), name="page-assets"),
    ]
