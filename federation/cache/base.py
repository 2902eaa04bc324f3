"""The exam cache interface, and the in-memory backend used by the demo.

Every successful source answer is written through; a cache failure never fails a query, it is
reported in the answer (``cacheStatus``) and on ``/readyz``, and writes resume once it is back.
"""

from __future__ import annotations

import abc
import asyncio
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from federation.identity.names import fold, group_parts
from federation.models import CacheStatus, PatientQuery, SourceInfo, StudyRecord


@dataclass(frozen=True)
class CacheHealth:
    """Whether the cache can be used now, and why not."""

    status: CacheStatus
    backend: str
    detail: str | None = None


@dataclass(frozen=True)
class CachedAnswer:
    """One source's last answer to one patient query, as the cache holds it."""

    source_id: str
    answered_at: dt.datetime
    records: tuple[StudyRecord, ...]


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
        """Write one source's answer (an empty one too); raise CacheError when the backend cannot."""

    async def store_answers(
        self, query: PatientQuery, answers: Sequence[tuple[SourceInfo, Sequence[StudyRecord]]]
    ) -> None:
        """Write several sources' answers to one query: :meth:`store` for each, concurrently.

        Raises the first CacheError once every write has ended.
        """
        outcomes = await asyncio.gather(
            *(self.store(source, query, records) for source, records in answers), return_exceptions=True
        )
        failure = next((o for o in outcomes if isinstance(o, BaseException)), None)
        if failure is not None:
            raise failure

    @abc.abstractmethod
    async def cached_answers(self, query: PatientQuery, source_ids: Sequence[str]) -> dict[str, CachedAnswer]:
        """The last answer of each of these sources to this patient query, where one is cached."""

    @abc.abstractmethod
    async def purge(self, query: PatientQuery, source_id: str | None = None) -> int:
        """Forget the cached answers to this patient query (of one source, or all); return how many."""

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
        self._answers: dict[tuple[str | None, str], CachedAnswer] = {}
        self._unstamped: set[tuple[str | None, str]] = set()
        """Answers whose records do not say ``cached_at`` yet: stamped when first read, not when written."""

    async def store(self, source: SourceInfo, query: PatientQuery, records: Sequence[StudyRecord]) -> None:
        """Keep each record under its stable (source, study) id, and the answer under its query."""
        self._keep(source, query, records, dt.datetime.now(dt.UTC))

    async def store_answers(
        self, query: PatientQuery, answers: Sequence[tuple[SourceInfo, Sequence[StudyRecord]]]
    ) -> None:
        """Keep several sources' answers at once (nothing to wait for in memory)."""
        now = dt.datetime.now(dt.UTC)
        for source, records in answers:
            self._keep(source, query, records, now)

    def _keep(
        self, source: SourceInfo, query: PatientQuery, records: Sequence[StudyRecord], now: dt.datetime
    ) -> None:
        for record in records:
            self._documents[document_id(source.id, record.study_instance_uid)] = (query, record, now)
        key = query.cache_key()
        if key is not None:
            # Stamped once, at the first read: most answers a live query writes are never read back.
            self._answers[(key, source.id)] = CachedAnswer(source.id, now, tuple(records))
            self._unstamped.add((key, source.id))

    async def cached_answers(self, query: PatientQuery, source_ids: Sequence[str]) -> dict[str, CachedAnswer]:
        """The stored answers of these sources to exactly this query, their records saying when they were cached."""
        key = query.cache_key()
        found: dict[str, CachedAnswer] = {}
        for sid in source_ids if key else ():
            answer = self._answers.get((key, sid))
            if answer is None:
                continue
            if (key, sid) in self._unstamped:
                at = answer.answered_at
                answer = CachedAnswer(
                    answer.source_id, at, tuple(record.cached(at) for record in answer.records)
                )
                self._answers[(key, sid)] = answer
                self._unstamped.discard((key, sid))
            found[sid] = answer
        return found

    async def purge(self, query: PatientQuery, source_id: str | None = None) -> int:
        """Drop the answers (and their studies) of one source or all sources to this query."""
        key = query.cache_key()
        doomed = [k for k in self._answers if k[0] == key and source_id in (None, k[1])]
        for answer_key in doomed:
            answer = self._answers.pop(answer_key)
            self._unstamped.discard(answer_key)
            for record in answer.records:
                self._documents.pop(document_id(answer.source_id, record.study_instance_uid), None)
        return len(doomed)

    async def search_by_name(
        self, family_name: str, birth_date: dt.date | None = None, limit: int = 100
    ) -> list[StudyRecord]:
        """Records whose folded family name (in any of the name's groups) starts with the folded ``family_name``."""
        wanted = fold(family_name)
        found = [
            record
            for _, record, _ in self._documents.values()
            if record.patient_pn
            and any(fold(parts.family).startswith(wanted) for parts in group_parts(record.patient_pn))
            and (birth_date is None or record.patient_birth_date == birth_date)
        ]
        return found[:limit]

    async def health(self) -> CacheHealth:
        """Always available."""
        return CacheHealth(CacheStatus.OK, self.backend)

    def __len__(self) -> int:
        return len(self._documents)
