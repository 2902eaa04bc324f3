"""The audit journal: an append-only, fsync'd JSONL log on local disk, written before anything else.

Layout of ``journal_dir`` (0700; every file 0600):

- ``audit-000000000001.jsonl``, ``audit-000000000002.jsonl``, …: segments, one record per line.
  A new segment starts at each process's first write, when the current one reaches ``segment_bytes``,
  and when the UTC day changes; only the newest segment of the running process is ever
  appended to, so a torn line (a crash mid-write) can only be the last line of an older
  segment, and readers skip it with a warning.
- ``cursor-<sink>.json``: how far a sink (Elasticsearch, syslog) has shipped, as a segment
  number and a byte offset, replaced atomically (temp file, fsync, rename, directory fsync).

- ``.lock``: held (``flock``) by the one process writing the journal; a second one gets AuditError.

Appends are grouped: records arriving while an fsync runs are written together and share the
next fsync (one thread, never the event loop): ``os.write`` on an unbuffered descriptor, so there
is nothing to flush, then ``os.fsync``. ``append`` returns only once its line is on disk.

Each record gets the journal's id (``journal-id``, made once) and the next sequence number as it
is written: the order of the records, which the clock cannot change. A record older than the
newest one before it means the clock stepped back; wall time racing ahead of monotonic time
between two records, or a first record far beyond the newest on disk, means it stepped ahead:
either is logged and journaled as a ``clock-step`` record before the record that showed it.

``append(record, wait=False)`` queues a record for the next batch without waiting for it
(written at the latest ``lazy_delay_s`` later): for an outcome whose access is already durable.
A failed write leaves no file behind (a segment it had just started is removed, its number
reused), sets :attr:`AuditJournal.failure` until a write or :meth:`AuditJournal.probe` succeeds.

Segments are deleted by :meth:`AuditJournal.prune` only when every durable sink has shipped
them and their last record is older than a keep period by the records' own timeline
(:mod:`federation.audit.clock`), never by the wall clock alone; the trail calls it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import datetime as dt
import fcntl
import json
import logging
import os
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

from pydantic import ValidationError

from federation.access.principals import PrincipalKind
from federation.audit.clock import ClockWatch, SegmentSpan, Timeline
from federation.audit.records import AuditAction, AuditOutcome, AuditRecord
from federation.errors import AuditError, AuditUnavailable

logger = logging.getLogger(__name__)

_SEGMENT = re.compile(r"^audit-(\d{12})\.jsonl$")
_CURSOR_NAME = re.compile(r"^[a-z0-9-]{1,64}$")
DEFAULT_SEGMENT_BYTES = 8 * 1024 * 1024
_REMEMBERED_RECORDS = 1000
"""How many of the newest fsync'd records readers get from memory, without a thread or a file."""


class Position(NamedTuple):
    """A place in the journal: everything before byte ``offset`` of segment ``segment`` (and before it)."""

    segment: int
    offset: int


START = Position(0, 0)
"""Before the first record ever written."""

_Pending = tuple[AuditRecord, "asyncio.Future[None] | None"]
"""A record waiting for the next fsync, and its writer's future (None: nobody waits)."""
_EDGE_BYTES = 64 * 1024
"""How much of a segment's head and tail is read for its first and last record."""
SYSTEM_ACTOR = "system:pacsfed"
_PROBE_ROOM = 1024 * 1024
"""Free bytes below which readiness checks by writing a block, not by the free space alone."""


