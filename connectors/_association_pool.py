"""A small pool of open DICOM associations per source, so a query skips association set-up.

Each open association costs two pynetdicom threads that poll every millisecond, so the pool is
small (``association_pool`` per source) and closes associations idle for ``association_idle_s``.
An association the peer closed while idle is noticed when taken and never handed out.
"""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass

from pynetdicom.association import Association


@dataclass
class _Idle:
    association: Association
    since: float


class AssociationPool:
    """Idle, established associations of one source, handed out one query at a time."""

    def __init__(self, size: int, idle_s: float) -> None:
        self.size = size
        self.idle_s = idle_s
        self._idle: list[_Idle] = []
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None
        self._closed = False

    def take(self) -> Association | None:
        """An idle association that is still established, or None."""
        stale: list[Association] = []
        found: Association | None = None
        with self._lock:
            now = time.monotonic()
            while self._idle and found is None:
                idle = self._idle.pop()
                usable = idle.association.is_established and now - idle.since < self.idle_s
                if usable:
                    found = idle.association
                else:
                    stale.append(idle.association)
        for association in stale:
            _close(association)
        return found

    def give_back(self, association: Association) -> None:
        """Keep an association that ended its query cleanly, or release it if the pool is full."""
        with self._lock:
            keep = not self._closed and self.size > 0 and len(self._idle) < self.size
            if keep:
                # No network timeout while pooled: the one it was opened with came from its first
                # query's deadline (1 s for a 1 s query), and pynetdicom would abort it once idle
                # that long, maybe as another query takes it. The reaper closes it after idle_s;
                # a query on it is bounded by its DIMSE timeout and by the engine's deadline.
                association.network_timeout = None
                self._idle.append(_Idle(association, time.monotonic()))
                self._arm_reaper()
        if not keep:
            close_in_background(association)

    def _arm_reaper(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = threading.Timer(self.idle_s, self.reap)
        self._timer.daemon = True
        self._timer.start()

    def reap(self) -> None:
        """Release associations idle for longer than ``idle_s``."""
        with self._lock:
            now = time.monotonic()
            expired = [i for i in self._idle if now - i.since >= self.idle_s]
            self._idle = [i for i in self._idle if now - i.since < self.idle_s]
            if self._idle:
                self._arm_reaper()
        for idle in expired:
            _close(idle.association)

    def close(self) -> None:
        """Release every idle association; later give-backs are released at once."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
            if self._timer is not None:
                self._timer.cancel()
        for item in idle:
            _close(item.association)

    def __len__(self) -> int:
        with self._lock:
            return len(self._idle)


def close_in_background(association: Association) -> None:
    """Release an association without making anyone wait for the peer's A-RELEASE-RP.

    A query's answer is ready before its association is released; a peer that never answers
    the release would otherwise hold the answer back for the whole ACSE timeout.
    """
    threading.Thread(target=_close, args=(association,), name="pacsfed-dimse-release", daemon=True).start()


def _close(association: Association) -> None:
    """Release an association politely; abort it if that fails."""
    with contextlib.suppress(Exception):
        if association.is_established:
            association.release()
    with contextlib.suppress(Exception):
        if association.is_established:
            association.abort()
