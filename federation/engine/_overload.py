"""pacsfed's own load, kept apart from the hospitals': admission of queries, slot waits, counters.

A query is admitted while fewer than ``max_pending_queries`` are in progress (fewer while the event
loop lags: :mod:`federation.engine._adaptive_limit`; a lowered limit is saturation only once the
pending queries come near it); one more is refused
at once (:class:`federation.errors.Overloaded`) rather than queued past its deadline. A source
request that waits for one of pacsfed's own slots (``max_concurrency``) and gets none before the
deadline is BUSY, and time spent waiting for a slot is never held against the source's breaker.
Counters are in-process (shown in ``/readyz``); nothing here holds patient data.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import math
import time
from collections.abc import Iterator

from federation.engine._adaptive_limit import AdaptiveLimit
from federation.engine.resilience import CircuitState
from federation.errors import Overloaded

log = logging.getLogger("federation.engine.engine")

_RECENT_S = 3.0
"""A refusal or a BUSY source this recent still marks the process as saturated."""
_SATURATED_SHARE = 0.75
"""Pending queries above this share of the limit mark the process as saturated."""
_MAX_RETRY_AFTER_S = 10
"""The longest ``Retry-After`` told: a refused caller comes back after about one query's time."""
_QUEUED_S = 0.5
"""Requests have waited for a source's slots this long without a break: a queue, not a moment's overlap."""
_SMOOTHING = 0.1
"""Weight of each finished query in the running mean of query durations."""


class Attempt:
    """Whether a source request got one of pacsfed's slots, and with how much of its deadline left."""

    __slots__ = ("asked", "short")

    def __init__(self) -> None:
        self.asked = False
        """At least one of its queries got a slot and was sent to the source."""
        self.short = False
        """A query was sent with less than half of the request's time left (it waited for a slot)."""

    def sent(self, left_s: float, budget_s: float) -> None:
        """A query of this request goes to the source with ``left_s`` of ``budget_s`` seconds left."""
        self.asked = True
        if left_s < budget_s / 2:
            self.short = True

    @property
    def fair(self) -> bool:
        """The source had its time: a timeout is the source's, not pacsfed's queue's."""
        return self.asked and not self.short


