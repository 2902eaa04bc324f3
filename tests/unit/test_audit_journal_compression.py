"""Shipped journal segments are compressed (gzip) and read as before; the keep period is a setting."""

from __future__ import annotations

import gzip
from pathlib import Path

from federation.audit.journal import START, AuditJournal, Position
from federation.audit.records import AuditAction, AuditOutcome, AuditRecord
from federation.audit.trail import build_audit_trail
from federation.settings import settings_from_mapping


def make_record(n: int) -> AuditRecord:
    return AuditRecord(
        action=AuditAction.PATIENT_QUERY,
        outcome=AuditOutcome.SUCCESS,
        actor=f"user:u{n}",
        patient_ids=["PA-7^^^HOSP_A"],
        sources=["hosp-a"],
        exam_count=n,
    )


async def read_all(journal: AuditJournal, after: Position = START) -> list[AuditRecord]:
    records: list[AuditRecord] = []
    while True:
        batch, after_batch = await journal.read(after, max_records=3)
        records.extend(batch)
        if after_batch == after:
            return records
        after = after_batch


async def test_shipped_closed_segments_are_compressed_and_read_as_before(tmp_path: Path) -> None:
    journal = AuditJournal(tmp_path / "journal", segment_bytes=500)
    records = [make_record(n) for n in range(12)]
    for record in records:
        await journal.append(record)
    plain = sorted(journal.directory.glob("audit-*.jsonl"))
    assert len(plain) >= 4
    middle = await journal.read(Position(int(plain[1].stem.split("-")[1]), 0), max_records=1)
    shipped = Position(int(plain[2].stem.split("-")[1]), 0)  # the first two are shipped
    before = plain[0].read_bytes()
    assert await journal.compress(shipped) == 2
    assert await journal.compress(shipped) == 0  # once
    packed = sorted(journal.directory.glob("audit-*.jsonl.gz"))
    assert [p.name for p in packed] == [f"{p.name}.gz" for p in plain[:2]]
    assert gzip.decompress(packed[0].read_bytes()) == before
    assert packed[0].stat().st_size < len(before)
    # Every reader reads them as before: a sink shipping from the start, from a position inside, search.
    assert [r.id for r in await read_all(journal)] == [r.id for r in records]
    assert await journal.read(Position(middle[1].segment, 0), max_records=1) == middle
    assert [r.id for r in await journal.recent()] == [r.id for r in records]
    assert await journal.prune(Position(10**9, 0), keep_s=0) == len(plain) - 1  # gzip'd ones too
    await journal.aclose()
    reopened = AuditJournal(journal.directory)  # numbering and sequence go on after compressed segments
    await reopened.append(make_record(99))
    *_, last_before, new = await read_all(reopened)
    assert new.exam_count == 99 and new.seq is not None and new.seq == (last_before.seq or 0) + 1
    await reopened.aclose()


async def test_the_open_segment_and_unshipped_ones_stay_as_they_are(tmp_path: Path) -> None:
    journal = AuditJournal(tmp_path / "journal", segment_bytes=500)
    for n in range(8):
        await journal.append(make_record(n))
    assert await journal.compress(START) == 0
    assert await journal.compress(Position(10**9, 0), min_age_s=3600) == 0  # shipped, but seconds old
    every = len(list(journal.directory.glob("audit-*.jsonl")))
    assert await journal.compress(Position(10**9, 0)) == every - 1  # never the open one
    assert len(list(journal.directory.glob("audit-*.jsonl"))) == 1
    await journal.aclose()


def test_the_journal_keep_period_is_a_setting(tmp_path: Path) -> None:
    default = settings_from_mapping({"cache": {"backend": "memory"}, "audit": {"journal_dir": str(tmp_path)}})
    assert build_audit_trail(default, None).journal_keep_days == 30
    settings = settings_from_mapping(
        {"cache": {"backend": "memory"}, "audit": {"journal_dir": str(tmp_path), "journal_keep_days": 7}}
    )
    assert build_audit_trail(settings, None).journal_keep_days == 7
