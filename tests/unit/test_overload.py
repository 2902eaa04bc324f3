"""pacsfed's own limits: breaker transitions told once each, admission past max_pending_queries, quiet logs."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
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


async def test_while_the_event_loop_lags_fewer_queries_are_admitted_and_an_empty_moment_keeps_it_so() -> None:
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
    assert watch.limit._timer is None  # no query in progress: nothing runs
    assert engine.load_counters()["admission_limit"] == lowered  # one empty moment gives nothing back
    with contextlib.ExitStack() as held:  # the refused callers, back together: the same places
        for _ in range(lowered):
            held.enter_context(engine.admitted())
        with pytest.raises(Overloaded), engine.admitted():
            pass


def _watch(maximum: int, clock: Callable[[], float] = time.monotonic) -> Any:
    """An engine's own overload watch, its admission limit read from ``clock``."""
    watch = FederationEngine([], None, max_pending_queries=maximum)._overload
    watch.limit = type(watch.limit)(maximum, clock=clock)
    return watch


def _cut_to_eight(limit: Any) -> None:
    """Cut ``limit`` as a second of a loop running 200 ms late does, down to its floor of 8 places."""
    limit.lag_s = 0.2
    while limit.value > 8:
        limit._adjust()


def test_a_lowered_limit_comes_back_with_idle_time_after_the_longest_retry_after() -> None:
    clock = Clock()
    limit = _watch(200, clock).limit
    _cut_to_eight(limit)
    limit.idle()
    clock.now = 9.9  # every refused caller is told to come back within 10 s: the limit waits for them
    assert limit.value == 8
    clock.now = 13.5  # then each idle second gives back a tenth
    assert limit.value == 8 + 3 * 20
    limit.busy()  # no running loop: nothing sampled, the idle time's due kept
    limit.idle()
    clock.now = 23.4
    assert limit.value == 68  # idle again from 13.5 s: the 10 s wait starts over
    clock.now = 27.0
    assert limit.value == 68 + 3 * 20
    assert _watch(200, clock).limit.value == 200
    clock.now = 200
    assert limit.value == 200


def test_a_moderate_lag_gives_back_places_slowly() -> None:
    limit = _watch(200).limit
    _cut_to_eight(limit)
    limit.lag_s = 0.05  # between the lag that cuts (100 ms) and the one that grows fast (25 ms)
    limit._adjust()
    assert limit.value == 8 + 5  # a fortieth of the maximum a second
    limit.lag_s = 0.01
    limit._adjust()
    assert limit.value == 13 + 20


def test_a_lowered_limit_with_few_pending_queries_defers_no_refresh() -> None:
    watch = _watch(40)
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
