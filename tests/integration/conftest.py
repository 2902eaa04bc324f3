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
def peer_sources(orthanc_a: Any, dcmqrscp_b: Any, orthanc_c: Any) -> list[dict[str, Any]]:
    """The three real test hospitals as pacsfed sources."""
    return [
        {
            "id": "hosp-a",
            "name": "Hôpital A",
            "kind": "dimse",
            "host": orthanc_a.host,
            "port": orthanc_a.dicom_port,
            "called_ae": orthanc_a.aet,
            "calling_ae": "PACSFED",
            "issuer": "HOSP_A",
        },
        {
            "id": "hosp-b",
            "name": "Ziekenhuis B",
            "kind": "dimse",
            "host": dcmqrscp_b.host,
            "port": dcmqrscp_b.port,
            "called_ae": dcmqrscp_b.aet,
            "calling_ae": "PACSFED",
        },
        {"id": "hosp-c", "name": "Clinique C", "kind": "dicomweb", "url": orthanc_c.dicomweb_url},
    ]


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
