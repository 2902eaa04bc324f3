"""Turning credentials into a Principal: OIDC bearer JWTs (JWKS or PEM) and hashed API keys."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import hashlib
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import jwt

from federation.access.principals import Principal, PrincipalKind, development_principal, known_scopes
from federation.errors import AuthenticationError, ConfigError
from federation.settings_security import ApiKeySettings, AuthSettings

log = logging.getLogger(__name__)

API_KEY_PREFIX = "pfk_"
SHARE_TOKEN_PREFIX = "pfs_"  # noqa: S105 (a prefix, not a secret)
_MAX_CREDENTIAL_LENGTH = 16 * 1024

ShareTokenResolver = Callable[[str], Awaitable[Principal]]
"""Looks up a redeemed share token (``pfs_…``); raises AuthenticationError when unknown or expired."""


def new_api_key(key_id: str) -> tuple[str, str]:
    """A fresh API key for ``key_id`` (shown once) and the SHA-256 hex to configure."""
    key = f"{API_KEY_PREFIX}{secrets.token_urlsafe(32)}"
    return key, hash_secret(key)


def hash_secret(secret: str) -> str:
    """The stored form of a high-entropy secret (API key, share code, share token)."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


@dataclasses.dataclass(frozen=True, slots=True)
class _Credential:
    scheme: str
    value: str


def _split(authorization: str) -> _Credential:
    scheme, _, value = authorization.strip().partition(" ")
    value = value.strip()
    if not scheme or not value or len(value) > _MAX_CREDENTIAL_LENGTH:
        raise AuthenticationError("malformed Authorization header", code="BAD_CREDENTIALS")
    return _Credential(scheme.lower(), value)


class _KeySource:
    """Signing keys for JWTs: a static PEM, or a JWKS URL fetched, cached and refetched on rotation."""

    def __init__(self, settings: AuthSettings, http: httpx.AsyncClient | None) -> None:
        self._settings = settings
        self._http = http
        self._static: Any = None
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at = -float("inf")
        self._lock = asyncio.Lock()
        if settings.public_key_file is not None:
            try:
                pem = settings.public_key_file.read_bytes()
            except OSError as exc:
                raise ConfigError(f"auth.public_key_file: cannot be read ({exc.strerror})") from exc
            try:
                from cryptography.hazmat.primitives.serialization import load_pem_public_key

                self._static = load_pem_public_key(pem)
            except ValueError as exc:
                raise ConfigError("auth.public_key_file: not a PEM public key") from exc

    async def key_for(self, kid: str | None) -> Any:
        """The verification key for a token's ``kid``."""
        if self._static is not None:
            return self._static
        now = time.monotonic()
        stale = now - self._fetched_at > self._settings.jwks_cache_s
        unknown = kid not in self._keys if kid else len(self._keys) != 1
        if stale or (unknown and now - self._fetched_at > self._settings.jwks_min_refetch_s):
            await self._refresh(now)
        if kid is None:
            if len(self._keys) == 1:
                return next(iter(self._keys.values())).key
            raise AuthenticationError("the token names no key (kid)", code="BAD_TOKEN")
        key = self._keys.get(kid)
        if key is None:
            raise AuthenticationError("the token is signed with an unknown key", code="BAD_TOKEN")
        return key.key

    async def _refresh(self, asked_at: float) -> None:
        async with self._lock:
            if self._fetched_at >= asked_at:  # another request refreshed while this one waited
                return
            self._keys = await self._fetch()
            self._fetched_at = time.monotonic()

    async def _fetch(self) -> dict[str, jwt.PyJWK]:
        assert self._settings.jwks_url is not None
        if self._http is None:
            raise AuthenticationError("signing keys are unavailable", code="AUTH_UNAVAILABLE")
        try:
            response = await self._http.get(self._settings.jwks_url, timeout=5.0)
            response.raise_for_status()
            document = response.json()
            keyset = jwt.PyJWKSet.from_dict(document)
        except (httpx.HTTPError, json.JSONDecodeError, jwt.PyJWKSetError, jwt.InvalidKeyError) as exc:
            log.warning("JWKS fetch failed: %s", type(exc).__name__)
            if self._keys:  # keep serving with the keys we had
                return self._keys
            raise AuthenticationError("signing keys are unavailable", code="AUTH_UNAVAILABLE") from exc
        keys = {key.key_id: key for key in keyset.keys if key.key_id}
        if not keys and len(keyset.keys) == 1:
            keys = {"": keyset.keys[0]}
        log.info("JWKS fetched: %d keys", len(keys))
        return keys


