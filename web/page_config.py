"""What the physician's page needs to sign in: its OIDC client (``auth.page``), and its shipped files."""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route

from federation.settings_security import AuthSettings

CONFIG_PATH = "/page/config.json"
"""Read by ``auth.js`` before anything else; public (it holds no secret)."""


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
    """``GET /page/config.json`` (the page's files, ``auth.js`` among them, are served by :mod:`web.page`)."""
    document = page_sign_in(auth, demo_token)

    async def config(_request: Request) -> JSONResponse:
        return JSONResponse(document, headers=_NO_STORE)

    return [Route(CONFIG_PATH, config, methods=["GET"])]


def sign_in_origins(auth: AuthSettings) -> tuple[str, ...]:
    """The identity provider's origin, which the page may call and frame (silent renewal), if it signs in."""
    if auth.mode != "jwt" or auth.page is None or auth.issuer is None:
        return ()
    issuer = urlsplit(auth.issuer)
    return (f"{issuer.scheme}://{issuer.netloc}",)
