"""Fixtures of the FHIR connector's tests: the FHIR endpoint they serve, a forward proxy, and sources."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

_HERE = Path(__file__).resolve().parent
if str(_HERE) not in sys.path:  # the endpoint and the proxy are importable under every --import-mode
    sys.path.insert(0, str(_HERE))

from fhir_endpoint import FhirEndpoint  # noqa: E402
from forward_proxy import ForwardProxy  # noqa: E402


@pytest.fixture
def fhir() -> Iterator[FhirEndpoint]:
    """A started, empty FHIR endpoint."""
    endpoint = FhirEndpoint().start()
    yield endpoint
    endpoint.stop()


@pytest.fixture
def proxy() -> Iterator[ForwardProxy]:
    """A started forward proxy."""
    started = ForwardProxy().start()
    yield started
    started.stop()
