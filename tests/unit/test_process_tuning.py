"""The garbage collector is tuned only by the program that owns the process (``pacsfed serve``)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest
from asgi_lifespan import LifespanManager

from federation.settings import settings_from_mapping
from pacsfed.app import create_app
from tests.dev_app import dev_settings

SETTINGS = {"cache": {"backend": "memory"}, "sources": [], "auth": {"mode": "none"}}


@pytest.fixture
def collector() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


@pytest.mark.parametrize("owns_process", [False, True])
async def test_the_collector_is_tuned_only_when_the_app_owns_the_process(
    collector: None, owns_process: bool
) -> None:
    before = gc.get_threshold()
    app = create_app(
        dev_settings(settings_from_mapping(SETTINGS)), insecure_dev=True, owns_process=owns_process
    )
    async with LifespanManager(app):
        if owns_process:
            assert gc.get_freeze_count() > 0  # the start-up heap is out of the collector's sight
            assert gc.get_threshold()[0] > before[0]
        else:
            assert gc.get_threshold() == before
