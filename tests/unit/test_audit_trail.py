"""The journaled audit trail: sinks fed from their own cursors, outages, restarts and search."""

from __future__ import annotations

import datetime as dt
import errno
import os
from collections.abc import Sequence
from pathlib import Path

import pytest

from federation.audit.journal import AuditJournal
from federation.audit.records import AuditAction, AuditOutcome, AuditRecord, PageKey, newest_page, page_key
from federation.audit.sink import AuditSink, MemoryAuditSink
from federation.audit.trail import JournaledAuditTrail, build_audit_trail
from federation.errors import AuditError, AuditUnavailable
from federation.settings import settings_from_mapping


def make_record(n: int, patient: str = "PA-001^^^HOSP_A", actor: str = "user:alice") -> AuditRecord:
    return AuditRecord(
        at=dt.datetime(2026, 1, 1, tzinfo=dt.UTC) + dt.timedelta(seconds=n),
        action=AuditAction.PATIENT_QUERY,
        outcome=AuditOutcome.SUCCESS,
        actor=actor,
        patient_ids=[patient],
        exam_count=n,
    )


class FlakySink(AuditSink):
    """A durable sink that can be switched off; remembers every delivery (duplicates too)."""

    searchable = True

    def __init__(self, name: str = "flaky", delivered: list[str] | None = None) -> None:
        self.name = name
        self.up = True
        self.delivered: list[str] = [] if delivered is None else delivered
        self.records: dict[str, AuditRecord] = {}

    async def ship(self, records: Sequence[AuditRecord]) -> None:
        if not self.up:
            raise AuditError(f"{self.name}: down")
        for record in records:
            self.delivered.append(record.id)
            self.records[record.id] = record

    async def search(
        self,
        *,
        patient_id: str | None = None,
        actor: str | None = None,
        first: int = 50,
        after: PageKey | None = None,
    ) -> list[AuditRecord]:
        if not self.up:
            raise AuditError(f"{self.name}: down")
        return newest_page(list(self.records.values()), first, after)


def trail(directory: Path, *sinks: AuditSink) -> JournaledAuditTrail:
    return JournaledAuditTrail(AuditJournal(directory), sinks, ship_interval_s=0.05, backoff_max_s=0.2)


async def test_a_down_sink_loses_nothing_and_gets_each_record_once(tmp_path: Path) -> None:
    sink, other = FlakySink("es"), FlakySink("syslog")
    audit = trail(tmp_path, sink, other)
    await audit.start()
    try:
        sink.up = False
        records = [make_record(n) for n in range(10)]
        for record in records:
            await audit.record(record)
        assert not await audit.flush(1.0)
        assert audit.sink_status() == {"es": False, "syslog": True}
        assert other.delivered == [r.id for r in records]  # the sinks ship independently
        sink.up = True
        assert await audit.flush(2.0)
        assert sink.delivered == [r.id for r in records]
    finally:
        await audit.aclose()


async def test_a_restart_resumes_from_the_cursor(tmp_path: Path) -> None:
    delivered: list[str] = []
    first = trail(tmp_path, FlakySink("es", delivered))
    await first.start()
    shipped = [make_record(n) for n in range(3)]
    for record in shipped:
        await first.record(record)
    assert await first.flush()
    await first.aclose()
    down = FlakySink("es", delivered)
    second = trail(tmp_path, down)
    await second.start()
    down.up = False
    unshipped = [make_record(n) for n in range(3, 6)]
    for record in unshipped:
        await second.record(record)
    await second.aclose()  # the final attempt fails: the records stay in the journal

    third = trail(tmp_path, FlakySink("es", delivered))
    await third.start()
    assert await third.flush()
    await third.aclose()
    assert delivered == [r.id for r in shipped + unshipped]


