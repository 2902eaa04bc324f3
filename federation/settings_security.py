"""Settings for trust: who may ask (auth), what is recorded (audit), share codes, TLS to peers."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

Scope = Literal[
    "history:read", "history:emergency", "share:create", "identity:admin", "audit:read", "metrics:read"
]
ALL_SCOPES: tuple[Scope, ...] = (
    "history:read",
    "history:emergency",
    "share:create",
    "identity:admin",
    "audit:read",
    "metrics:read",
)
_SourceRef = Annotated[str, Field(pattern=r"^[a-z0-9-]+$", min_length=1, max_length=64)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ApiKeySettings(_Strict):
    """A service account (an EHR integration): its key is stored only as a SHA-256 hash."""

    id: Annotated[str, Field(pattern=r"^[A-Za-z0-9._-]{1,64}$")]
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    """Hex SHA-256 of the key; ``pacsfed apikey create`` prints a key and this line."""
    scopes: list[Scope] = ["history:read"]
    sources: list[_SourceRef] | None = None
    """Sources this account may query (all when absent)."""
    description: str = ""


class PageClientSettings(_Strict):
    """The physician's page as a public OpenID Connect client of ``auth.issuer`` (code flow with PKCE)."""

    client_id: Annotated[str, Field(pattern=r"^[\x21-\x7e]{1,256}$")]
    """The page's client at the identity provider: public (no secret), redirect URI the page's origin + ``/``."""
    scope: Annotated[str, Field(pattern=r"^[\x21-\x7e]+( [\x21-\x7e]+)*$", max_length=1024)] = (
        "openid history:read"
    )
    """Scopes the page asks for (RFC 6749 3.3, space-separated); must include ``openid``."""

    @model_validator(mode="after")
    def _openid(self) -> PageClientSettings:
        if "openid" not in self.scope.split(" "):
            raise ValueError("scope must include openid (the page signs in with OpenID Connect)")
        return self


class AuthSettings(_Strict):
    """How callers prove who they are: OIDC bearer JWTs and/or API keys."""

    mode: Literal["jwt", "api_key", "none"] = "none"
    """``jwt``: OIDC bearer tokens (and API keys); ``api_key``: service accounts' API keys only (an EHR
    integration without an identity provider); ``none`` lets everyone in as a development user, and
    ``pacsfed serve`` refuses it without --insecure-dev."""
    issuer: str | None = None
    audience: str | None = None
    jwks_url: Annotated[str, Field(pattern=r"^https?://")] | None = None
    public_key_file: Path | None = None
    algorithms: list[Literal["RS256", "RS384", "RS512", "PS256", "ES256", "ES384"]] = ["RS256", "ES256"]
    clock_skew_s: Annotated[float, Field(ge=0, le=300)] = 30.0
    jwks_cache_s: Annotated[float, Field(gt=0, le=86_400)] = 600.0
    """How long fetched signing keys are trusted before they are fetched again."""
    jwks_min_refetch_s: Annotated[float, Field(ge=0, le=3600)] = 30.0
    """An unknown key id triggers a new fetch at most this often (key rotation without a fetch storm)."""
    scope_claim: str = "scope"
    sources_claim: str = "pacsfed_sources"
    """Optional claim listing the sources a user may query (all when absent)."""
    api_keys: list[ApiKeySettings] = []
    emergency_window_s: Annotated[float, Field(gt=0, le=7 * 24 * 3600)] = 4 * 3600.0
    """A break-the-glass access to one patient lasts this long, then needs a new reason."""
    page: PageClientSettings | None = None
    """The physician's page signs in against ``issuer`` with this client (``mode: jwt`` only)."""

    @model_validator(mode="after")
    def _jwt_complete(self) -> AuthSettings:
        if self.mode == "jwt":
            missing = [key for key in ("issuer", "audience") if not getattr(self, key)]
            if missing:
                raise ValueError(f"mode jwt needs {' and '.join(missing)}")
            if (self.jwks_url is None) == (self.public_key_file is None):
                raise ValueError("mode jwt needs exactly one of jwks_url and public_key_file")
        if self.page is not None:
            if self.mode != "jwt":
                raise ValueError("page (the page's sign-in) needs mode jwt")
            if not (self.issuer or "").startswith(("https://", "http://")):
                raise ValueError("page needs issuer to be the identity provider's URL (OIDC discovery)")
        if self.mode == "api_key" and not self.api_keys:
            raise ValueError("mode api_key needs at least one entry in api_keys (pacsfed apikey create)")
        ids = [key.id for key in self.api_keys]
        if len(ids) != len(set(ids)):
            raise ValueError("api key ids must be unique")
        return self