def _segment_name(number: int) -> str:
    return f"audit-{number:012d}.jsonl"


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _reason(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


class AuditJournal:
    """Append-only local journal of audit records, with per-sink shipping cursors."""

    def __init__(
        self,
        directory: Path,
        *,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        lazy_delay_s: float = 0.5,
    ) -> None:
        self.directory = directory
        self.segment_bytes = segment_bytes
        self.clock = clock
        self._monotonic = monotonic
        self.lazy_delay_s = lazy_delay_s
        self.journal_id: str | None = None
        self.failure: str | None = None
        """Why the last write failed; None once one succeeds (readiness)."""
        self._seq = 0
        self._watch = ClockWatch()
        """What the records written so far say of time (steps back and ahead)."""
        self._spans: dict[int, tuple[int, SegmentSpan]] = {}
        self._kick_handle: asyncio.TimerHandle | None = None
        self._fd: int | None = None
        self._fd_day: dt.date | None = None
        self._next_segment: int | None = None
        self._committed: Position | None = None
        """The open segment and its fsync'd size; None until this process first writes."""
        self._state = threading.Lock()
        """Held while a segment is created and when ``_committed`` moves: readers snapshot both at once."""
        self._pending: list[_Pending] = []
        self._remembered: dict[Position, tuple[AuditRecord, Position]] = {}
        """The newest fsync'd records of this process by start position, with their end position."""
        self._writer: asyncio.Task[None] | None = None
        self._lock_fd: int | None = None
        self._closed = False
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="audit-journal")

    # --- writing ---------------------------------------------------------------------------

    async def open(self) -> None:
        """Create or check the directory (0700) and find the next segment number; raise AuditError if unusable."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._open_sync)

    def _open_sync(self) -> None:
        if self._next_segment is not None:
            return
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            if self.directory.stat().st_mode & 0o077:
                try:
                    self.directory.chmod(0o700)
                except PermissionError:
                    logger.warning(
                        "audit journal: the directory is readable by others and cannot be made 0700"
                    )
            self._lock_fd = self._lock()
            found = self._segments()
            self.journal_id = self._journal_id()
            for _, path in reversed(found):
                _, last = _edge_records(path)
                if last is not None:
                    self._seq, self._watch = last.seq or 0, ClockWatch(newest_at=last.at.timestamp())
                    break
        except OSError as exc:
            raise AuditError(f"the audit journal directory is unusable ({_reason(exc)})") from exc
        self._next_segment = max((number for number, _ in found), default=0) + 1

    def _journal_id(self) -> str:
        """This journal's id, made once (atomically) and kept in ``journal-id``."""
        path = self.directory / "journal-id"
        with contextlib.suppress(FileNotFoundError):
            text = path.read_text(encoding="ascii").strip()
            if re.fullmatch(r"[0-9a-f]{16,64}", text):
                return text
        new = secrets.token_hex(8)
        temp = path.with_name(".journal-id.tmp")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, new.encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, path)
        _fsync_dir(self.directory)
        return new

    def _lock(self) -> int:
        """Hold ``.lock`` exclusively: one writing process per journal (segments and cursors are not shared)."""
        fd = os.open(self.directory / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise AuditError(
                "the audit journal is in use by another process (one journal_dir each)"
            ) from None
        return fd

    async def append(self, record: AuditRecord, *, wait: bool = True) -> None:
        """Write ``record`` as one line and return once it is fsync'd; AuditUnavailable if it cannot be.

        With ``wait=False`` the record only joins the next batch (at most ``lazy_delay_s`` later)
        and this returns at once; a failure to write it is logged, not raised.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] | None = loop.create_future() if wait else None
        self._pending.append((record, future))
        if future is None:
            if self._kick_handle is None:
                self._kick_handle = loop.call_later(self.lazy_delay_s, self._kick)
            return
        self._kick()
        await future

    async def settle(self) -> None:
        """Wait until the records queued without waiting are written (or failed): before reading them."""
        if self._pending:
            self._kick()
        if self._writer is not None and not self._writer.done():
            await asyncio.shield(self._writer)

    def _kick(self) -> None:
        if self._kick_handle is not None:
            self._kick_handle.cancel()
            self._kick_handle = None
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_pending(), name="audit-journal-writer")

    async def _write_pending(self) -> None:
        loop = asyncio.get_running_loop()
        while self._pending:
            batch, self._pending = self._pending, []
            saved = (self._seq, dataclasses.replace(self._watch))
            try:
                if self._next_segment is None:  # the newest sequence number is known once open
                    await loop.run_in_executor(self._executor, self._open_sync)
                stamped = self._stamp([record for record, _ in batch])
                lines = [(record.model_dump_json().encode() + b"\n", record) for record in stamped]
                start = await loop.run_in_executor(
                    self._executor, self._write_sync, b"".join(line for line, _ in lines)
                )
            except Exception as exc:  # every waiter must hear of it, whatever went wrong
                self._seq, self._watch = saved  # nothing was written
                reason = (
                    str(exc)
                    if isinstance(exc, AuditError)
                    else f"the audit journal failed ({type(exc).__name__})"
                )
                self.failure = reason
                unwaited = sum(1 for _, future in batch if future is None)
                if unwaited:
                    logger.error("audit journal: %d queued records are lost (%s)", unwaited, reason)
                for _, future in batch:
                    if future is not None and not future.done():
                        future.set_exception(AuditUnavailable(reason))
            else:
                self.failure = None
                self._remember(start, lines)
                for _, future in batch:
                    if future is not None and not future.done():
                        future.set_result(None)

    def _stamp(self, records: list[AuditRecord]) -> list[AuditRecord]:
        """``records`` with this journal's id and the next sequence numbers, after any clock-step record."""
        stamped: list[AuditRecord] = []
        now_mono = self._monotonic()
        for record in records:
            at = record.at.timestamp()
            step = self._watch.observe(at, now_mono)
            if step is not None:
                logger.warning("audit journal: %s", step)
                stamped.append(self._numbered(_clock_record(record, step)))
            stamped.append(self._numbered(record))
        return stamped

    def _numbered(self, record: AuditRecord) -> AuditRecord:
        self._seq += 1
        return record.model_copy(update={"journal": self.journal_id, "seq": self._seq})

    def _remember(self, start: Position, batch: list[tuple[bytes, AuditRecord]]) -> None:
        """Keep the records of a batch just fsync'd from ``start``, for readers (the newest few only)."""
        for line, record in batch:
            end = Position(start.segment, start.offset + len(line))
            self._remembered[start] = (record, end)
            start = end
        while len(self._remembered) > _REMEMBERED_RECORDS:
            del self._remembered[next(iter(self._remembered))]

    def _write_sync(self, data: bytes) -> Position:
        """Append ``data`` and fsync it; return where it starts."""
        self._open_sync()
        today = dt.datetime.fromtimestamp(self.clock(), dt.UTC).date()
        committed = self._committed
        if (
            self._fd is None
            or committed is None
            or committed.offset >= self.segment_bytes
            or self._fd_day != today
        ):
            self._rotate(today)
        assert self._fd is not None
        assert self._committed is not None
        start = self._committed
        try:
            view = memoryview(data)
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
            os.fsync(self._fd)
        except OSError as exc:
            # Cut the unconfirmed bytes and never write to this segment again: after a failed
            # fsync the page cache state is unknown.
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, start.offset)
                os.fsync(self._fd)
            self._close_segment()
            if start.offset == 0:
                self._discard(start.segment)
            raise AuditUnavailable(f"the audit journal cannot be written ({_reason(exc)})") from exc
        with self._state:
            self._committed = Position(start.segment, start.offset + len(data))
        return start

    def _rotate(self, today: dt.date) -> None:
        self._close_segment()
        assert self._next_segment is not None
        number = self._next_segment
        path = self.directory / _segment_name(number)
        self._next_segment = number + 1
        with self._state:
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC, 0o600)
            except OSError as exc:
                self._next_segment = number
                raise AuditUnavailable(f"cannot start an audit journal segment ({_reason(exc)})") from exc
            self._committed = Position(number, 0)
            self._fd, self._fd_day = fd, today
        try:
            _fsync_dir(self.directory)
        except OSError as exc:
            self._close_segment()
            self._discard(number)
            raise AuditUnavailable(f"cannot sync the audit journal directory ({_reason(exc)})") from exc
        logger.info("audit journal: started segment %d", number)

    def _discard(self, number: int) -> None:
        """Remove segment ``number``, which a failed first write left empty, and reuse its name."""
        with contextlib.suppress(OSError):
            (self.directory / _segment_name(number)).unlink(missing_ok=True)
            _fsync_dir(self.directory)
        if self._next_segment == number + 1:
            self._next_segment = number

    async def probe(self) -> str | None:
        """None when the journal takes records (readiness): after a failed write, or with the disk nearly
        full, a block is written and fsync'd to find out; otherwise only the free space is looked at."""
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._executor, self._probe_sync)
        except OSError as exc:
            self.failure = f"the audit journal cannot be written ({_reason(exc)})"
            return self.failure
        self.failure = None
        return None

    def _probe_sync(self) -> None:
        if self.failure is None:
            space = os.statvfs(self.directory)
            if space.f_bfree * space.f_frsize >= _PROBE_ROOM:
                return
        path = self.directory / ".probe"
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            try:
                os.write(fd, bytes(4096))
                os.fsync(fd)
            finally:
                os.close(fd)
        finally:
            with contextlib.suppress(OSError):
                path.unlink()

    def _close_segment(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None

    async def aclose(self) -> None:
        """Finish pending writes, close the open segment and release the lock (once; later calls do nothing)."""
        if self._closed:
            return
        self._closed = True
        if self._pending:
            self._kick()  # records queued without waiting are written now
        if self._writer is not None:
            with contextlib.suppress(Exception):
                await self._writer
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._close_segment)
        self._executor.shutdown(wait=True)
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the lock
            self._lock_fd = None

    # --- reading ---------------------------------------------------------------------------

    @property
    def end(self) -> Position | None:
        """Just past the last record this process has fsync'd (in the newest segment); None before its first write."""
        return self._committed

    def _segments(self) -> list[tuple[int, Path]]:
        found = []
        for entry in os.scandir(self.directory):
            match = _SEGMENT.match(entry.name)
            if match:
                found.append((int(match.group(1)), Path(entry.path)))
        return sorted(found)

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
            for record, end in _lines(data, number, start):
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
                    return [(committed.segment, self.directory / _segment_name(committed.segment))], committed
                return self._segments(), committed
        except OSError as exc:
            raise AuditError(f"the audit journal cannot be read ({_reason(exc)})") from exc

    @staticmethod
    def _chunk(
        number: int, path: Path, start: int, max_bytes: int, committed: Position | None
    ) -> tuple[bytes, int, bool] | None:
        """Up to ``max_bytes`` (at least one whole line) of a segment from ``start``, the bytes available, open?."""
        is_open = committed is not None and committed.segment == number
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
            return None
        except OSError as exc:
            raise AuditError(f"the audit journal cannot be read ({_reason(exc)})") from exc
        return data, available, is_open

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
            for record, _ in _lines(data, number, 0)
            if record is not None
        ]

    # --- cursors and pruning -----------------------------------------------------------------

    def _cursor_path(self, name: str) -> Path:
        if not _CURSOR_NAME.match(name):
            raise ValueError(f"bad cursor name {name!r}")
        return self.directory / f"cursor-{name}.json"

    async def load_cursor(self, name: str) -> Position:
        """Where sink ``name`` stopped shipping (the start when it never shipped)."""
        return await asyncio.to_thread(self._load_cursor_sync, name)

    def _load_cursor_sync(self, name: str) -> Position:
        path = self._cursor_path(name)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return Position(int(data["segment"]), int(data["offset"]))
        except FileNotFoundError:
            return START
        except (OSError, ValueError, KeyError, TypeError) as exc:
            # Shipping again from the start is safe (sinks are idempotent by record id); losing is not.
            logger.warning(
                "audit journal: cursor %s unreadable (%s); shipping from the start", name, type(exc).__name__
            )
            return START

    async def save_cursor(self, name: str, position: Position) -> None:
        """Persist sink ``name``'s position atomically (temp file, fsync, rename, directory fsync)."""
        await asyncio.to_thread(self._save_cursor_sync, name, position)

    def _save_cursor_sync(self, name: str, position: Position) -> None:
        path = self._cursor_path(name)
        temp = path.with_name(f".{path.name}.{threading.get_ident()}.tmp")
        data = json.dumps({"segment": position.segment, "offset": position.offset}).encode()
        try:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            try:
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(temp, path)
            _fsync_dir(self.directory)
        except OSError as exc:
            raise AuditError(f"cannot save the audit cursor {name} ({_reason(exc)})") from exc

    async def prune(self, shipped: Position, keep_s: float) -> int:
        """Delete segments wholly before ``shipped`` whose last record is ``keep_s`` old by the timeline."""
        return await asyncio.to_thread(self._prune_sync, shipped, keep_s)

    def _prune_sync(self, shipped: Position, keep_s: float) -> int:
        removed = 0
        try:
            segments, committed = self._snapshot()
            timeline = self._timeline_sync(segments)
            for number, path in segments:
                if number >= shipped.segment or (committed is not None and number >= committed.segment):
                    break
                age = timeline.segment_age(number)
                if age is not None and age < keep_s:
                    break  # the rest are younger by the records' own order
                path.unlink()
                self._spans.pop(number, None)
                removed += 1
            if removed:
                _fsync_dir(self.directory)
        except (OSError, AuditError) as exc:
            logger.warning("audit journal: pruning stopped (%s)", type(exc).__name__)
        if removed:
            logger.info("audit journal: deleted %d shipped segments", removed)
        return removed

    async def timeline(self) -> Timeline:
        """The journal's records as a trusted timeline up to now (:mod:`federation.audit.clock`)."""
        return await asyncio.to_thread(lambda: self._timeline_sync(self._snapshot()[0]))

    def _timeline_sync(self, segments: list[tuple[int, Path]]) -> Timeline:
        spans = []
        for number, path in segments:
            try:
                size = path.stat().st_size
            except FileNotFoundError:
                continue
            known = self._spans.get(number)
            if known is None or known[0] != size:
                first, last = _edge_records(path)
                span = SegmentSpan(
                    number,
                    first.at.timestamp() if first else None,
                    last.at.timestamp() if last else None,
                    first.seq if first else None,
                )
                known = (size, span)
                self._spans[number] = known
            spans.append(known[1])
        return Timeline(spans, self.clock(), journal=self.journal_id)