async def test_record_raises_when_the_journal_cannot_be_written(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    audit = trail(tmp_path / "file" / "journal", MemoryAuditSink())
    with pytest.raises(AuditError):
        await audit.start()
    with pytest.raises(AuditError):
        await audit.record(make_record(1))
    await audit.aclose()


async def test_memory_search_by_bare_or_full_id_and_actor(tmp_path: Path) -> None:
    audit = trail(tmp_path, MemoryAuditSink())
    await audit.start()
    try:
        await audit.record(a := make_record(1, "PA-001^^^HOSP_A"))
        await audit.record(b := make_record(2, "PA-001^^^HOSP_B", actor="user:bob"))
        await audit.record(c := make_record(3, "PA-001^^^"))
        await audit.record(make_record(4, "PA-002^^^HOSP_A"))
        # Found at once, shipped or not.
        assert [r.id for r in await audit.search(patient_id="PA-001")] == [c.id, b.id, a.id]
        assert [r.id for r in await audit.search(patient_id="PA-001^^^HOSP_A")] == [c.id, a.id]
        assert [r.id for r in await audit.search(actor="user:bob")] == [b.id]
        assert len(await audit.search(first=2)) == 2
    finally:
        await audit.aclose()


async def test_memory_sink_is_refilled_from_the_journal_after_a_restart(tmp_path: Path) -> None:
    first = trail(tmp_path, MemoryAuditSink())
    await first.start()
    await first.record(record := make_record(1))
    await first.aclose()
    second = trail(tmp_path, MemoryAuditSink())
    await second.start()
    try:
        assert await second.flush()
        assert [r.id for r in await second.search(patient_id="PA-001")] == [record.id]
    finally:
        await second.aclose()


async def test_search_falls_back_to_the_journal_when_the_sink_is_down(tmp_path: Path) -> None:
    sink = FlakySink("es")
    audit = trail(tmp_path, sink)
    await audit.start()
    try:
        records = [make_record(n) for n in range(3)]
        for record in records:
            await audit.record(record)
        assert await audit.flush()
        sink.up = False
        found = await audit.search(patient_id="PA-001", first=2)
        assert [r.id for r in found] == [records[2].id, records[1].id]
    finally:
        await audit.aclose()


async def test_shipped_segments_are_pruned_only_with_a_durable_sink(tmp_path: Path) -> None:
    durable = JournaledAuditTrail(
        AuditJournal(tmp_path / "a", segment_bytes=300), [FlakySink("es")], journal_keep_days=0
    )
    memory = JournaledAuditTrail(
        AuditJournal(tmp_path / "b", segment_bytes=300), [MemoryAuditSink()], journal_keep_days=0
    )
    for audit in (durable, memory):
        await audit.start()
        for n in range(6):
            await audit.record(make_record(n))
        assert await audit.flush()
    try:
        assert await durable.maintain() >= 4
        assert await memory.maintain() == 0
    finally:
        await durable.aclose()
        await memory.aclose()


def test_build_uses_memory_without_elasticsearch(tmp_path: Path) -> None:
    settings = settings_from_mapping(
        {"cache": {"backend": "memory"}, "audit": {"journal_dir": str(tmp_path / "j")}}
    )
    audit = build_audit_trail(settings, None)
    assert [type(s).__name__ for s in audit.sinks] == ["MemoryAuditSink"]
    assert audit.journal.directory == tmp_path / "j"


async def test_pages_follow_the_cursor_and_say_when_only_the_journal_answered(tmp_path: Path) -> None:
    sink = FlakySink("es")
    audit = trail(tmp_path, sink)
    await audit.start()
    try:
        records = [make_record(n) for n in range(5)]
        for record in records:
            await audit.record(record)
        assert await audit.flush()
        pages: list[list[str]] = []
        after = None
        while True:
            events, more, partial = await audit.search_page(patient_id="PA-001", first=2, after=after)
            assert partial is False
            pages.append([r.id for r in events])
            if not more:
                break
            after = page_key(events[-1])
        assert pages == [[records[4].id, records[3].id], [records[2].id, records[1].id], [records[0].id]]
        sink.up = False
        events, more, partial = await audit.search_page(patient_id="PA-001", first=10, after=None)
        assert partial is True and more is False
        assert [r.id for r in events] == [r.id for r in reversed(records)]
    finally:
        await audit.aclose()


async def test_actions_refused_for_a_broken_journal_are_journaled_once_it_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    audit = trail(tmp_path, MemoryAuditSink())
    await audit.start()
    try:
        refused = make_record(1)
        with monkeypatch.context() as broken:
            broken.setattr(os, "write", lambda fd, data: (_ for _ in ()).throw(OSError(errno.ENOSPC, "full")))
            with pytest.raises(AuditUnavailable):
                await audit.record(refused)
            assert await audit.unavailable() is not None
        assert await audit.unavailable() is None  # the probe writes again: the refused action follows
        await audit.record(make_record(2))
        found = {r.id: r for r in await audit.journal.recent()}
        assert found[refused.id].outcome is AuditOutcome.FAILURE
        assert found[refused.id].detail == "AUDIT_UNAVAILABLE"
    finally:
        await audit.aclose()
