"""A DIMSE source's request slots: an ``asyncio.Semaphore`` that is cheaper to take when free."""

from __future__ import annotations

import asyncio


class Slots(asyncio.Semaphore):
    """``locked()`` builds no generator while nobody waits: it runs each time a slot is taken, once per source a query asks."""

    def locked(self) -> bool:
        return self._value == 0 or (bool(self._waiters) and super().locked())
