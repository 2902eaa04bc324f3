"""The app under benchmark: authentication off, since the benchmarks measure the query path."""

from __future__ import annotations

import inspect
from typing import Any

from federation.app import create_app
from federation.settings import Settings


def bench_app(settings: Settings) -> Any:
    """``create_app`` as ``pacsfed serve --insecure-dev`` makes it (where this version of it can)."""
    parameters = inspect.signature(create_app).parameters
    options = {name: True for name in ("insecure_dev", "owns_process") if name in parameters}
    return create_app(settings, **options)
