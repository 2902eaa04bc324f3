"""The audit journal: fsync'd before returning, grouped fsyncs, cursors, rotation, torn lines, pruning."""

from __future__ import annotations

import asyncio
import datetime as dt
import errno
import logging
import os
import stat
import time
from pathlib import Path
from typing import Any

import pytest

from federation.audit.journal import START, AuditJournal, Position
from federation.audit.records import AuditAction, AuditOutcome, AuditRecord
from federation.errors import AuditError, AuditUnavailable

SECRET = "PA-SECRET-4711"


def make_record(n: int = 0, patient: str = f"{SECRET}^^^HOSP_A") -> AuditRecord:
    return AuditRecord(
        action=AuditAction.PATIENT_QUERY,
        outcome=AuditOutcome.SUCCESS,
        actor=f"user:u{n}",
        patient_ids=[patient],
        sources=["hosp-a"],
        exam_count=n,
    )


async def read_all(journal: AuditJournal, after: Position = START, **limits: int) -> list[AuditRecord]:
    records: list[AuditRecord] = []
    while True:
        batch, after_batch = await journal.read(after, **limits)
        records.extend(batch)
        if after_batch == after:
            return records
        after = after_batch


def segments(directory: Path) -> list[Path]:
    return sorted(directory.glob("audit-*.jsonl"))


@pytest.fixture
async def journal(tmp_path: Path) -> Any:
    j = AuditJournal(tmp_path / "journal")
    await j.open()
    yield j
    await j.aclose()


async def test_append_is_on_disk_when_it_returns_with_private_modes(
    journal: AuditJournal, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd))[1])
    record = make_record()
    await journal.append(record)
    assert synced, "append returned before any fsync"
    [segment] = segments(journal.directory)
    assert record.id in segment.read_text()
    assert stat.S_IMODE(segment.stat().st_mode) == 0o600
    assert stat.S_IMODE(journal.directory.stat().st_mode) == 0o700
    [read] = await read_all(journal)
    assert read.id == record.id and read.seq == 1 and read.journal == journal.journal_id


async def test_concurrent_appends_share_fsyncs(
    journal: AuditJournal, monkeypatch: pytest.MonkeyPatch
) -> None:
    await journal.append(make_record())  # the segment exists: only data fsyncs are counted below
    calls = 0
    real_fsync = os.fsync

    def slow_fsync(fd: int) -> None:
        nonlocal calls
        calls += 1
        real_fsync(fd)
        import time

        time.sleep(0.02)

    monkeypatch.setattr(os, "fsync", slow_fsync)
    records = [make_record(n) for n in range(50)]
    await asyncio.gather(*(journal.append(r) for r in records))
    assert calls <= 5
    assert [r.id for r in (await read_all(journal))[1:]] == [r.id for r in records]


async def test_a_write_failure_raises_audit_error_without_patient_data(
    journal: AuditJournal, monkeypatch: pytest.MonkeyPatch
) -> None:
    await journal.append(make_record(1))

    def full(fd: int, data: Any) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with monkeypatch.context() as patched:
        patched.setattr(os, "write", full)
        with pytest.raises(AuditError) as failure:
            await journal.append(make_record(2))
    assert SECRET not in str(failure.value)
    assert "No space left" in str(failure.value)
    third = make_record(3)
    await journal.append(third)  # a fresh segment after the failure
    assert len(segments(journal.directory)) == 2
    assert [r.exam_count for r in await read_all(journal)] == [1, 3]


