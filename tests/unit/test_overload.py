"""pacsfed's own limits: breaker transitions told once each, admission past max_pending_queries, quiet logs."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import pytest

from federation.engine import CircuitBreaker, CircuitState, FederationEngine
from federation.errors import Overloaded
from pacsfed.cli import main


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_every_breaker_transition_is_told_once() -> None:
    clock = Clock()
    told: list[tuple[CircuitState, CircuitState, int]] = []
    breaker = CircuitBreaker(failures=2, reset_s=30, clock=clock, on_change=lambda *t: told.append(t))
    breaker.record_failure()
    breaker.record_failure()
    breaker.record_failure()  # already open: no second report
    clock.now = 30
    assert breaker.allow()  # the probe: half-open
    breaker.record_failure()  # the probe failed: open again
    clock.now = 60
    assert breaker.allow()
    breaker.record_success()
    closed, opened, half = CircuitState.CLOSED, CircuitState.OPEN, CircuitState.HALF_OPEN
    assert [(before, after) for before, after, _ in told] == [
        (closed, opened),
        (opened, half),
        (half, opened),
        (opened, half),
        (half, closed),
    ]
    assert told[0][2] == 2


def test_a_query_past_max_pending_queries_is_refused_at_once_and_counted() -> None:
    engine = FederationEngine([], None, max_pending_queries=2)
    with engine.admitted(), engine.admitted():
        assert any("2 of 2 pending" in reason for reason in engine.saturation())
        with pytest.raises(Overloaded) as refused, engine.admitted():
            pass
        assert refused.value.code == "OVERLOADED" and refused.value.retry_after_s >= 1
    with engine.admitted():  # places come back
        pass
    counters = engine.load_counters()
    assert counters["pending_queries"] == 0 and counters["queries_refused"] == 1
    assert any("OVERLOADED" in reason for reason in engine.saturation())


@pytest.mark.parametrize(("level", "quiet"), [("INFO", True), ("DEBUG", False)])
def test_elasticsearch_requests_are_logged_only_when_debugging(level: str, quiet: bool) -> None:
    logger = logging.getLogger("elastic_transport")
    before = logger.level
    try:
        logger.setLevel(logging.NOTSET)
        main(["--log-level", level, "schema"])
        assert (logger.level == logging.WARNING) is quiet
    finally:
        logger.setLevel(before)


def test_retry_after_is_a_second_before_any_query_has_finished() -> None:
    engine = FederationEngine([], None, max_pending_queries=1)
    with engine.admitted(), pytest.raises(Overloaded) as quick, engine.admitted():
        pass
    assert quick.value.retry_after_s == 1  # no query finished yet: come back in a second


def test_a_moments_wait_for_a_slot_is_not_saturation_but_a_queue_is(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    monkeypatch.setattr(time, "monotonic", clock)
    watch = FederationEngine([], None)._overload  # the engine's own counters, driven by hand
    with watch.waiting_for_slot("hosp-a"):
        with watch.waiting_for_slot("hosp-a"):
            clock.now += 0.1  # a few requests overlapping for a moment, as with only a few clients
            assert watch.saturation() == []
        clock.now += 1.0  # still one waiting: requests have queued without a break
        (reason,) = watch.saturation()
        assert "hosp-a" in reason
    assert watch.saturation() == []
    with watch.waiting_for_slot("hosp-a"):  # a new wait starts its own count
        assert watch.saturation() == []


async def _lagging(seconds: float, block_s: float) -> None:
    """Keep the event loop busy for ``seconds``: each step holds it ``block_s`` (pacsfed short of CPU)."""
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        time.sleep(block_s)
        await asyncio.sleep(0)


async def test_while_the_event_loop_lags_fewer_queries_are_admitted_and_all_again_once_idle() -> None:
    engine = FederationEngine([], None, max_pending_queries=40)
    watch = engine._overload
    with engine.admitted():
        await _lagging(2.5, 0.3)
        lowered = engine.load_counters()["admission_limit"]
        assert isinstance(lowered, int) and 8 <= lowered < 40
        # One query pending: a lowered limit alone is not saturation (no refresh deferred, /readyz ready).
        assert engine.saturation() == [] and not watch.saturated
        with contextlib.ExitStack() as held:
            for _ in range(lowered - 1):  # one place is this query's
                held.enter_context(engine.admitted())
            (reason,) = engine.saturation()
            assert f"{lowered} of {lowered} pending" in reason and "lowered from 40" in reason
            with pytest.raises(Overloaded), engine.admitted():
                pass
    assert engine.load_counters()["admission_limit"] == 40  # no query in progress: whole again
    with contextlib.ExitStack() as held:
        for _ in range(40):
            held.enter_context(engine.admitted())


def _cut_to_eight(limit: Any) -> None:
    """Cut ``limit`` as a second of a loop running 200 ms late does, down to its floor of 8 places."""
    limit.lag_s = 0.2
    while limit.value > 8:
        limit._adjust()


def test_a_lowered_limit_with_few_pending_queries_defers_no_refresh() -> None:
    watch = FederationEngine([], None, max_pending_queries=40)._overload
    _cut_to_eight(watch.limit)
    with watch.admitted(), watch.admitted():
        assert not watch.saturated and watch.saturation() == []
        with watch.admitted(), watch.admitted(), watch.admitted(), watch.admitted():
            assert watch.saturated  # six of eight: near the limit in use
            assert "6 of 8 pending" in watch.saturation()[0]


async def test_a_slow_hospital_never_lowers_the_admission_limit() -> None:
    engine = FederationEngine([], None, max_pending_queries=40)
    with engine.admitted():
        await asyncio.sleep(1.5)  # waiting on a hospital: the loop is idle, on time
        assert engine.load_counters()["admission_limit"] == 40