class OverloadWatch:
    """Counts pending queries, refusals, BUSY sources and breaker transitions; says when saturated."""

    def __init__(self, max_pending_queries: int) -> None:
        self.max_pending_queries = max_pending_queries
        self.limit = AdaptiveLimit(max_pending_queries)
        """The places in use now: ``max_pending_queries``, fewer while the event loop lags."""
        self.pending = 0
        self.requests = 0
        """API requests in progress from their first byte (read, authenticated, parsed, run)."""
        self.slot_waiters: collections.Counter[str] = collections.Counter()
        """Source requests waiting for a slot now, by source id."""
        self._queued_since: dict[str, float] = {}
        """Since when requests to a source have been waiting for a slot without a break."""
        self.counters: collections.Counter[str] = collections.Counter()
        self.transitions: dict[str, collections.Counter[str]] = {}
        self._last: dict[str, float] = {}
        self._mean_s = 0.0
        """Running mean of admitted queries' durations: how long until a place frees, roughly."""

    def retry_after_s(self) -> int:
        """Seconds a refused caller should wait: about one query's time (1 to 10 s).

        A fixed 1 s had every refused client back at once, and answering the refusals took the
        CPU the admitted queries needed.
        """
        return max(1, min(_MAX_RETRY_AFTER_S, math.ceil(self._mean_s)))

    def _refuse(self, in_progress: int) -> Overloaded:
        self.note("queries_refused")
        return Overloaded(
            f"pacsfed has {in_progress} queries in progress (server.max_pending_queries, {self.limit.value} now):"
            " try again in a moment",
            retry_after_s=self.retry_after_s(),
        )

    def refusal(self, in_hand: int = 0) -> Overloaded | None:
        """Overloaded (counted) when the admitted queries, or ``in_hand`` requests read whole, are at the limit; else None."""
        places = self.limit.value
        if self.pending >= places or in_hand >= places:
            return self._refuse(max(self.pending, in_hand))
        return None

    @contextlib.contextmanager
    def arriving(self, *, checked: bool = False) -> Iterator[None]:
        """Count an API request from its first byte; refuse it (Overloaded) unread while admitted queries are at the limit.

        Refused here, a request costs no body read, authentication or GraphQL parse: under a
        flood, those took the event loop from the queries already admitted. Only admitted queries
        count against the limit: requests still sending their body do not, or a few hundred
        clients trickling bodies (bounded by ``server.body_timeout_s``) would lock everyone out.
        ``checked``: let in at the door already (the HTTP server asked :meth:`refusal`): counted only.
        """
        refused = None if checked else self.refusal()
        if refused is not None:
            raise refused
        self.requests += 1
        try:
            yield
        finally:
            self.requests -= 1

    @contextlib.contextmanager
    def admitted(self) -> Iterator[None]:
        """Hold one pending-query place for the block, or refuse at once (Overloaded) when none is left."""
        if self.pending >= self.limit.value:
            raise self._refuse(self.pending)
        self.pending += 1
        self.limit.busy()
        started = time.monotonic()
        try:
            yield
        finally:
            self.pending -= 1
            if not self.pending:
                self.limit.idle()
            self._mean_s += _SMOOTHING * (time.monotonic() - started - self._mean_s)

    @contextlib.contextmanager
    def waiting_for_slot(self, source_id: str) -> Iterator[None]:
        """Count one source request waiting for one of pacsfed's slots for the block."""
        if not self.slot_waiters[source_id]:
            self._queued_since[source_id] = time.monotonic()
        self.slot_waiters[source_id] += 1
        try:
            yield
        finally:
            self.slot_waiters[source_id] -= 1
            if not self.slot_waiters[source_id]:
                del self._queued_since[source_id]

    def _queued(self) -> list[str]:
        """Sources whose requests have queued for a slot for a while (a moment's overlap is not saturation).

        Four requests at once per source (``max_concurrency``) overlap now and then with only a
        few clients; counting every such moment had ``/readyz`` flicker ``degraded`` at ease.
        """
        now = time.monotonic()
        return sorted(sid for sid, since in self._queued_since.items() if now - since >= _QUEUED_S)

    def note(self, what: str) -> None:
        """Count one event (``queries_refused``, ``sources_busy``, ``retrievals_busy``, ``stale_answers_served``, ``refreshes_deferred``)."""
        self.counters[what] += 1
        self._last[what] = time.monotonic()

    def transition(self, source_id: str, before: CircuitState, after: CircuitState, failures: int) -> None:
        """Log and count one circuit breaker transition (no patient data: the source and the states)."""
        name = f"{before.value}->{after.value}"
        self.transitions.setdefault(source_id, collections.Counter())[name] += 1
        level = logging.WARNING if after is CircuitState.OPEN else logging.INFO
        log.log(level, "source %s: circuit %s (%d consecutive failures)", source_id, name, failures)

    @property
    def saturated(self) -> bool:
        """Queries or source requests are queueing for pacsfed's own capacity right now.

        A lowered admission limit alone is not: only pending queries near it are (else one cut
        kept refreshes deferred and ``/readyz`` degraded with nothing pending, for as long as it
        stayed low).
        """
        return self.pending >= self.limit.value * _SATURATED_SHARE or bool(self._queued())

    def saturation(self) -> list[str]:
        """Why pacsfed is at its own limits now (empty when it is not)."""
        reasons: list[str] = []
        places = self.limit.value
        if self.pending >= places * _SATURATED_SHARE:
            reason = f"{self.pending} of {places} pending queries in progress"
            if places < self.max_pending_queries:
                reason += (
                    f" (admission limit lowered from {self.max_pending_queries}:"
                    f" the event loop runs {self.limit.lag_s * 1000:.0f} ms late)"
                )
            reasons.append(reason)
        waiting = self._queued()
        if waiting:
            reasons.append(
                f"requests queued for a slot (max_concurrency) for {_QUEUED_S} s or more to: {', '.join(waiting)}"
            )
        now = time.monotonic()
        for what, label in (
            ("queries_refused", "queries refused (OVERLOADED)"),
            ("sources_busy", "BUSY sources"),
        ):
            if now - self._last.get(what, -_RECENT_S * 2) < _RECENT_S:
                reasons.append(f"{label} in the last {_RECENT_S:.0f} s")
        return reasons

    def snapshot(self) -> dict[str, object]:
        """The counters as plain data, for ``/readyz``."""
        return {
            "pending_queries": self.pending,
            "requests_in_progress": self.requests,
            "max_pending_queries": self.max_pending_queries,
            "admission_limit": self.limit.value,
            **{
                name: self.counters[name]
                for name in (
                    "queries_refused",
                    "sources_busy",
                    "retrievals_busy",
                    "stale_answers_served",
                    "refreshes_deferred",
                )
            },
            "circuit_transitions": {sid: dict(counts) for sid, counts in sorted(self.transitions.items())},
        }
