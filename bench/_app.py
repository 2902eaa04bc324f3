"""The app under benchmark: authentication off, since the benchmarks measure the query path."""

from __future__ import annotations

import inspect
from typing import Any

from federation.app import create_app
from federation.settings import Settings


def bench_app(settings: Settings) -> Any:
    """``create_app`` with ``auth: none`` allowed (``--insecure-dev``), where the app asks for it."""
    if "insecure_dev" in inspect.signature(create_app).parameters:
        return create_app(settings, insecure_dev=True)
    return create_app(settings)
