"""Reading the journal: records after a position (from memory when a shipper keeps up), the newest ones."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path

from federation.audit._segments import (
    SEGMENT,
    START,
    Position,
    is_packed,
    packed_path,
    reason_of,
    record_lines,
    segment_name,
    unpacked,
)
from federation.audit.clock import SegmentSpan
from federation.audit.records import AuditRecord
from federation.errors import AuditError

logger = logging.getLogger("federation.audit.journal")


class JournalReading:
    """The reading half of :class:`federation.audit.journal.AuditJournal` (which sets these attributes)."""

    directory: Path
    clock: Callable[[], float]
    journal_id: str | None
    _state: threading.Lock
    _committed: Position | None
    _remembered: dict[Position, tuple[AuditRecord, Position]]
    _spans: dict[int, tuple[int, SegmentSpan]]

    @property
    def end(self) -> Position | None:
        """Just past the last record this process has fsync'd (in the newest segment); None before its first write."""
        return self._committed

    def _segments(self) -> list[tuple[int, Path]]:
        found: dict[int, Path] = {}
        for entry in os.scandir(self.directory):
            match = SEGMENT.match(entry.name)
            if match:
                number = int(match.group(1))
                if number not in found or not match.group(2):  # both: a compression was interrupted
                    found[number] = Path(entry.path)
        return sorted(found.items())

    async def read(
        self, after: Position, *, max_records: int = 500, max_bytes: int = 4 * 1024 * 1024
    ) -> tuple[list[AuditRecord], Position]:
        """Records written after ``after`` (oldest first) and the position just past the last one read."""
        if after in self._remembered:  # a shipper keeping up: the records it wants were just written
            records: list[AuditRecord] = []
            while len(records) < max_records and (entry := self._remembered.get(after)) is not None:
                records.append(entry[0])
                after = entry[1]
            return records, after
        return await asyncio.to_thread(self._read_sync, after, max_records, max_bytes)

    def _read_sync(
        self, after: Position, max_records: int, max_bytes: int
    ) -> tuple[list[AuditRecord], Position]:
        records: list[AuditRecord] = []
        position = after
        segments, committed = self._snapshot(after)
        for number, path in segments:
            if number < after.segment:
                continue
            start = after.offset if number == after.segment else 0
            position = Position(number, start)
            chunk = self._chunk(number, path, start, max_bytes, committed)
            if chunk is None:
                continue  # pruned meanwhile
            data, available, is_open = chunk
            for record, end in record_lines(data, number, start):
                if record is not None:
                    records.append(record)
                position = Position(number, end)
                if len(records) >= max_records:
                    return records, position
            if len(data) < available or is_open:
                return records, position  # more to read next time, or the segment still being written
            if position.offset < start + len(data):
                logger.warning(
                    "audit journal: skipping a torn last line in segment %d (%d bytes)",
                    number,
                    start + len(data) - position.offset,
                )
            position = Position(number + 1, 0)
        return records, position

    def _snapshot(self, after: Position = START) -> tuple[list[tuple[int, Path]], Position | None]:
        """The segments (from ``after``'s on) and the open one's fsync'd end, taken together (never mid-rotation)."""
        try:
            with self._state:
                committed = self._committed
                if committed is not None and after.segment == committed.segment:
                    # Only the open segment, the newest, is left to read: no need to list the directory
                    # (a shipper reads after every record; the journal keeps weeks of segments).
                    return [(committed.segment, self.directory / segment_name(committed.segment))], committed
                return self._segments(), committed
        except OSError as exc:
            raise AuditError(f"the audit journal cannot be read ({reason_of(exc)})") from exc

    @staticmethod
    def _chunk(
        number: int, path: Path, start: int, max_bytes: int, committed: Position | None
    ) -> tuple[bytes, int, bool] | None:
        """Up to ``max_bytes`` (at least one whole line) of a segment from ``start``, the bytes available, open?."""
        is_open = committed is not None and committed.segment == number
        if is_packed(path):
            return JournalReading._packed_chunk(path, start, max_bytes)
        try:
            with path.open("rb") as file:
                limit = (
                    committed.offset if is_open and committed is not None else os.fstat(file.fileno()).st_size
                )
                available = max(0, limit - start)
                file.seek(start)
                data = file.read(min(available, max_bytes))
                while len(data) < available and b"\n" not in data:
                    data += file.read(min(available - len(data), max_bytes))
        except FileNotFoundError:
            return None if is_open else JournalReading._packed_chunk(packed_path(path), start, max_bytes)
        except OSError as exc:
            raise AuditError(f"the audit journal cannot be read ({reason_of(exc)})") from exc
        return data, available, is_open

    @staticmethod
    def _packed_chunk(path: Path, start: int, max_bytes: int) -> tuple[bytes, int, bool] | None:
        """:meth:`_chunk` of a compressed (closed) segment: the same bytes, offsets in them."""
        try:
            whole = unpacked(path)
        except FileNotFoundError:
            return None  # pruned meanwhile
        except (OSError, EOFError) as exc:
            raise AuditError(f"the audit journal cannot be read ({type(exc).__name__})") from exc
        available = max(0, len(whole) - start)
        end = start + min(available, max_bytes)
        if end < len(whole) and b"\n" not in whole[start:end]:
            newline = whole.find(b"\n", end)
            end = len(whole) if newline < 0 else newline + 1
        return whole[start:end], available, False

    async def recent(self, max_bytes: int = 16 * 1024 * 1024) -> list[AuditRecord]:
        """The newest records held locally (oldest first), reading at most about ``max_bytes``."""
        return await asyncio.to_thread(self._recent_sync, max_bytes)

    def _recent_sync(self, max_bytes: int) -> list[AuditRecord]:
        chosen: list[tuple[int, bytes]] = []
        total = 0
        segments, committed = self._snapshot()
        for number, path in reversed(segments):
            chunk = self._chunk(number, path, 0, max_bytes, committed)
            if chunk is None:
                continue
            chosen.append((number, chunk[0]))
            total += len(chunk[0])
            if total >= max_bytes:
                break
        return [
            record
            for number, data in reversed(chosen)
            for record, _ in record_lines(data, number, 0)
            if record is not None
        ]