async def test_unusable_directory_raises_audit_error(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    journal = AuditJournal(blocker / "journal")
    with pytest.raises(AuditError):
        await journal.append(make_record())
    await journal.aclose()


async def test_a_torn_last_line_is_skipped_with_a_clean_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    directory = tmp_path / "journal"
    first = AuditJournal(directory)
    kept = [make_record(1), make_record(2)]
    for record in kept:
        await first.append(record)
    await first.aclose()
    [segment] = segments(directory)
    with segment.open("ab") as file:  # the crash: half a line
        file.write(f'{{"id": "torn", "patient_ids": ["{SECRET}'.encode())

    second = AuditJournal(directory)  # the restart
    await second.open()
    later = make_record(3)
    await second.append(later)
    with caplog.at_level(logging.WARNING, logger="federation.audit.journal"):
        records = await read_all(second)
    await second.aclose()
    assert [r.id for r in records] == [*(r.id for r in kept), later.id]
    assert "torn last line" in caplog.text
    assert SECRET not in caplog.text


async def test_an_unreadable_line_is_skipped(journal: AuditJournal, caplog: pytest.LogCaptureFixture) -> None:
    await journal.append(make_record(1))
    [segment] = segments(journal.directory)
    with segment.open("ab") as file:
        file.write(f'{{"garbage": "{SECRET}"}}\n'.encode())
    with caplog.at_level(logging.WARNING, logger="federation.audit.journal"):
        records = await read_all(AuditJournal(journal.directory))
    assert [r.exam_count for r in records] == [1]
    assert "unreadable line" in caplog.text
    assert SECRET not in caplog.text


async def test_segments_rotate_by_size_and_reads_span_them(tmp_path: Path) -> None:
    journal = AuditJournal(tmp_path / "journal", segment_bytes=1000)
    records = [make_record(n) for n in range(20)]
    for record in records:
        await journal.append(record)
    assert len(segments(journal.directory)) > 3
    assert [r.id for r in await read_all(journal, max_records=3)] == [r.id for r in records]
    await journal.aclose()


async def test_each_start_opens_a_new_segment(tmp_path: Path) -> None:
    directory = tmp_path / "journal"
    for n in range(3):
        journal = AuditJournal(directory)
        await journal.append(make_record(n))
        await journal.aclose()
    names = [p.name for p in segments(directory)]
    assert names == ["audit-000000000001.jsonl", "audit-000000000002.jsonl", "audit-000000000003.jsonl"]


async def test_cursor_survives_a_restart_and_is_replaced_atomically(journal: AuditJournal) -> None:
    for n in range(3):
        await journal.append(make_record(n))
    batch, position = await journal.read(START, max_records=2)
    assert len(batch) == 2
    await journal.save_cursor("elasticsearch", position)
    leftovers = [p.name for p in journal.directory.iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []
    cursor_file = journal.directory / "cursor-elasticsearch.json"
    assert stat.S_IMODE(cursor_file.stat().st_mode) == 0o600

    reopened = AuditJournal(journal.directory)
    assert await reopened.load_cursor("elasticsearch") == position
    assert await reopened.load_cursor("syslog") == START
    assert [r.exam_count for r in await read_all(reopened, position)] == [2]
    await reopened.aclose()


async def test_a_corrupt_cursor_means_shipping_again_from_the_start(journal: AuditJournal) -> None:
    (journal.directory / "cursor-syslog.json").write_text("{not json")
    assert await journal.load_cursor("syslog") == START


async def test_prune_deletes_only_old_shipped_closed_segments(tmp_path: Path) -> None:
    journal = AuditJournal(tmp_path / "journal", segment_bytes=500)
    for n in range(8):
        await journal.append(make_record(n))
    all_segments = segments(journal.directory)
    assert len(all_segments) >= 4
    shipped = Position(int(all_segments[2].stem.split("-")[1]), 0)  # the first two are shipped
    assert await journal.prune(shipped, keep_s=3600) == 0  # too recent
    assert await journal.prune(shipped, keep_s=0) == 2
    assert segments(journal.directory) == all_segments[2:]
    assert await journal.prune(Position(10**9, 0), keep_s=0) == len(all_segments) - 3  # never the open one
    assert segments(journal.directory) == all_segments[-1:]
    await journal.aclose()


async def test_recent_returns_the_newest_records(journal: AuditJournal) -> None:
    records = [make_record(n) for n in range(5)]
    for record in records:
        await journal.append(record)
    assert [r.id for r in await journal.recent()] == [r.id for r in records]


async def test_one_process_writes_a_journal(journal: AuditJournal) -> None:
    other = AuditJournal(journal.directory)
    with pytest.raises(AuditError, match="in use"):
        await other.open()
    await other.aclose()
    await journal.aclose()
    again = AuditJournal(journal.directory)
    await again.open()  # released by aclose
    await again.aclose()


async def test_a_reader_keeping_up_gets_from_memory_what_is_on_disk(
    journal: AuditJournal, monkeypatch: pytest.MonkeyPatch
) -> None:
    await journal.append(make_record(0))
    [_], position = await journal.read(START)
    await asyncio.gather(*(journal.append(make_record(n)) for n in range(1, 4)))
    await journal.append(make_record(4))
    from_disk = journal._read_sync(position, 500, 4 * 1024 * 1024)
    monkeypatch.setattr(asyncio, "to_thread", None)  # the reads below must not need a thread
    assert await journal.read(position) == from_disk
    assert await journal.read(position, max_records=2) == (
        from_disk[0][:2],
        journal._read_sync(position, 2, 4096)[1],
    )
    assert [r.exam_count for r in from_disk[0]] == [1, 2, 3, 4]
    assert from_disk[1] == journal.end


# --- sequence, full disk, clocks ----------------------------------------------------------------

DAY = 86_400.0


class FakeClock:
    """A wall clock that can be stepped, and a monotonic one that only moves with real (simulated) time."""

    def __init__(self) -> None:
        self.wall = time.time()
        self.mono = 1_000.0

    def time(self) -> float:
        return self.wall

    def monotonic(self) -> float:
        return self.mono

    def advance(self, seconds: float) -> None:
        """Time passes: both clocks move."""
        self.wall += seconds
        self.mono += seconds

    def record(self, n: int = 0) -> AuditRecord:
        """A record stamped by this clock (as the service stamps them by the system clock)."""
        return make_record(n).model_copy(update={"at": dt.datetime.fromtimestamp(self.wall, dt.UTC)})


def clocked(directory: Path, clock: FakeClock, **options: Any) -> AuditJournal:
    return AuditJournal(directory, clock=clock.time, monotonic=clock.monotonic, **options)


async def test_records_carry_the_journal_id_and_consecutive_sequence_numbers_across_restarts(
    tmp_path: Path,
) -> None:
    first = AuditJournal(tmp_path / "journal")
    for n in range(3):
        await first.append(make_record(n))
    journal_id = first.journal_id
    await first.aclose()
    second = AuditJournal(tmp_path / "journal")
    await second.append(make_record(3))
    records = await read_all(second)
    await second.aclose()
    assert journal_id is not None and second.journal_id == journal_id
    assert [(r.seq, r.journal, r.exam_count) for r in records] == [(n + 1, journal_id, n) for n in range(4)]


async def test_a_full_disk_fails_each_write_without_leaving_segments_and_recovers(full_disk: Any) -> None:
    journal = AuditJournal(full_disk.path / "journal")
    await journal.open()
    full_disk.fill()
    for n in range(20):
        with pytest.raises(AuditUnavailable) as failure:
            await journal.append(make_record(n))
        assert SECRET not in str(failure.value)
    assert segments(journal.directory) == []  # not 20 empty segments
    assert journal.failure is not None and "No space left" in journal.failure
    assert await journal.probe() is not None  # still full: not ready
    full_disk.free()
    assert await journal.probe() is None
    await journal.append(make_record(99))
    [record] = await read_all(journal)
    assert (record.seq, record.exam_count) == (1, 99)  # the failed writes used no sequence number
    assert [p.name for p in segments(journal.directory)] == ["audit-000000000001.jsonl"]
    await journal.aclose()


async def test_a_record_not_waited_for_rides_the_next_fsync(
    journal: AuditJournal, monkeypatch: pytest.MonkeyPatch
) -> None:
    await journal.append(make_record(0))  # the segment exists: only data fsyncs are counted below
    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd))[1])
    await journal.append(make_record(1), wait=False)  # returns at once
    await journal.append(make_record(2))
    assert len(synced) == 1
    await journal.append(make_record(3), wait=False)
    await journal.aclose()  # written at the latest on close
    assert [r.exam_count for r in await AuditJournal(journal.directory).recent()] == [0, 1, 2, 3]