class Authenticator:
    """Checks an ``Authorization`` header and says who the caller is."""

    def __init__(
        self,
        settings: AuthSettings,
        http: httpx.AsyncClient | None = None,
        share_tokens: ShareTokenResolver | None = None,
    ) -> None:
        self._settings = settings
        self._api_keys: dict[str, ApiKeySettings] = {key.sha256: key for key in settings.api_keys}
        self._share_tokens = share_tokens
        self._keys = _KeySource(settings, http) if settings.mode == "jwt" else None

    @property
    def insecure(self) -> bool:
        """True when anyone gets in (``auth: {mode: none}``)."""
        return self._settings.mode == "none"

    def set_share_tokens(self, resolver: ShareTokenResolver) -> None:
        """Accept redeemed share tokens, looked up by ``resolver``."""
        self._share_tokens = resolver

    async def authenticate(self, authorization: str | None) -> Principal:
        """The caller named by an ``Authorization`` header; AuthenticationError when it proves nothing."""
        if not authorization:
            if self.insecure:
                return development_principal()
            raise AuthenticationError("authentication required", code="UNAUTHENTICATED")
        credential = _split(authorization)
        if credential.scheme == "apikey" or credential.value.startswith(API_KEY_PREFIX):
            if credential.scheme not in ("apikey", "bearer"):
                raise AuthenticationError("unsupported authorization scheme", code="BAD_CREDENTIALS")
            return self._api_key(credential.value)
        if credential.scheme != "bearer":
            raise AuthenticationError("unsupported authorization scheme", code="BAD_CREDENTIALS")
        if credential.value.startswith(SHARE_TOKEN_PREFIX):
            if self._share_tokens is None:
                raise AuthenticationError("share tokens are not accepted here", code="BAD_TOKEN")
            return await self._share_tokens(credential.value)
        if self._keys is None:
            if self.insecure:
                return development_principal()
            raise AuthenticationError("bearer tokens are not accepted here", code="BAD_TOKEN")
        return await self._jwt(credential.value)

    def _api_key(self, key: str) -> Principal:
        entry = self._api_keys.get(hash_secret(key))
        if entry is None:
            raise AuthenticationError("unknown API key", code="BAD_API_KEY")
        return Principal(
            subject=f"apikey:{entry.id}",
            kind=PrincipalKind.SERVICE,
            scopes=frozenset(entry.scopes),
            sources=frozenset(entry.sources) if entry.sources is not None else None,
        )

    async def _jwt(self, token: str) -> Principal:
        assert self._keys is not None
        settings = self._settings
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError as exc:
            raise AuthenticationError("the token is not a JWT", code="BAD_TOKEN") from exc
        algorithm = header.get("alg")
        if algorithm not in settings.algorithms:
            raise AuthenticationError("the token's algorithm is not accepted", code="BAD_TOKEN")
        kid = header.get("kid")
        key = await self._keys.key_for(kid if isinstance(kid, str) else None)
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key=key,
                algorithms=list(settings.algorithms),
                audience=settings.audience,
                issuer=settings.issuer,
                leeway=settings.clock_skew_s,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise AuthenticationError("the token has expired", code="TOKEN_EXPIRED") from exc
        except jwt.ImmatureSignatureError as exc:
            raise AuthenticationError("the token is not valid yet", code="TOKEN_NOT_YET_VALID") from exc
        except jwt.InvalidAudienceError as exc:
            raise AuthenticationError("the token is for another audience", code="BAD_AUDIENCE") from exc
        except jwt.InvalidIssuerError as exc:
            raise AuthenticationError("the token is from another issuer", code="BAD_ISSUER") from exc
        except jwt.InvalidSignatureError as exc:
            raise AuthenticationError("the token's signature is invalid", code="BAD_SIGNATURE") from exc
        except jwt.InvalidTokenError as exc:
            raise AuthenticationError("the token is invalid", code="BAD_TOKEN") from exc
        return self._principal(claims)

    def _principal(self, claims: dict[str, Any]) -> Principal:
        raw_scopes = claims.get(self._settings.scope_claim, "")
        if isinstance(raw_scopes, str):
            granted = raw_scopes.split()
        elif isinstance(raw_scopes, list):
            granted = [scope for scope in raw_scopes if isinstance(scope, str)]
        else:
            granted = []
        sources: frozenset[str] | None = None
        if self._settings.sources_claim in claims:
            # Fail closed: a claim that cannot be read must not widen the caller to every source.
            raw_sources = claims[self._settings.sources_claim]
            if not isinstance(raw_sources, list) or not all(isinstance(s, str) for s in raw_sources):
                raise AuthenticationError(
                    f"the token's {self._settings.sources_claim} claim is not a list of strings",
                    code="BAD_TOKEN",
                )
            sources = frozenset(raw_sources)
        try:
            expires_at = dt.datetime.fromtimestamp(int(claims["exp"]), dt.UTC)
        except (OverflowError, OSError, ValueError) as exc:  # e.g. exp 1e20: past any datetime
            raise AuthenticationError("the token's expiry is out of range", code="BAD_TOKEN") from exc
        subject = str(claims["sub"])
        return Principal(
            subject=f"user:{subject}",
            kind=PrincipalKind.USER,
            scopes=known_scopes(granted),
            sources=sources,
            expires_at=expires_at,
        )
