"""The exam cache interface, and the in-memory backend used by the demo.

Every successful source answer is written through; a cache failure never fails a query, it is
reported in the answer (``cacheStatus``) and on ``/readyz``, and writes resume once it is back.
"""

from __future__ import annotations

import abc
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from federation.models import CacheStatus, PatientQuery, SourceInfo, StudyRecord
from federation.names import fold, name_parts


@dataclass(frozen=True)
class CacheHealth:
    """Whether the cache can be used now, and why not."""

    status: CacheStatus
    backend: str
    detail: str | None = None


def document_id(source_id: str, study_instance_uid: str) -> str:
    """The stable id of one (source, study) pair: a re-query updates, never duplicates."""
    return f"{source_id}:{study_instance_uid}"


class ExamCache(abc.ABC):
    """Where source answers are written through to, and read back from."""

    backend: str

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Prepare the backend (templates, indices); never raises if the backend is down."""

    @abc.abstractmethod
    async def store(self, source: SourceInfo, query: PatientQuery, records: Sequence[StudyRecord]) -> None:
        """Write one source's answer; raise CacheError when the backend cannot take it."""

    @abc.abstractmethod
    async def lookup(self, query: PatientQuery) -> list[StudyRecord]:
        """Every cached study of the patient (as queried) across sources."""

    @abc.abstractmethod
    async def search_by_name(
        self, family_name: str, birth_date: dt.date | None = None, limit: int = 100
    ) -> list[StudyRecord]:
        """Cached studies by folded family-name prefix (and birth date): folding is done in Python."""

    @abc.abstractmethod
    async def health(self) -> CacheHealth:
        """Check the backend now."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release clients and connections."""


class MemoryExamCache(ExamCache):
    """A process-local cache with the same behaviour, for the demo and unit tests."""

    backend = "memory"

    def __init__(self) -> None:
        self._documents: dict[str, tuple[PatientQuery, StudyRecord, dt.datetime]] = {}

    async def store(self, source: SourceInfo, query: PatientQuery, records: Sequence[StudyRecord]) -> None:
        """Keep each record under its stable (source, study) id."""
        now = dt.datetime.now(dt.UTC)
        for record in records:
            self._documents[document_id(source.id, record.study_instance_uid)] = (query, record, now)

    async def lookup(self, query: PatientQuery) -> list[StudyRecord]:
        """The records stored for exactly this patient query."""
        return [record for stored, record, _ in self._documents.values() if stored == query]

    async def search_by_name(
        self, family_name: str, birth_date: dt.date | None = None, limit: int = 100
    ) -> list[StudyRecord]:
        """Records whose folded family name starts with the folded ``family_name``."""
        wanted = fold(family_name)
        found = [
            record
            for _, record, _ in self._documents.values()
            if record.patient_name
            and fold(name_parts(record.patient_name).family).startswith(wanted)
            and (birth_date is None or record.patient_birth_date == birth_date)
        ]
        return found[:limit]

    async def health(self) -> CacheHealth:
        """Always available."""
        return CacheHealth(CacheStatus.OK, self.backend)

    def __len__(self) -> int:
        return len(self._documents)
