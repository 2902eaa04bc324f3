"""Fixtures for tests that connect as outsiders do: a signer for JWTs and the settings of a served pacsfed."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pacsfed.demo.signer import DemoSigner


@pytest.fixture
def signer(tmp_path: Path) -> DemoSigner:
    """Signs tokens that the served pacsfed accepts (``auth`` from ``signer.auth_config()``)."""
    return DemoSigner(tmp_path / "keys")


@pytest.fixture
def serve_config(signer: DemoSigner) -> Callable[..., dict[str, Any]]:
    """A production-mode config for ``pacsfed serve``: JWT auth, memory cache, the given sources."""

    def build(sources: list[dict[str, Any]], **sections: Any) -> dict[str, Any]:
        config: dict[str, Any] = {
            "cache": {"backend": "memory"},
            "sources": sources,
            "auth": signer.auth_config(),
            "server": {"mode": "production"},
        }
        for key, value in sections.items():
            config[key] = {**config.get(key, {}), **value}
        return config

    return build
