"""Flood control for anonymous failures: a budget of audit records per client address, the rest summarized.

Whoever is not authenticated can make the server write: a refused credential, a wrong share code.
Each such failure is journaled (fsync'd) as long as its address has budget left in the current
minute; past the budget it is only counted, and :meth:`FloodGate.drain` hands the counts over
(the service writes them as one summary record per address and kind, once a minute and at shutdown),
so a flood costs at most ``per_key`` records per address and minute plus one summary, and never
loses the fact that it happened. A total budget over all addresses bounds a spray of addresses.

Memory is bounded: at most ``max_keys`` addresses are tracked; past that the counts of new ones
go into one aggregate under the address ``"*"``.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

__all__ = ["FloodGate", "Suppressed"]

_WINDOW_S = 60.0
OVERFLOW = "*"
"""The address under which failures are counted once too many addresses are tracked."""


@dataclasses.dataclass(slots=True)
class Suppressed:
    """Failures of one kind from one address that were counted instead of journaled."""

    kind: str
    address: str
    count: int = 0
    codes: dict[str, None] = dataclasses.field(default_factory=dict)
    """The distinct refusal codes among them, in the order first seen."""


@dataclasses.dataclass(slots=True)
class _Budget:
    started: float
    used: int = 0


class FloodGate:
    """Per-address and total budgets of journaled failures a minute; what exceeds them is counted."""

    def __init__(
        self,
        per_key: int,
        *,
        total: int = 600,
        max_keys: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._per_key = per_key
        self._max_keys = max_keys
        self._clock = clock
        self._budgets: dict[tuple[str, str], _Budget] = {}
        self._total = _Budget(clock())
        self._total_budget = total
        self._suppressed: dict[tuple[str, str], Suppressed] = {}

    def admit(self, kind: str, address: str, code: str) -> bool:
        """True when this failure may be journaled; False when it was counted for the next summary."""
        now = self._clock()
        if now - self._total.started >= _WINDOW_S:
            self._total = _Budget(now)
            self._forget_stale(now)
        budget = self._budgets.get((kind, address))
        if budget is None or now - budget.started >= _WINDOW_S:
            budget = _Budget(now)
            if len(self._budgets) < self._max_keys:
                self._budgets[(kind, address)] = budget
        if budget.used < self._per_key and self._total.used < self._total_budget:
            budget.used += 1
            self._total.used += 1
            return True
        self.count(kind, address, code)
        return False

    def count(self, kind: str, address: str, code: str) -> None:
        """Count a failure that is never journaled on its own (it goes into the next summary)."""
        key = (kind, address)
        if key not in self._suppressed and len(self._suppressed) >= self._max_keys:
            key = (kind, OVERFLOW)
        entry = self._suppressed.get(key)
        if entry is None:
            entry = self._suppressed[key] = Suppressed(kind, key[1])
        entry.count += 1
        entry.codes.setdefault(code)

    def drain(self) -> list[Suppressed]:
        """The counts since the last drain (then forgotten), largest first."""
        drained = sorted(self._suppressed.values(), key=lambda s: (-s.count, s.kind, s.address))
        self._suppressed = {}
        return drained

    def restore(self, entries: list[Suppressed]) -> None:
        """Count ``entries`` again (their summary could not be journaled)."""
        for entry in entries:
            current = self._suppressed.setdefault((entry.kind, entry.address), entry)
            if current is not entry:
                current.count += entry.count
                current.codes.update(entry.codes)

    @property
    def pending(self) -> int:
        """How many counted failures wait for the next summary."""
        return sum(entry.count for entry in self._suppressed.values())

    def _forget_stale(self, now: float) -> None:
        for key in [k for k, b in self._budgets.items() if now - b.started >= _WINDOW_S]:
            del self._budgets[key]
