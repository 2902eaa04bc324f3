"""A sick source must not slow the others down: circuit breaking against a real fan-out."""

from __future__ import annotations

import time
from typing import Any

import pytest
from fakes import SilentListener

from integration.gql import history, running_app, statuses

pytestmark = pytest.mark.integration


async def test_a_hung_source_is_skipped_once_its_circuit_opens(
    peer_sources: list[dict[str, Any]], make_settings: Any
) -> None:
    with SilentListener() as silent:
        hung = {
            "id": "hung",
            "kind": "dimse",
            "host": "127.0.0.1",
            "port": silent.port,
            "called_ae": "HUNG",
            "circuit": {"failures": 2, "reset_s": 60},
        }
        async with running_app(make_settings([*peer_sources, hung])) as client:
            for _ in range(2):
                burned = await history(client, "PA-001", deadlineMs=1000, freshness="LIVE")
                assert statuses(burned)["hung"] == "TIMEOUT"
            # A roomy deadline: real peers under CI load may take over a second, and an
            # open circuit must answer well before the deadline that a hung source would cost.
            started = time.monotonic()
            skipped = await history(client, "PA-001", deadlineMs=8000, freshness="LIVE")
            elapsed = time.monotonic() - started
            ready = (await client.get("/readyz")).json()
    assert statuses(skipped) == {"hosp-a": "OK", "hosp-b": "OK", "hosp-c": "OK", "hung": "SKIPPED"}
    assert elapsed < 4.0, f"an open circuit must not cost the deadline ({elapsed:.2f} s)"
    assert len(skipped["exams"]) == 3
    assert ready["circuits"]["hung"] == "OPEN"
