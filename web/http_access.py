"""From an HTTP request or WebSocket to an AccessContext: credentials checked, failures audited."""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Mapping
from typing import Any

from graphql import FieldNode, GraphQLError, OperationDefinitionNode, OperationType, parse
from starlette.requests import HTTPConnection
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from federation.access.auth import Authenticator
from federation.access.principals import AccessContext, Principal, PrincipalKind
from federation.errors import AuthenticationError
from federation.service import HistoryService
from web.public_url import configured_public_url
from web.request_id import current_request_id

ANONYMOUS = Principal(subject="anonymous", kind=PrincipalKind.SHARE, scopes=frozenset())
"""Whoever presents no credential: may only redeem a share code."""


def client_address(connection: HTTPConnection) -> str | None:
    """The client's address (uvicorn's proxy-headers support rewrites it for trusted proxies)."""
    return connection.client.host if connection.client is not None else None


_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
_SAME_SITE_FETCH = ("same-origin", "none")


def _origin_of(scheme: str, netloc: str) -> tuple[str, str, int] | None:
    parsed = urllib.parse.urlsplit(f"{scheme}://{netloc}")
    try:
        port = parsed.port
    except ValueError:
        return None
    if parsed.hostname is None or scheme not in _DEFAULT_PORTS:
        return None
    web_scheme = {"ws": "http", "wss": "https"}.get(scheme, scheme)
    return web_scheme, parsed.hostname.lower(), port or _DEFAULT_PORTS[scheme]


def cross_site(connection: HTTPConnection, *, origin_required: bool, trusted: tuple[str, ...] = ()) -> bool:
    """True unless the browser says this request comes from this server's own pages (or a ``trusted`` origin).

    A browser sends ``Origin`` on every POST (``null`` when it hides it) and, lately,
    ``Sec-Fetch-Site``; either naming another origin makes the request cross-site. This server's
    origin is the request's scheme and ``Host``, and ``server.public_url``'s when set. A request
    without ``Origin`` comes from a program, not a page (``origin_required`` refuses it too).
    """
    origin = connection.headers.get("origin")
    if origin is not None and origin.strip().lower() in trusted:
        return False
    fetch_site = connection.headers.get("sec-fetch-site")
    if fetch_site is not None and fetch_site.lower() not in _SAME_SITE_FETCH:
        return True
    if origin is None:
        return origin_required
    scheme, _, netloc = origin.strip().partition("://")
    claimed = _origin_of(scheme.lower(), netloc) if netloc and "/" not in netloc else None
    own = {_origin_of(connection.url.scheme, connection.headers.get("host", ""))}
    if (public := configured_public_url(connection)) is not None:  # its pages, behind a proxy
        scheme, _, rest = public.partition("://")
        own.add(_origin_of(scheme, rest.partition("/")[0]))
    return claimed is None or claimed not in own - {None}


class RequestAccess:
    """Authenticates requests for every HTTP front end (GraphQL, WebSocket, the share page)."""

    def __init__(self, authenticator: Authenticator, service: HistoryService) -> None:
        self.authenticator = authenticator
        self.service = service

    @property
    def insecure(self) -> bool:
        """True in ``auth: {mode: none}`` (development only)."""
        return self.authenticator.insecure

    async def access_for(
        self,
        connection: HTTPConnection,
        channel: str,
        authorization: str | None = None,
        *,
        anonymous_ok: bool = False,
    ) -> AccessContext:
        """The caller of ``connection``; AuthenticationError (audited) when the credential proves nothing.

        ``authorization`` overrides the header (a WebSocket's ``connection_init`` payload);
        ``anonymous_ok`` lets a request without any credential through as ANONYMOUS.
        """
        header = authorization if authorization is not None else connection.headers.get("authorization")
        address = client_address(connection)
        request_id = current_request_id()
        if not header and anonymous_ok and not self.insecure:
            return AccessContext(ANONYMOUS, address, request_id, channel)
        try:
            principal = await self.authenticator.authenticate(header)
        except AuthenticationError as exc:
            await self.service.authentication_failed(
                AccessContext(ANONYMOUS, address, request_id, channel), exc.code
            )
            raise
        return AccessContext(principal, address, request_id, channel)


def authorization_from_payload(payload: Mapping[str, object] | None) -> str | None:
    """The credential a graphql-transport-ws client sent in ``connection_init`` (browsers cannot set headers)."""
    if not payload:
        return None
    for key in ("Authorization", "authorization"):
        value = payload.get(key)
        if isinstance(value, str):
            return value
    headers = payload.get("headers")
    if isinstance(headers, Mapping):
        for key in ("Authorization", "authorization"):
            value = headers.get(key)
            if isinstance(value, str):
                return value
    return None


def _redeem_only(body: bytes, max_tokens: int) -> bool:
    """True when a GraphQL request body asks nothing but ``redeemShareCode`` (what an anonymous caller may)."""
    try:
        payload = json.loads(body)
    except ValueError:
        return False
    if not isinstance(payload, dict) or not isinstance(payload.get("query"), str):
        return False
    try:
        document = parse(payload["query"], max_tokens=max_tokens)
    except (GraphQLError, RecursionError):
        return False
    operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    if not operations or len(operations) != len(document.definitions):
        return False  # fragments would hide what is asked: not for anonymous callers
    for operation in operations:
        if operation.operation is not OperationType.MUTATION:
            return False
        for selection in operation.selection_set.selections:
            if not isinstance(selection, FieldNode) or selection.name.value != "redeemShareCode":
                return False
    return True


