"""A small pool of open DICOM associations per source, so a query skips association set-up.

An idle association is a socket in the event loop's selector and nothing else: no thread, no
polling. A peer that releases or aborts it while idle is answered at once (``_dimse_wire``), and
an association with anything unread is never handed out. One timer on the loop releases
associations idle for ``association_idle_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass

from connectors._dimse_link import DimseLink

RELEASE_WAIT_S = 1.0
"""How long a release waits for the peer's A-RELEASE-RP before the connection is simply closed."""
_BACKGROUND: set[asyncio.Task[None]] = set()


@dataclass
class _Idle:
    link: DimseLink
    since: float


class AssociationPool:
    """Idle, established associations of one source, handed out one query at a time."""

    def __init__(self, size: int, idle_s: float) -> None:
        self.size = size
        self.idle_s = idle_s
        self._idle: list[_Idle] = []
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False

    def take(self) -> DimseLink | None:
        """An idle association that is still established and silent, or None."""
        now = time.monotonic()
        while self._idle:
            idle = self._idle.pop()
            idle.link.protocol.idle = False
            if idle.link.usable and now - idle.since < self.idle_s:
                return idle.link
            idle.link.abort()
        return None

    def give_back(self, link: DimseLink) -> None:
        """Keep an association that ended its query cleanly, or release it if the pool is full."""
        if self._closed or len(self._idle) >= self.size or not link.usable:
            close_in_background(link)
            return
        link.protocol.idle = True
        self._idle.append(_Idle(link, time.monotonic()))
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.idle_s, self.reap)

    def reap(self) -> None:
        """Release associations idle for longer than ``idle_s``."""
        self._timer = None
        now = time.monotonic()
        expired = [i for i in self._idle if now - i.since >= self.idle_s or not i.link.usable]
        self._idle = [i for i in self._idle if i not in expired]
        for idle in expired:
            idle.link.protocol.idle = False
            close_in_background(idle.link)
        if self._idle:
            oldest = min(i.since for i in self._idle)
            delay = max(oldest + self.idle_s - now, 0.01)
            self._timer = asyncio.get_running_loop().call_later(delay, self.reap)

    async def close(self) -> None:
        """Release every idle association (at most ``RELEASE_WAIT_S``); later give-backs are released at once."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        idle, self._idle = self._idle, []
        for item in idle:
            item.link.protocol.idle = False
        if idle:
            await asyncio.gather(*(_release(item.link) for item in idle))

    def __len__(self) -> int:
        return len(self._idle)


def close_in_background(link: DimseLink) -> None:
    """Release an association without making anyone wait for the peer's A-RELEASE-RP.

    A query's answer is ready before its association is released; a peer that never answers
    the release would otherwise hold the answer back.
    """
    task = asyncio.get_running_loop().create_task(_release(link))
    _BACKGROUND.add(task)
    task.add_done_callback(_BACKGROUND.discard)


async def _release(link: DimseLink) -> None:
    """Release politely, bounded; abort if that fails."""
    with contextlib.suppress(Exception):
        await link.release(min(link.settings.acse_timeout_s, RELEASE_WAIT_S))
    link.abort()