class SyslogSettings(_Strict):
    """An audit repository receiving DICOM audit messages (PS3.15 A.5) over syslog (RFC 5424)."""

    host: str
    port: Annotated[int, Field(ge=1, le=65535)] = 6514
    transport: Literal["tls", "tcp", "udp"] = "tls"
    """``tls`` is RFC 5425 (octet-counted framing); ``udp`` is RFC 5426."""
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    audit_source_id: str = "pacsfed"
    app_name: str = "pacsfed"


class AuditSettings(_Strict):
    """The audit trail: a local fsync'd journal first, then Elasticsearch, then syslog."""

    journal_dir: Path = Path("pacsfed-audit")
    retention_days: Annotated[int, Field(ge=1, le=36_500)] = 3653
    """Audit records are kept this long in Elasticsearch (monthly indices), independently of the cache."""
    ship_interval_s: Annotated[float, Field(gt=0, le=3600)] = 1.0
    journal_keep_days: Annotated[int, Field(ge=1, le=36_500)] = 30
    """Local journal segments every durable sink has are kept (compressed) this long, then deleted."""
    syslog: SyslogSettings | None = None


class ShareSettings(_Strict):
    """Share codes: short-lived, read-only access to one patient's history or to chosen studies."""

    default_ttl_s: Annotated[int, Field(ge=60, le=86_400)] = 3600
    max_ttl_s: Annotated[int, Field(ge=60, le=86_400)] = 86_400
    """A hard cap: a share code never lives longer than 24 hours, whatever is asked or configured."""
    max_failures: Annotated[int, Field(ge=1, le=1000)] = 10
    """Failed redemptions (per client, per code prefix) before a lock-out."""
    lockout_s: Annotated[int, Field(ge=1, le=86_400)] = 900


class GraphqlLimits(_Strict):
    """Bounds on what one GraphQL request may ask."""

    max_body_bytes: Annotated[int, Field(ge=1024, le=10 * 1024 * 1024)] = 64 * 1024
    max_tokens: Annotated[int, Field(ge=50, le=100_000)] = 2000
    max_depth: Annotated[int, Field(ge=3, le=100)] = 12
    max_aliases: Annotated[int, Field(ge=1, le=1000)] = 15
    max_fields: Annotated[int, Field(ge=10, le=10_000)] = 300


class TlsSettings(_Strict):
    """TLS to one peer: whom to trust, and optionally our client certificate (mutual TLS)."""

    ca_file: Path | None = None
    """PEM bundle of trusted CAs; the system store when absent."""
    cert_file: Path | None = None
    key_file: Path | None = None
    server_hostname: str | None = None
    """Name expected in the peer's certificate (defaults to the host connected to)."""
    min_version: Literal["1.2", "1.3"] = "1.2"
    verify: bool = True

    @model_validator(mode="after")
    def _pair(self) -> TlsSettings:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together")
        return self


class UserIdentitySettings(_Strict):
    """DICOM User Identity negotiation (PS3.7 D.3.3.7); only sent over TLS."""

    type: Literal["username", "username_password", "jwt", "saml"]
    primary: SecretStr
    secondary: SecretStr | None = None
    positive_response: bool = False

    @model_validator(mode="after")
    def _password(self) -> UserIdentitySettings:
        if (self.type == "username_password") != (self.secondary is not None):
            raise ValueError("secondary (the password) goes with type username_password only")
        return self


class OAuth2ClientCredentials(_Strict):
    """OAuth 2.0 client-credentials grant (RFC 6749 4.4): a token fetched and renewed for us."""

    type: Literal["oauth2"]
    token_url: Annotated[str, Field(pattern=r"^https?://")]
    client_id: str
    client_secret: SecretStr
    scope: str | None = None
