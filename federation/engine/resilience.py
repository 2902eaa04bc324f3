"""Per-source circuit breaker: a source that keeps failing is skipped at once, then probed again.

Closed → (``failures`` consecutive failures) → Open → (``reset_s`` later) → Half-open: one probe
query goes through; its success closes the circuit, its failure opens it for another ``reset_s``.
An open source costs a query nothing instead of its whole deadline. Each change of state is
reported once to ``on_change`` (open → half-open when the first probe goes out).
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable

Transition = Callable[["CircuitState", "CircuitState", int], None]
"""Told of each change of state: (before, after, consecutive failures)."""


class CircuitState(enum.StrEnum):
    """Where a source's breaker stands."""

    CLOSED = "CLOSED"
    OPEN = "OPEN"
    HALF_OPEN = "HALF_OPEN"


class CircuitBreaker:
    """Counts consecutive failures of one source and decides whether to ask it."""

    def __init__(
        self,
        failures: int,
        reset_s: float,
        clock: Callable[[], float] = time.monotonic,
        on_change: Transition | None = None,
    ) -> None:
        self.failure_threshold = failures
        self.reset_s = reset_s
        self._clock = clock
        self._on_change = on_change
        self._consecutive_failures = 0
        self._opened_at: float | None = None
        self._probing = False
        self._probe_started_at = 0.0
        self._told = CircuitState.CLOSED

    def _tell(self) -> None:
        """Report the state to ``on_change`` if it changed since last told."""
        state = self.state
        if state is not self._told:
            before, self._told = self._told, state
            if self._on_change is not None:
                self._on_change(before, state, self._consecutive_failures)

    @property
    def state(self) -> CircuitState:
        """The state now (an open circuit past its cool-down reads as half-open)."""
        if self._opened_at is None:
            return CircuitState.CLOSED
        if self._probing or self._clock() >= self._opened_at + self.reset_s:
            return CircuitState.HALF_OPEN
        return CircuitState.OPEN

    def retry_in_s(self) -> float:
        """Seconds until the next probe is allowed (0 when not open)."""
        if self._opened_at is None or self._probing:
            return 0.0
        return max(0.0, self._opened_at + self.reset_s - self._clock())

    def allow(self) -> bool:
        """Whether to ask the source now; in half-open state only one probe at a time."""
        if self._probing and self._clock() >= self._probe_started_at + self.reset_s:
            self._probing = False  # a probe that never reported back (cancelled): allow another
        state = self.state
        if state is CircuitState.CLOSED:
            return True
        if state is CircuitState.HALF_OPEN and not self._probing:
            self._probing = True
            self._probe_started_at = self._clock()
            self._tell()
            return True
        return False

    def record_success(self) -> None:
        """The source answered: close the circuit."""
        self._consecutive_failures = 0
        self._opened_at = None
        self._probing = False
        self._tell()

    def release_probe(self) -> None:
        """A request that ended saying nothing of the source (abandoned): another may probe at once."""
        self._probing = False

    def record_failure(self) -> None:
        """The source failed: open the circuit at the threshold, or again after a failed probe."""
        self._consecutive_failures += 1
        if self._probing or self._consecutive_failures >= self.failure_threshold:
            self._opened_at = self._clock()
        self._probing = False
        self._tell()
