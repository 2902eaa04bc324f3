"""OAuth 2.0 client-credentials grant (RFC 6749 4.4) as a ``SourceAuth`` (an ``httpx.Auth``) for one source.

The token is fetched through the source's own client (the auth flow yields the token request,
so it shares the source's connection pool, TLS settings and timeouts), kept until shortly
before ``expires_in`` runs out, and fetched again once when the PACS answers 401. Many queries
needing a token at once wait for a single token request (single flight). The client
authenticates with HTTP Basic (RFC 6749 2.3.1). Neither the client secret nor a token ever
appears in a message, a log line or a repr.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncGenerator, Callable, Generator
from urllib.parse import quote

import httpx

from connectors.http_auth import SourceAuth
from federation.errors import SourceAuthError
from federation.settings_security import OAuth2ClientCredentials

DEFAULT_EXPIRES_S = 300.0
"""Lifetime assumed when the token endpoint gives no ``expires_in``."""
MAX_TOKEN_BYTES = 64 * 1024


def _renew_margin(lifetime: float) -> float:
    """Seconds before expiry at which a token is renewed: 30 s, less for short-lived tokens."""
    return min(30.0, lifetime / 4)


class OAuth2ClientCredentialsAuth(SourceAuth):
    """Bearer tokens from an OAuth 2.0 token endpoint, cached and renewed (async clients only)."""

    requires_response_body = False

    def __init__(
        self, settings: OAuth2ClientCredentials, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._settings = settings
        self._clock = clock
        self._token: str | None = None
        self._renew_at = 0.0
        self._lock = asyncio.Lock()
        self.fetches = 0
        """Token requests made so far (for tests and metrics)."""

    def __repr__(self) -> str:
        return f"OAuth2ClientCredentialsAuth(client_id={self._settings.client_id!r})"

    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        raise RuntimeError("OAuth2ClientCredentialsAuth works with httpx.AsyncClient only")

    async def async_auth_flow(self, request: httpx.Request) -> AsyncGenerator[httpx.Request, httpx.Response]:
        token = self._valid_token()
        if token is None:
            async with self._lock:  # single flight: the others wait, then reuse the new token
                token = self._valid_token()
                if token is None:
                    token = await self._store((yield self._token_request(_timeout_of(request))))
        request.headers["Authorization"] = f"Bearer {token}"
        response = yield request
        if response.status_code != 401:
            return
        # Revoked or expired early: one new token, one new attempt.
        async with self._lock:
            if self._token == token:
                self._token = None
            fresh = self._valid_token()
            if fresh is None:
                fresh = await self._store((yield self._token_request(_timeout_of(request))))
        request.headers["Authorization"] = f"Bearer {fresh}"
        yield request

    async def token(self, client: httpx.AsyncClient, within_s: float) -> str:
        """A valid bearer token, fetched through *client* when there is none (single flight)."""
        token = self._valid_token()
        if token is not None:
            return token
        async with self._lock:
            token = self._valid_token()
            if token is None:
                request = self._token_request(httpx.Timeout(within_s).as_dict())
                response = await client.send(request, stream=True)
                try:
                    token = await self._store(response)
                finally:
                    await response.aclose()
        return token

    async def authorization(self, client: httpx.AsyncClient, within_s: float) -> bytes:
        """``Bearer`` and a valid token, fetched through *client* when there is none."""
        return f"Bearer {await self.token(client, within_s)}".encode()

    def refused(self, authorization: bytes) -> bool:
        """The PACS refused the token (revoked or expired early): forget it, so that one more is fetched."""
        self.forget(authorization.decode().removeprefix("Bearer "))
        return True

    def forget(self, token: str) -> None:
        """Drop *token*, which the PACS refused (revoked or expired early): the next use fetches one."""
        if self._token == token:
            self._token = None

    def _valid_token(self) -> str | None:
        if self._token is not None and self._clock() < self._renew_at:
            return self._token
        return None

    def _token_request(self, timeout: dict[str, float | None]) -> httpx.Request:
        s = self._settings
        form = {"grant_type": "client_credentials"}
        if s.scope:
            form["scope"] = s.scope
        # RFC 6749 2.3.1: client id and secret are form-encoded before they go into Basic.
        basic = httpx.BasicAuth(
            quote(s.client_id, safe=""), quote(s.client_secret.get_secret_value(), safe="")
        )
        token_request = httpx.Request(
            "POST",
            s.token_url,
            data=form,
            headers={"Accept": "application/json"},
            extensions={"timeout": timeout},
        )
        return next(basic.auth_flow(token_request))

    async def _store(self, response: httpx.Response) -> str:
        """Keep the token of a token-endpoint response; SourceAuthError if there is none."""
        self.fetches += 1
        length = response.headers.get("Content-Length", "0")
        if not length.isdigit() or int(length) > MAX_TOKEN_BYTES:
            raise SourceAuthError("token endpoint answer too large")
        body = await response.aread()  # httpx reads it again after the flow: keep it buffered
        if len(body) > MAX_TOKEN_BYTES:
            raise SourceAuthError("token endpoint answer too large")
        if response.status_code != 200:
            raise SourceAuthError(
                f"token endpoint refused the client credentials (HTTP {response.status_code}{_oauth_error(body)})"
            )
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise SourceAuthError("token endpoint answer is not JSON") from exc
        if not isinstance(data, dict):
            raise SourceAuthError("token endpoint answer is not a JSON object")
        token = data.get("access_token")
        token_type = data.get("token_type", "bearer")
        if not isinstance(token, str) or not token or not token.isprintable():
            raise SourceAuthError("token endpoint answer has no access_token")
        if not isinstance(token_type, str) or token_type.lower() != "bearer":
            raise SourceAuthError("token endpoint issued a token that is not a bearer token")
        lifetime = data.get("expires_in", DEFAULT_EXPIRES_S)
        if isinstance(lifetime, str) and lifetime.isdigit():
            lifetime = int(lifetime)
        if isinstance(lifetime, bool) or not isinstance(lifetime, int | float) or lifetime <= 0:
            lifetime = DEFAULT_EXPIRES_S
        self._token = token
        self._renew_at = self._clock() + float(lifetime) - _renew_margin(float(lifetime))
        return token


def _timeout_of(request: httpx.Request) -> dict[str, float | None]:
    """The timeouts of the request a token is needed for, for the token request too."""
    timeout = request.extensions.get("timeout")
    return timeout if isinstance(timeout, dict) else httpx.Timeout(10.0).as_dict()


def _oauth_error(body: bytes) -> str:
    """The RFC 6749 5.2 ``error`` code of a refusal (``invalid_client``...), never its free text."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return ""
    code = data.get("error") if isinstance(data, dict) else None
    if isinstance(code, str) and code.replace("_", "").isalpha() and len(code) <= 40:
        return f", {code}"
    return ""
