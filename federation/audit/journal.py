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
import logging
import os
import re
import secrets
import threading
import time
from collections.abc import Callable
from pathlib import Path

from federation.access.principals import PrincipalKind
from federation.audit._journal_upkeep import JournalUpkeep
from federation.audit._segments import START, Position, edge_records, fsync_dir, reason_of, segment_name
from federation.audit.clock import ClockWatch, SegmentSpan
from federation.audit.records import AuditAction, AuditOutcome, AuditRecord
from federation.errors import AuditError, AuditUnavailable

__all__ = ["DEFAULT_SEGMENT_BYTES", "START", "SYSTEM_ACTOR", "AuditJournal", "Position"]

logger = logging.getLogger(__name__)

DEFAULT_SEGMENT_BYTES = 8 * 1024 * 1024
_REMEMBERED_RECORDS = 1000
"""How many of the newest fsync'd records readers get from memory, without a thread or a file."""

_Pending = tuple[AuditRecord, "asyncio.Future[None] | None"]
"""A record waiting for the next fsync, and its writer's future (None: nobody waits)."""
SYSTEM_ACTOR = "system:pacsfed"
_PROBE_ROOM = 1024 * 1024
"""Free bytes below which readiness checks by writing a block, not by the free space alone."""


class AuditJournal(JournalUpkeep):
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
                _, last = edge_records(path)
                if last is not None:
                    self._seq, self._watch = last.seq or 0, ClockWatch(newest_at=last.at.timestamp())
                    break
        except OSError as exc:
            raise AuditError(f"the audit journal directory is unusable ({reason_of(exc)})") from exc
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
        fsync_dir(self.directory)
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
            raise AuditUnavailable(f"the audit journal cannot be written ({reason_of(exc)})") from exc
        with self._state:
            self._committed = Position(start.segment, start.offset + len(data))
        return start

    def _rotate(self, today: dt.date) -> None:
        self._close_segment()
        assert self._next_segment is not None
        number = self._next_segment
        path = self.directory / segment_name(number)
        self._next_segment = number + 1
        with self._state:
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC, 0o600)
            except OSError as exc:
                self._next_segment = number
                raise AuditUnavailable(f"cannot start an audit journal segment ({reason_of(exc)})") from exc
            self._committed = Position(number, 0)
            self._fd, self._fd_day = fd, today
        try:
            fsync_dir(self.directory)
        except OSError as exc:
            self._close_segment()
            self._discard(number)
            raise AuditUnavailable(f"cannot sync the audit journal directory ({reason_of(exc)})") from exc
        logger.info("audit journal: started segment %d", number)

    def _discard(self, number: int) -> None:
        """Remove segment ``number``, which a failed first write left empty, and reuse its name."""
        with contextlib.suppress(OSError):
            (self.directory / segment_name(number)).unlink(missing_ok=True)
            fsync_dir(self.directory)
        if self._next_segment == number + 1:
            self._next_segment = number

    async def probe(self) -> str | None:
        """None when the journal takes records (readiness): after a failed write, or with the disk nearly
        full, a block is written and fsync'd to find out; otherwise only the free space is looked at."""
        loop = asyncio.get_running_loop()
        # A look at the free space must not queue behind the journal's own writes (its one thread):
        # under load that held /readyz for seconds. Only a probe write after a failure takes its turn.
        executor = self._executor if self.failure is not None else None
        try:
            await loop.run_in_executor(executor, self._probe_sync)
        except OSError as exc:
            self.failure = f"the audit journal cannot be written ({reason_of(exc)})"
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
