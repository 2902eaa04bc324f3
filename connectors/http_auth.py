"""How an HTTP source authenticates: one object per source, read by both request paths.

Each kind is an ``httpx.Auth``, so httpx (HTTP/2, proxied sources) runs it as its auth flow; the
lean HTTP/1.1 pool, which builds no httpx requests, asks the same object for the
``Authorization`` value (:meth:`SourceAuth.authorization`) and tells it of a 401
(:meth:`SourceAuth.refused`). HTTP Basic (RFC 7617) and static bearer tokens (RFC 6750) are
fixed headers; OAuth 2.0 client credentials are in ``connectors.oauth2``. No secret appears in
a repr, a message or a log line.
"""

from __future__ import annotations

import base64
from collections.abc import Generator

import httpx

__all__ = ["SourceAuth", "StaticAuth", "basic_auth", "bearer_auth"]


class SourceAuth(httpx.Auth):
    """An ``httpx.Auth`` that also gives the lean pool its ``Authorization`` header."""

    async def authorization(self, client: httpx.AsyncClient, within_s: float) -> bytes:
        """The ``Authorization`` value for the next request; *client* fetches what must be fetched."""
        raise NotImplementedError

    def refused(self, authorization: bytes) -> bool:
        """The source answered 401 to *authorization*: True when a new value may be accepted (ask again once)."""
        return False


class StaticAuth(SourceAuth):
    """A fixed ``Authorization`` header (HTTP Basic, or a static bearer token)."""

    requires_request_body = False
    requires_response_body = False

    def __init__(self, scheme: str, credentials: str) -> None:
        self._scheme = scheme
        self._value = f"{scheme} {credentials}"
        self._raw = self._value.encode()

    def __repr__(self) -> str:
        return f"StaticAuth({self._scheme!r})"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = self._value
        yield request

    async def authorization(self, client: httpx.AsyncClient, within_s: float) -> bytes:
        return self._raw


def basic_auth(username: str, password: str) -> StaticAuth:
    """HTTP Basic (RFC 7617), user id and password as UTF-8, as httpx encodes them."""
    pair = f"{username}:{password}".encode()
    return StaticAuth("Basic", base64.b64encode(pair).decode("ascii"))


def bearer_auth(token: str) -> StaticAuth:
    """A static bearer token (RFC 6750 2.1)."""
    return StaticAuth("Bearer", token)
