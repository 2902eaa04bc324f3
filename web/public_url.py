"""The start of every absolute URL pacsfed writes: ``server.public_url`` when set, else the request's own base.

Behind a reverse proxy the ``Host`` a request names may be an internal one, and some clients
(dicomweb-client 0.61) send it without the port: links built from it do not reach pacsfed.
``create_app`` puts the configured URL on ``app.state.public_url``; every front end builds its
links through :func:`public_base` (or rewrites a URL made from the request with :func:`as_public`).
"""

from __future__ import annotations

from starlette.requests import HTTPConnection

__all__ = ["as_public", "configured_public_url", "public_base"]


def configured_public_url(connection: HTTPConnection) -> str | None:
    """``server.public_url`` of the app serving ``connection``, without a trailing slash (None when unset)."""
    try:
        state = connection.app.state
    except KeyError:  # an ASGI app not served by starlette: no settings
        return None
    configured: str | None = getattr(state, "public_url", None)
    return configured.rstrip("/") if configured else None


def public_base(connection: HTTPConnection) -> str:
    """pacsfed's root as callers reach it, without a trailing slash."""
    return configured_public_url(connection) or str(connection.base_url).rstrip("/")


def as_public(connection: HTTPConnection, url: str) -> str:
    """``url`` (made from this request's own base, such as ``request.url``) starting with the public base."""
    own = str(connection.base_url).rstrip("/")
    public = public_base(connection)
    return public + url[len(own) :] if public != own and url.startswith(own) else url
