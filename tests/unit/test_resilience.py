"""The circuit breaker's states, on a clock the test controls; and the engine skipping an open source."""

from __future__ import annotations

from federation.engine.resilience import CircuitBreaker, CircuitState


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_opens_after_consecutive_failures_and_probes_after_the_cool_down() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failures=3, reset_s=30, clock=clock)
    for _ in range(2):
        assert breaker.allow()
        breaker.record_failure()
    assert breaker.state is CircuitState.CLOSED
    breaker.record_failure()
    assert breaker.state is CircuitState.OPEN
    assert not breaker.allow()
    assert breaker.retry_in_s() == 30
    clock.now = 30
    assert breaker.state is CircuitState.HALF_OPEN
    assert breaker.allow()  # the one probe
    assert not breaker.allow()  # no second probe while the first is out
    breaker.record_failure()
    assert breaker.state is CircuitState.OPEN  # a failed probe opens it again at once
    clock.now = 60
    assert breaker.allow()
    breaker.record_success()
    assert breaker.state is CircuitState.CLOSED
    assert breaker.allow()


def test_success_resets_the_count() -> None:
    breaker = CircuitBreaker(failures=2, reset_s=1, clock=Clock())
    breaker.record_failure()
    breaker.record_success()
    breaker.record_failure()
    assert breaker.state is CircuitState.CLOSED


def test_a_probe_that_never_reports_does_not_wedge_the_breaker() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failures=1, reset_s=10, clock=clock)
    breaker.record_failure()
    clock.now = 10
    assert breaker.allow()
    clock.now = 20
    assert breaker.allow()
