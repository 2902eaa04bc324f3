"""Trusted ages along the journal's own records: a wrong clock adds at most one gap, a step back nothing."""

from __future__ import annotations

from federation.audit.clock import MAX_GAP_S, SegmentSpan, Timeline

DAY = 86_400.0
T = 1_800_000_000.0


def daily(days: int) -> list[SegmentSpan]:
    """A segment a day, each with records from its first to its last hour."""
    return [SegmentSpan(n, T + n * DAY, T + n * DAY + 3600, n * 10 + 1) for n in range(days)]


def test_steady_records_age_by_the_clock() -> None:
    timeline = Timeline(daily(40), now=T + 40 * DAY, journal="j")
    assert timeline.segment_age(0) == 40 * DAY - 3600
    assert timeline.segment_age(39) == DAY - 3600
    assert timeline.first_seq == 1 and timeline.journal == "j"


def test_a_clock_far_ahead_counts_one_gap_at_most() -> None:
    spans = [SegmentSpan(1, T, T + 60), SegmentSpan(2, T + 70 * DAY, T + 70 * DAY + 60)]
    timeline = Timeline(spans, now=T + 70 * DAY + 120)
    age = timeline.segment_age(1)
    assert age is not None and age <= MAX_GAP_S + 120
    only_now_ahead = Timeline(spans[:1], now=T + 400 * DAY)
    assert only_now_ahead.segment_age(1) == MAX_GAP_S


def test_a_clock_stepped_back_counts_nothing_backwards() -> None:
    spans = [SegmentSpan(1, T, T + 60), SegmentSpan(2, T - 120 * DAY, T - 120 * DAY + 60)]
    timeline = Timeline(spans, now=T - 120 * DAY + 120)
    assert timeline.segment_age(1) == 120.0  # the records after it span 60 s, then 60 s to now
    assert timeline.age_of(T - 100 * DAY) == 60.0  # a month among the stepped-back records is young


def test_ages_before_the_journal_and_without_records() -> None:
    timeline = Timeline(daily(3), now=T + 3 * DAY)
    assert timeline.age_of(T - 10 * DAY) == 10 * DAY + timeline.segment_age(0) + 3600  # type: ignore[operator]
    assert Timeline([SegmentSpan(1, None, None)], now=T).age_of(T - DAY) is None
    assert Timeline([], now=T).has_records is False
