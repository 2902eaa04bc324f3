"""The settings of a DICOMweb source (its ``settings_model``): base URL, authentication, paging, TLS."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from federation.settings import SourceSettings
from federation.settings_security import OAuth2ClientCredentials, TlsSettings

__all__ = ["BasicAuth", "BearerAuth", "DicomwebSourceSettings"]


class BasicAuth(BaseModel):
    """HTTP basic credentials."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["basic"]
    username: str
    password: SecretStr


class BearerAuth(BaseModel):
    """A static bearer token."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["bearer"]
    token: SecretStr


class DicomwebSourceSettings(SourceSettings):
    """A PACS queried with DICOMweb QIDO-RS (PS3.18 10.6)."""

    kind: Literal["dicomweb"]
    url: Annotated[str, Field(pattern=r"^https?://")]
    auth: Annotated[BasicAuth | BearerAuth | OAuth2ClientCredentials, Field(discriminator="type")] | None = (
        None
    )
    page_size: Annotated[int, Field(ge=1, le=10_000)] = 100
    max_results: Annotated[int, Field(ge=1, le=100_000)] = 1000
    timeout_s: Annotated[float, Field(gt=0, le=300)] = 10.0
    verify_tls: bool = True
    tls: TlsSettings | None = None
    """CA bundle, client certificate (mutual TLS), minimum version; ``verify_tls: false`` still wins."""
    retrieve_first_byte_s: Annotated[float, Field(gt=0, le=300)] = 30.0
    """WADO-RS through pacsfed: the source's answer (status and headers) must come within this."""
    retrieve_stall_s: Annotated[float, Field(gt=0, le=300)] = 30.0
    """WADO-RS through pacsfed: the longest wait for the next chunk of a body before it is given up."""
    max_retrievals: Annotated[int, Field(ge=1, le=256)] = 16
    """WADO-RS retrievals through pacsfed in flight to this source at most: slots of their own, apart
    from ``max_concurrency``, so that a viewer loading a study never takes a query's place."""
    http2: bool = True
    """Offer HTTP/2 (ALPN) on ``https://``; HTTP/1.1 is used when the peer does not take it."""
    proxy: SecretStr | None = None
    """An HTTP proxy (``http://host:port``, credentials allowed: hence secret) every request of this
    source goes through, the OAuth2 token requests too; ``https://`` sources are reached by a
    CONNECT tunnel. Proxied sources are asked through httpx rather than the lean HTTP/1.1 pool."""

    @field_validator("proxy")
    @classmethod
    def _proxy_url(cls, proxy: SecretStr | None) -> SecretStr | None:
        if proxy is not None and not proxy.get_secret_value().startswith(("http://", "https://")):
            raise ValueError("proxy must be an http:// or https:// URL")
        return proxy

    @model_validator(mode="after")
    def _name_keys(self) -> DicomwebSourceSettings:
        if self.non_ascii_name_keys is None:
            self.non_ascii_name_keys = True
        return self
