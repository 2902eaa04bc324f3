"""Authentication: every way a credential can be wrong is refused with its own code."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from federation.access.auth import Authenticator, new_api_key
from federation.access.principals import PrincipalKind
from federation.errors import AuthenticationError
from federation.settings_security import ApiKeySettings, AuthSettings

ISSUER = "https://idp.example/realms/er"
AUDIENCE = "pacsfed"


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def other_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, path: Path) -> Path:
    path.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return path


def _token(key: Any, algorithm: str = "RS256", kid: str | None = None, **claims: Any) -> str:
    now = dt.datetime.now(dt.UTC)
    body: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "dr-house",
        "exp": now + dt.timedelta(minutes=5),
        "iat": now,
        "scope": "openid history:read audit:read",
    }
    body.update(claims)
    body = {k: v for k, v in body.items() if v is not None}
    return jwt.encode(body, key, algorithm=algorithm, headers={"kid": kid} if kid else None)


def _pem_auth(tmp_path: Path, key: Any, **overrides: Any) -> Authenticator:
    settings = AuthSettings(
        mode="jwt",
        issuer=ISSUER,
        audience=AUDIENCE,
        public_key_file=_pem(key, tmp_path / "k.pem"),
        **overrides,
    )
    return Authenticator(settings)


async def test_a_valid_token_gives_its_subject_and_known_scopes(tmp_path: Path, rsa_key: Any) -> None:
    auth = _pem_auth(tmp_path, rsa_key)
    principal = await auth.authenticate(f"Bearer {_token(rsa_key, pacsfed_sources=['hosp-a'])}")
    assert principal.subject == "user:dr-house"
    assert principal.kind is PrincipalKind.USER
    assert principal.scopes == {"history:read", "audit:read"}  # "openid" is not ours
    assert principal.sources == {"hosp-a"}


async def test_es256_tokens_are_accepted(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    auth = _pem_auth(tmp_path, key)
    principal = await auth.authenticate(f"Bearer {_token(key, algorithm='ES256')}")
    assert principal.subject == "user:dr-house"


@pytest.mark.parametrize(
    ("claims", "code"),
    [
        ({"exp": -300}, "TOKEN_EXPIRED"),
        ({"nbf": 300}, "TOKEN_NOT_YET_VALID"),
        ({"aud": "another-service"}, "BAD_AUDIENCE"),
        ({"iss": "https://evil.example"}, "BAD_ISSUER"),
        ({"exp": None}, "BAD_TOKEN"),
        ({"sub": None}, "BAD_TOKEN"),
        ({"exp": 1e20}, "BAD_TOKEN"),  # past any datetime: a 401, not an OverflowError
        # A sources claim that cannot be read fails closed (it must not mean "every source").
        ({"pacsfed_sources": "hosp-a"}, "BAD_TOKEN"),
        ({"pacsfed_sources": ["hosp-a", 7]}, "BAD_TOKEN"),
        ({"pacsfed_sources": {"hosp-a": True}}, "BAD_TOKEN"),
        ({"pacsfed_sources": False}, "BAD_TOKEN"),
    ],
)
async def test_bad_claims_are_refused(
    tmp_path: Path, rsa_key: Any, claims: dict[str, Any], code: str
) -> None:
    now = dt.datetime.now(dt.UTC)
    claims = {  # times are offsets in seconds from now, evaluated when the test runs
        k: now + dt.timedelta(seconds=v) if k in ("exp", "nbf") and isinstance(v, int) else v
        for k, v in claims.items()
    }
    auth = _pem_auth(tmp_path, rsa_key)
    with pytest.raises(AuthenticationError) as caught:
        await auth.authenticate(f"Bearer {_token(rsa_key, **claims)}")
    assert caught.value.code == code
    assert caught.value.status == 401


async def test_the_clock_skew_is_small_but_forgiving(tmp_path: Path, rsa_key: Any) -> None:
    auth = _pem_auth(tmp_path, rsa_key, clock_skew_s=30)
    just_expired = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=10)
    assert (await auth.authenticate(f"Bearer {_token(rsa_key, exp=just_expired)}")).subject == "user:dr-house"


async def test_a_token_signed_by_another_key_is_refused(tmp_path: Path, rsa_key: Any, other_key: Any) -> None:
    auth = _pem_auth(tmp_path, rsa_key)
    with pytest.raises(AuthenticationError) as caught:
        await auth.authenticate(f"Bearer {_token(other_key)}")
    assert caught.value.code == "BAD_SIGNATURE"


async def test_unsigned_and_symmetric_tokens_are_refused(tmp_path: Path, rsa_key: Any) -> None:
    auth = _pem_auth(tmp_path, rsa_key)
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "x", "exp": 9999999999}
    forged = jwt.encode(claims, "s" * 64, algorithm="HS256")
    unsigned = jwt.encode(claims, None, algorithm="none")
    for token in (forged, unsigned, "not-a-jwt", "a.b.c"):
        with pytest.raises(AuthenticationError):
            await auth.authenticate(f"Bearer {token}")


async def test_missing_and_malformed_headers_are_refused(tmp_path: Path, rsa_key: Any) -> None:
    auth = _pem_auth(tmp_path, rsa_key)
    for header in (None, "", "Bearer", "Basic dXNlcjpwdw==", "Bearer " + "x" * 20_000):
        with pytest.raises(AuthenticationError):
            await auth.authenticate(header)


async def test_jwks_keys_are_fetched_cached_and_refetched_on_rotation(rsa_key: Any, other_key: Any) -> None:
    published: list[Any] = [(rsa_key, "k1")]
    fetches = 0

    def jwks(_request: httpx.Request) -> httpx.Response:
        nonlocal fetches
        fetches += 1
        keys = []
        for key, kid in published:
            jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
            keys.append({**jwk, "kid": kid, "use": "sig", "alg": "RS256"})
        return httpx.Response(200, json={"keys": keys})

    settings = AuthSettings(
        mode="jwt",
        issuer=ISSUER,
        audience=AUDIENCE,
        jwks_url="https://idp.example/jwks",
        jwks_min_refetch_s=0,
    )
    async with httpx.AsyncClient(transport=httpx.MockTransport(jwks)) as http:
        auth = Authenticator(settings, http)
        for _ in range(3):
            await auth.authenticate(f"Bearer {_token(rsa_key, kid='k1')}")
        assert fetches == 1
        published.append((other_key, "k2"))  # the identity provider rotates its key
        principal = await auth.authenticate(f"Bearer {_token(other_key, kid='k2')}")
        assert principal.subject == "user:dr-house"
        assert fetches == 2
        with pytest.raises(AuthenticationError) as caught:
            await auth.authenticate(f"Bearer {_token(other_key, kid='k-unknown')}")
        assert caught.value.code == "BAD_TOKEN"


async def test_api_keys_are_matched_by_hash(tmp_path: Path) -> None:
    key, digest = new_api_key("ehr")
    settings = AuthSettings(
        mode="none",
        api_keys=[ApiKeySettings(id="ehr", sha256=digest, scopes=["history:read"], sources=["hosp-a"])],
    )
    auth = Authenticator(settings)
    for header in (f"ApiKey {key}", f"Bearer {key}"):
        principal = await auth.authenticate(header)
        assert principal.subject == "apikey:ehr"
        assert principal.kind is PrincipalKind.SERVICE
        assert principal.sources == {"hosp-a"}
    with pytest.raises(AuthenticationError) as caught:
        await auth.authenticate(f"ApiKey {key}x")
    assert caught.value.code == "BAD_API_KEY"
    assert key not in repr(settings)


async def test_mode_none_lets_everyone_in_as_the_development_user() -> None:
    principal = await Authenticator(AuthSettings(mode="none")).authenticate(None)
    assert principal.kind is PrincipalKind.DEVELOPMENT
    assert "history:read" in principal.scopes


async def test_mode_api_key_takes_api_keys_only(tmp_path: Path, rsa_key: Any) -> None:
    key, digest = new_api_key("ehr")
    auth = Authenticator(
        AuthSettings(
            mode="api_key", api_keys=[ApiKeySettings(id="ehr", sha256=digest, scopes=["history:read"])]
        )
    )
    assert not auth.insecure
    assert (await auth.authenticate(f"ApiKey {key}")).subject == "apikey:ehr"
    for header, code in ((None, "UNAUTHENTICATED"), (f"Bearer {_token(rsa_key)}", "BAD_TOKEN")):
        with pytest.raises(AuthenticationError) as caught:
            await auth.authenticate(header)
        assert caught.value.code == code


def test_mode_api_key_needs_a_key() -> None:
    with pytest.raises(ValueError, match="at least one entry in api_keys"):
        AuthSettings(mode="api_key")
