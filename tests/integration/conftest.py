"""Integration fixtures: pacsfed wired to the real peers and the real Elasticsearch node."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest

from federation.settings import Settings, settings_from_mapping


@pytest.fixture
def index_prefix() -> str:
    """A fresh index prefix per test, so document counts never mix."""
    return f"pacsfed-test-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def peer_sources(three_hospitals: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The three real test hospitals as pacsfed sources, hosp-a naming its issuer (HOSP_A); the test's own copies."""
    return [{**s, "issuer": "HOSP_A"} if s["id"] == "hosp-a" else dict(s) for s in three_hospitals]


@pytest.fixture
def make_settings(elasticsearch: Any, index_prefix: str) -> Callable[..., Settings]:
    """Settings for the given sources, caching into the test's own index."""

    def build(sources: list[dict[str, Any]], **cache: Any) -> Settings:
        return settings_from_mapping(
            {
                "cache": {
                    "backend": "elasticsearch",
                    "url": elasticsearch.url,
                    "index_prefix": index_prefix,
                    **cache,
                },
                "sources": sources,
            }
        )

    return build
