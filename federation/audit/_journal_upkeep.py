"""Looking after the journal: the sinks' shipping cursors, compressing and pruning shipped segments, the timeline."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import logging
import os
import re
import shutil
import threading
from pathlib import Path

from federation.audit._journal_reading import JournalReading
from federation.audit._segments import (
    START,
    Position,
    edge_records,
    fsync_dir,
    is_packed,
    packed_path,
    reason_of,
)
from federation.audit.clock import SegmentSpan, Timeline
from federation.errors import AuditError

logger = logging.getLogger("federation.audit.journal")

_CURSOR_NAME = re.compile(r"^[a-z0-9-]{1,64}$")


class JournalUpkeep(JournalReading):
    """Cursors, pruning and the timeline of :class:`federation.audit.journal.AuditJournal`."""

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
            fsync_dir(self.directory)
        except OSError as exc:
            raise AuditError(f"cannot save the audit cursor {name} ({reason_of(exc)})") from exc

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
                fsync_dir(self.directory)
        except (OSError, AuditError) as exc:
            logger.warning("audit journal: pruning stopped (%s)", type(exc).__name__)
        if removed:
            logger.info("audit journal: deleted %d shipped segments", removed)
        return removed

    async def compress(self, shipped: Position, min_age_s: float = 0.0) -> int:
        """Compress (gzip) the closed segments wholly before ``shipped`` and ``min_age_s`` old; how many now."""
        return await asyncio.to_thread(self._compress_sync, shipped, min_age_s)

    def _compress_sync(self, shipped: Position, min_age_s: float) -> int:
        packed = 0
        temp: Path | None = None
        try:
            segments, committed = self._snapshot()
            timeline = self._timeline_sync(segments) if min_age_s > 0 else None
            for number, path in segments:
                if number >= shipped.segment or (committed is not None and number >= committed.segment):
                    break
                if is_packed(path):
                    continue
                age = timeline.segment_age(number) if timeline is not None else None
                if timeline is not None and (age is None or age < min_age_s):
                    break  # the rest are younger by the records' own order
                target = packed_path(path)
                temp = target.with_name(f".{target.name}.tmp")
                with path.open("rb") as source, temp.open("wb") as raw:
                    with gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as packing:
                        shutil.copyfileobj(source, packing)
                    raw.flush()
                    os.fsync(raw.fileno())
                os.replace(temp, target)
                temp = None
                fsync_dir(self.directory)  # the compressed copy is durable before the original goes
                known = self._spans.get(number)
                if known is not None:  # the same records: keep the span, keyed by the new size
                    self._spans[number] = (target.stat().st_size, known[1])
                path.unlink()
                packed += 1
            if packed:
                fsync_dir(self.directory)
        except (OSError, AuditError) as exc:
            logger.warning(
                "audit journal: compression stopped (%s)",
                reason_of(exc) if isinstance(exc, OSError) else exc,
            )
            if temp is not None:
                with contextlib.suppress(OSError):
                    temp.unlink()
        return packed

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
                first, last = edge_records(path)
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
