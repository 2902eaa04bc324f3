"""The emergency physician's page at ``/``: plain HTML, CSS and JavaScript modules shipped in the package.

Every asset is served from this server (hospital networks are often offline: no CDN, no external
fonts) under a strict Content-Security-Policy. The page talks to ``/graphql`` like any client.
Signing in is ``auth.js``'s part (:mod:`web.page_config`), the demo's token included.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

ASSETS_PATH = "/page/assets"
"""Where the page's own files are served (``index.html`` names them there)."""

ASSETS_DIR = Path(__file__).parent / "static" / "page"
"""The page: ``index.html``, its CSS and its JavaScript modules."""

_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "SAMEORIGIN",
    "X-Content-Type-Options": "nosniff",
}


def content_security_policy(connect_origins: Sequence[str] = ()) -> str:
    """The page's policy: everything from this server; ``connect_origins`` (an identity provider) added.

    The provider is also allowed in a frame (silent renewal), whose answer comes back to this page
    framed by itself: hence ``frame-src 'self'`` beside it, and ``frame-ancestors 'self'``.
    """
    connect = " ".join(("'self'", *connect_origins))
    frames = " ".join(("'self'", *connect_origins)) if connect_origins else "'none'"
    return (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
        f" connect-src {connect}; frame-src {frames}; base-uri 'none'; form-action 'self';"
        " frame-ancestors 'self'"
    )


def page_routes(connect_origins: Sequence[str] = ()) -> list[BaseRoute]:
    """``GET /`` and the page's assets; ``connect_origins``: the identity provider, if the page signs in."""
    headers = {**_HEADERS, "Content-Security-Policy": content_security_policy(connect_origins)}
    document = (ASSETS_DIR / "index.html").read_text(encoding="utf-8")

    async def index(_request: Request) -> HTMLResponse:
        """The page itself (never cached: a new release is seen at the next load)."""
        return HTMLResponse(document, headers=headers)

    return [
        Route("/", index, methods=["GET"]),
        Mount(ASSETS_PATH, app=StaticFiles(directory=ASSETS_DIR), name="page-assets"),
    ]