def _edge_records(path: Path) -> tuple[AuditRecord | None, AuditRecord | None]:
    """The first and the last readable record of a segment (quietly: torn lines are expected here)."""
    try:
        with path.open("rb") as file:
            size = os.fstat(file.fileno()).st_size
            head = file.read(_EDGE_BYTES)
            file.seek(max(0, size - _EDGE_BYTES))
            tail = file.read(_EDGE_BYTES)
    except FileNotFoundError:
        return None, None
    first = next((r for r in map(_quiet, head.split(b"\n")) if r is not None), None)
    tail_lines = tail.split(b"\n")[0 if size <= _EDGE_BYTES else 1 :]
    last = next((r for r in map(_quiet, reversed(tail_lines)) if r is not None), None)
    return first, last


def _quiet(line: bytes) -> AuditRecord | None:
    if not line.strip():
        return None
    try:
        return AuditRecord.model_validate_json(line)
    except ValidationError:
        return None


def _clock_record(before: AuditRecord, step: str) -> AuditRecord:
    """The record of a clock step, journaled just before the record that showed it."""
    return AuditRecord(
        at=before.at,
        action=AuditAction.CLOCK_STEP,
        outcome=AuditOutcome.SUCCESS,
        actor=SYSTEM_ACTOR,
        actor_kind=PrincipalKind.SYSTEM.value,
        channel="system",
        detail=step,
    )


def _lines(data: bytes, segment: int, start: int) -> Iterator[tuple[AuditRecord | None, int]]:
    """Each whole line of ``data`` (read from byte ``start``) parsed, with the offset just past it."""
    offset = 0
    while (newline := data.find(b"\n", offset)) >= 0:
        yield _parse(data[offset:newline], segment, start + offset), start + newline + 1
        offset = newline + 1


def _parse(line: bytes, segment: int, offset: int) -> AuditRecord | None:
    try:
        return AuditRecord.model_validate_json(line)
    except ValidationError:
        logger.warning("audit journal: skipping an unreadable line in segment %d at byte %d", segment, offset)
        return None
