"""Where journaled audit records are shipped: the sink contract and the in-process sink."""

from __future__ import annotations

import collections
from abc import ABC, abstractmethod
from collections.abc import Sequence

from federation.audit.clock import Timeline
from federation.audit.records import AuditRecord, PageKey, newest_page


class AuditSink(ABC):
    """A destination fed from the journal; ``ship`` must be idempotent by record id (replays happen)."""

    name: str
    """Names the sink's cursor file (``cursor-<name>.json``) and its log lines."""
    durable: bool = True
    """Keeps records across restarts: its cursor is persisted and it counts for journal pruning."""
    searchable: bool = False
    """Implements :meth:`search`."""

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Prepare what the sink needs (index templates, connections); AuditError if it is down."""

    @abstractmethod
    async def ship(self, records: Sequence[AuditRecord]) -> None:
        """Deliver ``records`` (oldest first) or raise AuditError; nothing counts as shipped until it returns."""

    async def search(
        self,
        *,
        patient_id: str | None = None,
        actor: str | None = None,
        first: int = 50,
        after: PageKey | None = None,
    ) -> list[AuditRecord]:
        """The newest matching records first (older than ``after``); AuditError when the sink cannot answer."""
        raise NotImplementedError

    async def maintain(self, timeline: Timeline) -> None:  # noqa: B027 - optional hook
        """Periodic housekeeping (retention, aged by ``timeline``); AuditError if it cannot be done now."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release what the sink owns (never a client shared with others)."""


def bare_id(patient_id: str) -> str:
    """``ID`` of an audit identifier ``ID^^^ISSUER`` (unchanged when it has no issuer part)."""
    return patient_id.split("^^^", 1)[0]


def patient_forms(patient_id: str) -> tuple[str, ...]:
    """Stored identifiers a search for ``patient_id`` matches, or () to match every issuer of a bare ID.

    ``ID^^^ISSUER`` also finds records where the issuer was unknown (``ID^^^``) or absent
    (``ID``): for an audit, showing one access too many beats hiding one.
    """
    if "^^^" not in patient_id:
        return ()
    bare = bare_id(patient_id)
    return tuple(dict.fromkeys((patient_id, f"{bare}^^^", bare)))


def matches(record: AuditRecord, patient_id: str | None, actor: str | None) -> bool:
    """Whether ``record`` passes the ``search`` filters (the in-process version of the ES query)."""
    if actor is not None and record.actor != actor:
        return False
    if patient_id is None:
        return True
    forms = patient_forms(patient_id)
    if forms:
        return any(pid in forms for pid in record.patient_ids)
    return any(bare_id(pid) == patient_id for pid in record.patient_ids)


def newest_first(records: Sequence[AuditRecord], first: int) -> list[AuditRecord]:
    """At most ``first`` records, newest first, each id once."""
    unique = {record.id: record for record in records}
    return sorted(unique.values(), key=lambda r: (r.at, r.id), reverse=True)[: max(0, first)]


class MemoryAuditSink(AuditSink):
    """Keeps the newest records in memory for ``search`` (the memory cache backend); refilled from the journal at start."""

    name = "memory"
    durable = False
    searchable = True

    def __init__(self, max_records: int = 100_000) -> None:
        self._records: collections.deque[AuditRecord] = collections.deque(maxlen=max_records)
        self._ids: set[str] = set()

    async def ship(self, records: Sequence[AuditRecord]) -> None:
        """Keep ``records`` (ignoring ids already held)."""
        for record in records:
            if record.id in self._ids:
                continue
            if len(self._records) == self._records.maxlen:
                self._ids.discard(self._records[0].id)
            self._records.append(record)
            self._ids.add(record.id)

    async def search(
        self,
        *,
        patient_id: str | None = None,
        actor: str | None = None,
        first: int = 50,
        after: PageKey | None = None,
    ) -> list[AuditRecord]:
        """The newest matching records held in memory."""
        return newest_page([r for r in self._records if matches(r, patient_id, actor)], first, after)
