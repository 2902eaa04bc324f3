"""The journal's files: segment names and positions, fsync of the directory, parsing lines of records.

A shipped segment may be compressed (``audit-NNN.jsonl.gz``, gzip): it reads as the same bytes, and
positions in it are offsets in those bytes, so nothing that reads the journal tells the difference.
"""

from __future__ import annotations

import gzip
import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

from pydantic import ValidationError

from federation.audit.records import AuditRecord

logger = logging.getLogger("federation.audit.journal")

SEGMENT = re.compile(r"^audit-(\d{12})\.jsonl(\.gz)?$")
EDGE_BYTES = 64 * 1024
"""How much of a segment's head and tail is read for its first and last record."""


class Position(NamedTuple):
    """A place in the journal: everything before byte ``offset`` of segment ``segment`` (and before it)."""

    segment: int
    offset: int


START = Position(0, 0)
"""Before the first record ever written."""


def segment_name(number: int) -> str:
    """The file name of segment ``number``."""
    return f"audit-{number:012d}.jsonl"


def packed_path(path: Path) -> Path:
    """Where segment ``path`` is once compressed."""
    return path if path.suffix == ".gz" else path.with_name(f"{path.name}.gz")


def is_packed(path: Path) -> bool:
    """Whether ``path`` names a compressed segment."""
    return path.suffix == ".gz"


def unpacked(path: Path) -> bytes:
    """The whole content of a compressed segment (FileNotFoundError if it is gone)."""
    with gzip.open(path, "rb") as file:
        return file.read()


def fsync_dir(directory: Path) -> None:
    """Make the directory's entries (new, renamed, removed files) durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def reason_of(exc: OSError) -> str:
    """What went wrong, without the path (which is the operator's, but says nothing useful)."""
    return exc.strerror or type(exc).__name__


def edge_records(path: Path) -> tuple[AuditRecord | None, AuditRecord | None]:
    """The first and the last readable record of a segment (quietly: torn lines are expected here)."""
    try:
        if is_packed(path):
            data = unpacked(path)
            size, head, tail = len(data), data[:EDGE_BYTES], data[-EDGE_BYTES:]
        else:
            with path.open("rb") as file:
                size = os.fstat(file.fileno()).st_size
                head = file.read(EDGE_BYTES)
                file.seek(max(0, size - EDGE_BYTES))
                tail = file.read(EDGE_BYTES)
    except FileNotFoundError:
        if not is_packed(path):  # compressed meanwhile
            return edge_records(packed_path(path))
        return None, None
    first = next((r for r in map(quiet_record, head.split(b"\n")) if r is not None), None)
    tail_lines = tail.split(b"\n")[0 if size <= EDGE_BYTES else 1 :]
    last = next((r for r in map(quiet_record, reversed(tail_lines)) if r is not None), None)
    return first, last


def quiet_record(line: bytes) -> AuditRecord | None:
    """The record on ``line``, or None for a blank or unreadable one (nothing logged)."""
    if not line.strip():
        return None
    try:
        return AuditRecord.model_validate_json(line)
    except ValidationError:
        return None


def record_lines(data: bytes, segment: int, start: int) -> Iterator[tuple[AuditRecord | None, int]]:
    """Each whole line of ``data`` (read from byte ``start``) parsed, with the offset just past it."""
    offset = 0
    while (newline := data.find(b"\n", offset)) >= 0:
        yield parse_line(data[offset:newline], segment, start + offset), start + newline + 1
        offset = newline + 1


def parse_line(line: bytes, segment: int, offset: int) -> AuditRecord | None:
    """The record on ``line``, or None (logged with its place, never its content) if unreadable."""
    try:
        return AuditRecord.model_validate_json(line)
    except ValidationError:
        logger.warning("audit journal: skipping an unreadable line in segment %d at byte %d", segment, offset)
        return None
