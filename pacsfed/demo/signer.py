"""The demo's own token issuer: a throw-away ES256 key, its public PEM, and ready-to-use tokens."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from federation.settings_security import ALL_SCOPES

DEMO_ISSUER = "https://pacsfed-demo.invalid/issuer"
DEMO_AUDIENCE = "pacsfed"


class DemoSigner:
    """Signs demo tokens; only its public key is written to disk (for ``auth.public_key_file``)."""

    def __init__(self, directory: Path) -> None:
        self._key = ec.generate_private_key(ec.SECP256R1())
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.public_key_file = directory / "demo-signing-key.pub.pem"
        self.public_key_file.write_bytes(
            self._key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        os.chmod(self.public_key_file, 0o644)

    def auth_config(self) -> dict[str, object]:
        """The ``auth:`` settings that accept this signer's tokens."""
        return {
            "mode": "jwt",
            "issuer": DEMO_ISSUER,
            "audience": DEMO_AUDIENCE,
            "public_key_file": str(self.public_key_file),
            "algorithms": ["ES256"],
        }

    def token(
        self,
        subject: str = "demo-physician",
        scopes: tuple[str, ...] = ALL_SCOPES,
        lifetime: dt.timedelta = dt.timedelta(hours=12),
        **claims: object,
    ) -> str:
        """A signed token for ``subject`` with ``scopes``."""
        now = dt.datetime.now(dt.UTC)
        body: dict[str, object] = {
            "iss": DEMO_ISSUER,
            "aud": DEMO_AUDIENCE,
            "sub": subject,
            "iat": now,
            "nbf": now,
            "exp": now + lifetime,
            "scope": " ".join(scopes),
            **claims,
        }
        return jwt.encode(body, self._key, algorithm="ES256", headers={"kid": "demo"})
