"""The admission limit in use: ``server.max_pending_queries``, fewer while pacsfed's own event loop lags.

Admitted queries are pacsfed's backlog: when the process is short of CPU (the event loop runs
late), each of them waits for the others, and a backlog of ``max_pending_queries`` takes
seconds to drain after a load ends. While queries are in progress, the loop's lag is sampled
every 100 ms (a timer, nothing while idle); each second, a smoothed lag above 100 ms cuts the
limit by 30 % (never below 8 places, nor below ``max_pending_queries`` if that is less), one
under 25 ms gives back a tenth of ``max_pending_queries``, one in between a fortieth (a lag that
stays moderate does not hold the limit down for good). It is never driven by the hospitals'
latency: a slow hospital leaves the loop idle.

While no query is in progress nothing runs; idle time is counted when the next query comes.
The first 10 s of it (the longest ``Retry-After`` told) keep the limit as it was, each second
after gives back a tenth: the refused callers come back together after their ``Retry-After``,
and a limit that was whole again after one empty moment admitted them all and took seconds
to be cut down again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

log = logging.getLogger("federation.engine.engine")

_SAMPLE_S = 0.1
"""How often the loop's lag is sampled while queries are in progress."""
_SMOOTHING = 0.3
"""Weight of each sample in the smoothed lag."""
_ADJUST_S = 1.0
"""The least time between two changes of the limit."""
_LAG_HIGH_S = 0.1
"""A smoothed lag above this: the loop is short of CPU, the limit is cut."""
_LAG_LOW_S = 0.025
"""A smoothed lag below this: the limit grows back by a tenth of the maximum; above it, by a fortieth."""
_SLOW_SHARE = 4
"""Growth between the two lags is this many times slower than under ``_LAG_LOW_S``."""
_IDLE_HOLD_S = 10.0
"""Idle time that keeps a lowered limit as it was: the longest ``Retry-After`` told (``_overload``)."""
_CUT = 0.7
"""The share of the limit kept at each cut."""
_MIN_PLACES = 8
"""The fewest places a cut leaves."""


class AdaptiveLimit:
    """How many queries may be admitted now: the configured maximum, lowered while the event loop lags."""

    def __init__(self, maximum: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.maximum = maximum
        self._value = maximum
        self.lag_s = 0.0
        """The smoothed lag of the event loop while queries were in progress (0 when idle)."""
        self._floor = min(maximum, _MIN_PLACES)
        self._step = max(1, maximum // 10)
        self._clock = clock
        self._idle_since: float | None = None
        """Since when no query has been in progress, while the limit is lowered."""
        self._adjusted_at = 0.0
        self._due = 0.0
        self._timer: asyncio.TimerHandle | None = None

    @property
    def value(self) -> int:
        """The places now: idle time past ``_IDLE_HOLD_S`` gives back a tenth a second (read, not timed)."""
        if self._idle_since is None:
            return self._value
        idle_s = self._clock() - self._idle_since - _IDLE_HOLD_S
        if idle_s < _ADJUST_S:
            return self._value
        return min(self.maximum, self._value + int(idle_s / _ADJUST_S) * self._step)

    def busy(self) -> None:
        """Queries are in progress: sample the loop's lag (already sampling, or no running loop: nothing to do)."""
        if self._idle_since is not None:  # the idle time's due, counted now rather than timed
            before, self._value = self._value, self.value
            self._idle_since = None
            if before < self._value == self.maximum:
                log.info("admission limit back to %d places (idle)", self.maximum)
        if self._timer is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._adjusted_at = loop.time()
        self._schedule(loop)

    def idle(self) -> None:
        """No query is in progress: stop sampling (nothing runs while idle); a lowered limit recovers with time."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.lag_s = 0.0
        if self._value < self.maximum and self._idle_since is None:
            self._idle_since = self._clock()

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        self._due = loop.time() + _SAMPLE_S
        self._timer = loop.call_at(self._due, self._sample, loop)

    def _sample(self, loop: asyncio.AbstractEventLoop) -> None:
        now = loop.time()
        self.lag_s += _SMOOTHING * (max(0.0, now - self._due) - self.lag_s)
        if now - self._adjusted_at >= _ADJUST_S:
            self._adjusted_at = now
            self._adjust()
        self._schedule(loop)

    def _adjust(self) -> None:
        before = self._value
        if self.lag_s > _LAG_HIGH_S:
            self._value = max(self._floor, int(self._value * _CUT))
        elif self.lag_s < _LAG_LOW_S:
            self._value = min(self.maximum, self._value + self._step)
        else:
            self._value = min(self.maximum, self._value + max(1, self._step // _SLOW_SHARE))
        if self._value < before and before == self.maximum:
            log.warning(
                "admission limit lowered below %d places: the event loop runs %.0f ms late",
                self.maximum,
                self.lag_s * 1000,
            )
        elif self._value == self.maximum and before < self.maximum:
            log.info("admission limit back to %d places", self.maximum)
