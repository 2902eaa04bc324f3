"""The settings of a DIMSE source (its ``settings_model``): where to associate, timeouts, TLS, pooling."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from federation.settings import SourceSettings
from federation.settings_security import TlsSettings, UserIdentitySettings

__all__ = ["AeTitle", "DimseSourceSettings"]

AeTitle = Annotated[
    str, Field(pattern=r"^[\x21-\x5b\x5d-\x7e]([\x20-\x5b\x5d-\x7e]{0,14}[\x21-\x5b\x5d-\x7e])?$")
]


class DimseSourceSettings(SourceSettings):
    """A PACS queried with DIMSE C-FIND (PS3.4 C.4.1)."""

    kind: Literal["dimse"]
    host: str
    port: Annotated[int, Field(ge=1, le=65535)]
    called_ae: AeTitle
    calling_ae: AeTitle = "PACSFED"
    connect_timeout_s: Annotated[float, Field(gt=0, le=60)] = 3.0
    acse_timeout_s: Annotated[float, Field(gt=0, le=60)] = 5.0
    dimse_timeout_s: Annotated[float, Field(gt=0, le=300)] = 10.0
    network_timeout_s: Annotated[float, Field(gt=0, le=300)] = 10.0
    query_charset: str | None = "ISO_IR 192"
    """SpecificCharacterSet sent in the query, asking the peer to answer in it; null sends none."""
    max_results: Annotated[int, Field(ge=1, le=100_000)] = 1000
    association_pool: Annotated[int, Field(ge=0, le=16)] = 2
    """Open associations kept for reuse (0: a new association per query)."""
    association_idle_s: Annotated[float, Field(gt=0, le=600)] = 10.0
    """A pooled association unused this long is released."""
    tls: TlsSettings | None = None
    """DICOM TLS (PS3.15 B.12, TLS 1.2 or later) when present."""
    user_identity: UserIdentitySettings | None = None

    @model_validator(mode="after")
    def _name_keys(self) -> DimseSourceSettings:
        if self.non_ascii_name_keys is None:
            self.non_ascii_name_keys = self.query_charset is not None
        return self

    @model_validator(mode="after")
    def _identity_over_tls(self) -> DimseSourceSettings:
        if self.user_identity is not None and self.tls is None:
            raise ValueError("user_identity is only sent over TLS: configure tls too")
        return self