class AuthenticationMiddleware:
    """Authenticates every GraphQL request before it runs: 401 with ``WWW-Authenticate`` when it cannot.

    The caller is put in the connection's state (``request.state.access``). An anonymous POST is
    let through only when all it asks is ``redeemShareCode`` (the code is the credential), and
    only from a program (no ``Origin``), this server's own pages or a ``trusted_origins`` app:
    another site's page is refused (403) before the share codes' lock-out counts the attempt.
    """

    def __init__(
        self,
        app: ASGIApp,
        paths: tuple[str, ...] = ("/graphql",),
        max_body_bytes: int = 65536,
        max_tokens: int = 2000,
        trusted_origins: tuple[str, ...] = (),
    ) -> None:
        self.app = app
        self.paths = paths
        self.max_body_bytes = max_body_bytes
        self.max_tokens = max_tokens
        self.trusted_origins = tuple(origin.lower() for origin in trusted_origins)
        """``server.cors_origins``: browser apps trusted to redeem share codes for their users."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Authenticate, then pass on (or answer 401)."""
        if scope["type"] != "http" or scope["path"] not in self.paths:
            # A WebSocket is authenticated by its handler at connection_init (with the header, or the
            # payload: browsers cannot set headers), so that a refusal is a close code (4403) the
            # client can read, not a refused handshake that looks like a network failure.
            await self.app(scope, receive, send)
            return
        access: RequestAccess = scope["app"].state.services.access
        connection = HTTPConnection(scope)
        anonymous_ok = False
        if not connection.headers.get("authorization") and not access.insecure:
            if scope["method"] == "GET" and b"query=" not in scope.get("query_string", b""):
                # The GraphiQL page (development) or a 400: nothing is read, nothing to protect.
                await self.app(scope, receive, send)
                return
            body, receive = await _buffered(receive, self.max_body_bytes)
            anonymous_ok = scope["method"] == "POST" and _redeem_only(body, self.max_tokens)
            if anonymous_ok and cross_site(connection, origin_required=False, trusted=self.trusted_origins):
                # Another site's page must not spend this address's failed attempts (lock-out).
                anonymous = AccessContext(
                    ANONYMOUS, client_address(connection), current_request_id(), "graphql"
                )
                await access.service.cross_site_refused(anonymous)
                await _cross_site(scope, receive, send)
                return
        try:
            context = await access.access_for(connection, "graphql", anonymous_ok=anonymous_ok)
        except AuthenticationError as exc:
            await _unauthorized(exc, scope, receive, send)
            return
        scope.setdefault("state", {})["access"] = context
        await self.app(scope, receive, send)


async def _buffered(receive: Receive, limit: int) -> tuple[bytes, Receive]:
    """Read the request body (up to ``limit`` + 1 bytes) and a receive that replays it."""
    chunks: list[bytes] = []
    size = 0
    more = True
    while more and size <= limit:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunk = message.get("body", b"")
        chunks.append(chunk)
        size += len(chunk)
        more = bool(message.get("more_body", False))
    body = b"".join(chunks)
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": more}
        return await receive()

    return body, replay


async def _cross_site(scope: Scope, receive: Receive, send: Send) -> None:
    message = "a share code is redeemed only from this server's own pages or by a program"
    response = JSONResponse(
        {
            "errors": [
                {"message": message, "extensions": {"code": "FORBIDDEN", "requestId": current_request_id()}}
            ]
        },
        status_code=403,
        headers={"Cache-Control": "no-store"},
    )
    await response(scope, receive, send)


async def _unauthorized(exc: AuthenticationError, scope: Scope, receive: Receive, send: Send) -> None:
    error = "invalid_request" if exc.code == "UNAUTHENTICATED" else "invalid_token"
    response = JSONResponse(
        {
            "errors": [
                {"message": str(exc), "extensions": {"code": exc.code, "requestId": current_request_id()}}
            ]
        },
        status_code=401,
        headers={"WWW-Authenticate": f'Bearer realm="pacsfed", error="{error}"', "Cache-Control": "no-store"},
    )
    await response(scope, receive, send)


async def graphql_context(connection: HTTPConnection) -> dict[str, Any]:
    """The GraphQL context: the engine, the connection and the authenticated caller (``access``).

    HTTP requests were authenticated by :class:`AuthenticationMiddleware`; a WebSocket authenticates
    here, at ``connection_init`` and again for each operation, with its ``Authorization`` header or
    else its ``connection_init`` payload. A share's context carries ``revoked``, an event set when
    this process revokes the share.
    """
    access: AccessContext | None = getattr(connection.state, "access", None)
    if access is None or connection.scope["type"] == "websocket":
        services = connection.app.state.services
        params = getattr(connection.state, "connection_params", None)
        authorization = connection.headers.get("authorization") or authorization_from_payload(params) or ""
        access = await services.access.access_for(connection, "graphql-ws", authorization=authorization)
    context = {"engine": connection.app.state.engine, "request": connection, "access": access}
    share = access.principal.share
    if share is not None and connection.scope["type"] == "websocket":
        context["revoked"] = connection.app.state.services.history.revocation_signal(share.share_id)
    return context
