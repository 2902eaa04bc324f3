"""Time the audit can trust: ages measured along the journal's own records, not by the wall clock alone.

A clock set ahead must not age the trail, and one set back must not file fresh records among
old ones. The journal's segments, in sequence order, give a timeline of record times; each gap
along it (from one segment's first record to its last, from one segment's last record to the
next one's first, from the newest record to "now") counts at most ``MAX_GAP_S`` and never less
than zero. A record's trusted age is the sum of the gaps after it:

    records:   T-2d ─ T-1d ─ T ········ (clock 70 days ahead) ········ now
    counted:      1d  +  1d  +  min(70d, MAX_GAP_S)          = 3 days, not 72

A clock stepped back makes negative gaps, which count nothing; a server idle for longer than
``MAX_GAP_S`` keeps its records that much longer (the safe side). With no record at all there is
no evidence, and nothing is aged.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

__all__ = ["AHEAD_TOLERANCE_S", "BACK_TOLERANCE_S", "MAX_GAP_S", "ClockWatch", "SegmentSpan", "Timeline"]

MAX_GAP_S = 86_400.0
"""The most one silence between records (or up to now) counts: a day (segments rotate daily)."""
BACK_TOLERANCE_S = 1.0
"""A record this much older than the newest one before it means the clock stepped back."""
AHEAD_TOLERANCE_S = 60.0
"""Wall time running this much faster than monotonic time between two records means a step ahead."""


@dataclasses.dataclass(frozen=True, slots=True)
class SegmentSpan:
    """The first and last readable record of one journal segment (times as epoch seconds)."""

    number: int
    first_at: float | None
    last_at: float | None
    first_seq: int | None = None


@dataclasses.dataclass(slots=True)
class ClockWatch:
    """What the records a journal wrote say of time: the newest record time, a step back under way, the last stamp."""

    newest_at: float | None = None
    """The latest record time so far (a high-water mark: a step back does not lower it)."""
    behind: bool = False
    last: tuple[float, float] | None = None
    """(record time, monotonic time) of this process's previous record, to see a step ahead."""

    def observe(self, at: float, monotonic: float) -> str | None:
        """Take in the next record's time; what the clock did if it disagrees with the records before it."""
        step = self._step(at, monotonic)
        self.newest_at = at if self.newest_at is None else max(self.newest_at, at)
        self.last = (at, monotonic)
        return step

    def _step(self, at: float, monotonic: float) -> str | None:
        newest = self.newest_at
        if newest is None:
            return None
        if at < newest - BACK_TOLERANCE_S:
            if self.behind:
                return None  # the same step, still being caught up
            self.behind = True
            return f"clock stepped back: {newest - at:.0f} s behind the newest journaled record"
        self.behind = False
        if self.last is None:
            if at - newest > MAX_GAP_S:
                return f"clock is {at - newest:.0f} s ahead of the newest journaled record"
            return None
        last_at, last_monotonic = self.last
        ahead = (at - last_at) - (monotonic - last_monotonic)
        if ahead > AHEAD_TOLERANCE_S:
            return f"clock stepped ahead: {ahead:.0f} s more than elapsed since the previous record"
        return None


class Timeline:
    """Trusted ages along the journal's records (oldest segment first), up to ``now``."""

    def __init__(
        self,
        spans: Sequence[SegmentSpan],
        now: float,
        *,
        journal: str | None = None,
        max_gap_s: float = MAX_GAP_S,
    ) -> None:
        self.now = now
        """The wall clock when the timeline was taken (epoch seconds; not trusted alone)."""
        self.journal = journal
        """The id of the journal the records come from."""
        self._points: list[float] = []
        self._last_point: dict[int, int] = {}
        self.first_seq: int | None = None
        for span in spans:
            if span.first_at is None or span.last_at is None:
                continue
            if self.first_seq is None:
                self.first_seq = span.first_seq
            self._points += [span.first_at, span.last_at]
            self._last_point[span.number] = len(self._points) - 1
        # _after[i]: the trusted time from point i to now (capped, non-negative gaps).
        self._after = [0.0] * (len(self._points) + 1)
        stops = [*self._points, now]
        for i in range(len(self._points) - 1, -1, -1):
            gap = min(max(stops[i + 1] - stops[i], 0.0), max_gap_s)
            self._after[i] = self._after[i + 1] + gap

    @property
    def has_records(self) -> bool:
        """Whether any readable record gives evidence of time."""
        return bool(self._points)

    def segment_age(self, number: int) -> float | None:
        """The trusted age of segment ``number``'s last record; None when it holds none."""
        index = self._last_point.get(number)
        return None if index is None else self._after[index]

    def age_of(self, at: float) -> float | None:
        """The trusted time elapsed since ``at``; None without any record to measure by.

        Before every record: the plain difference to the oldest one, plus the trusted age of
        that one. Otherwise the age of the newest-in-order record not later than ``at`` (the
        smallest candidate, so a timeline with steps back never over-ages).
        """
        if not self._points:
            return None
        if at < min(self._points):
            return (self._points[0] - at) + self._after[0]
        last = max(i for i, point in enumerate(self._points) if point <= at)
        return self._after[last]