async def test_a_clock_stepping_back_or_ahead_is_journaled(tmp_path: Path) -> None:
    clock = FakeClock()
    journal = clocked(tmp_path / "journal", clock)
    await journal.append(clock.record(1))
    clock.advance(10)
    clock.wall -= 70 * DAY  # stepped back
    await journal.append(clock.record(2))
    clock.advance(10)
    await journal.append(clock.record(3))  # still behind: the same step, not recorded again
    clock.wall += 70 * DAY + 3 * 3600  # stepped ahead, past where it was
    await journal.append(clock.record(4))
    records = await read_all(journal)
    await journal.aclose()
    kinds = [(r.action, r.exam_count) for r in records]
    assert kinds == [
        (AuditAction.PATIENT_QUERY, 1),
        (AuditAction.CLOCK_STEP, None),
        (AuditAction.PATIENT_QUERY, 2),
        (AuditAction.PATIENT_QUERY, 3),
        (AuditAction.CLOCK_STEP, None),
        (AuditAction.PATIENT_QUERY, 4),
    ]
    assert "stepped back" in (records[1].detail or "") and "stepped ahead" in (records[4].detail or "")
    assert [r.seq for r in records] == [1, 2, 3, 4, 5, 6]


async def test_a_restart_far_ahead_of_the_newest_record_is_journaled(tmp_path: Path) -> None:
    clock = FakeClock()
    first = clocked(tmp_path / "journal", clock)
    await first.append(clock.record(1))
    await first.aclose()
    clock.wall += 70 * DAY
    second = clocked(tmp_path / "journal", clock)
    await second.append(clock.record(2))
    records = await read_all(second)
    await second.aclose()
    assert [r.action for r in records] == [
        AuditAction.PATIENT_QUERY,
        AuditAction.CLOCK_STEP,
        AuditAction.PATIENT_QUERY,
    ]
    assert "ahead of the newest journaled record" in (records[1].detail or "")


@pytest.mark.parametrize("ahead_days", [40, 70, 400])
async def test_a_clock_set_ahead_prunes_nothing_written_seconds_before(
    tmp_path: Path, ahead_days: int
) -> None:
    clock = FakeClock()
    journal = clocked(tmp_path / "journal", clock, segment_bytes=200)  # a segment per record
    for n in range(5):
        await journal.append(clock.record(n))
        clock.advance(2)
    await journal.aclose()
    clock.wall += ahead_days * DAY
    restarted = clocked(tmp_path / "journal", clock, segment_bytes=200)
    await restarted.open()
    before = segments(restarted.directory)
    assert await restarted.prune(Position(10**9, 0), keep_s=30 * DAY) == 0
    await restarted.append(clock.record(9))  # new records by the wrong clock do not age the old ones
    assert await restarted.prune(Position(10**9, 0), keep_s=30 * DAY) == 0
    assert segments(restarted.directory)[: len(before)] == before
    await restarted.aclose()


async def test_prune_goes_by_the_time_the_records_span(tmp_path: Path) -> None:
    clock = FakeClock()
    journal = clocked(tmp_path / "journal", clock, segment_bytes=200)
    for n in range(40):  # one record a day for 40 days
        await journal.append(clock.record(n))
        clock.advance(DAY)
    assert await journal.prune(Position(10**9, 0), keep_s=30.5 * DAY) == 10  # ages 40, 39 … 31 days
    assert [r.exam_count for r in await read_all(journal)] == list(range(10, 40))
    await journal.aclose()


async def test_readiness_sees_a_full_disk_before_any_write_fails(full_disk: Any) -> None:
    journal = AuditJournal(full_disk.path / "journal")
    await journal.open()
    assert await journal.probe() is None
    full_disk.fill()
    reason = await journal.probe()
    assert reason is not None and "No space left" in reason
    full_disk.free()
    assert await journal.probe() is None
    await journal.aclose()
