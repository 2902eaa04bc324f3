"""Series and instance listings below one study, merged by UID across the sources that list them."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from federation.access.principals import AccessContext
from federation.audit.records import AuditOutcome
from federation.engine.search import LevelAnswer
from federation.errors import PacsfedError
from federation.models import Deadline, InstanceRecord, SeriesRecord, SourceInfo
from federation.search import (
    InstanceMatch,
    InstanceSearch,
    InstanceSearchResult,
    SeriesMatch,
    SeriesSearch,
    SeriesSearchResult,
)
from federation.service._admission import admitted
from federation.service._base import code_of
from federation.service._search_access import SearchAccess

R = TypeVar("R", SeriesRecord, InstanceRecord)


def _uid_of(record: SeriesRecord | InstanceRecord) -> str:
    """The UID a listing merges by: the series' for series, the instance's for instances."""
    return record.sop_instance_uid if isinstance(record, InstanceRecord) else record.series_instance_uid


def _series_order(record: SeriesRecord) -> tuple[bool, int]:
    return record.series_number is None, record.series_number or 0


def _instance_order(record: InstanceRecord) -> tuple[bool, int]:
    return record.instance_number is None, record.instance_number or 0


class ListingDoors(SearchAccess):
    """Series and instance searches across the sources, authorized and audited."""

    @admitted
    async def search_series(
        self, search: SeriesSearch, access: AccessContext, *, deadline_ms: int | None = None
    ) -> SeriesSearchResult:
        """The study's series, merged by SeriesInstanceUID, from the sources that list series."""
        ask = functools.partial(self.engine.search_series, search.series_keys())
        wanted = search.uids
        series, answer = await self._listed(search, access, deadline_ms, "series", ask, _series_order, wanted)
        return SeriesSearchResult(
            series=tuple(SeriesMatch(records=g.records, sources=g.infos) for g in series),
            sources=answer.outcomes,
            complete=answer.complete,
            elapsed_ms=answer.elapsed_ms,
        )

    @admitted
    async def search_instances(
        self, search: InstanceSearch, access: AccessContext, *, deadline_ms: int | None = None
    ) -> InstanceSearchResult:
        """The series' instances, merged by SOPInstanceUID, from the sources that list instances."""
        ask = functools.partial(self.engine.search_instances, search.instance_keys())
        wanted = search.uids
        found, answer = await self._listed(
            search, access, deadline_ms, "instance", ask, _instance_order, wanted
        )
        return InstanceSearchResult(
            instances=tuple(InstanceMatch(records=g.records, sources=g.infos) for g in found),
            sources=answer.outcomes,
            complete=answer.complete,
            elapsed_ms=answer.elapsed_ms,
        )

    async def _listed(
        self,
        search: SeriesSearch | InstanceSearch,
        access: AccessContext,
        deadline_ms: int | None,
        level: str,
        ask: Callable[[list[str] | None, Deadline], Awaitable[LevelAnswer[R]]],
        order: Callable[[R], tuple[bool, int]],
        wanted: tuple[str, ...] = (),
    ) -> tuple[list[_Group[R]], LevelAnswer[R]]:
        """One listing below a study: authorized, asked, merged by UID, kept (``wanted``: the searched UIDs, checked) and ordered, audited."""
        what = f"{level} search; study {search.study_instance_uid}"
        sources, ids, deadline = await self._below_study(search, access, what, deadline_ms)
        try:
            answer = await ask(sources, deadline)
        except PacsfedError as exc:
            await self._record_search(access, AuditOutcome.FAILURE, ids, sources, code_of(exc), soon=True)
            raise
        groups = _merged(answer.records, _uid_of, self.engine.sources)
        if wanted:
            groups = [group for group in groups if _uid_of(group.record) in wanted]
        groups.sort(key=lambda group: order(group.record))
        asked = [outcome.source.id for outcome in answer.outcomes]
        noun = "series" if level == "series" else "instances"
        await self._record_search(
            access, AuditOutcome.SUCCESS, ids, asked, f"{what}; {len(groups)} {noun}", soon=True
        )
        return groups, answer


@dataclass(frozen=True, slots=True)
class _Group(Generic[R]):
    """One UID's records and their sources, configuration order."""

    records: tuple[R, ...]
    infos: tuple[SourceInfo, ...]

    @property
    def record(self) -> R:
        return self.records[0]


def _merged(records: Sequence[R], key: Callable[[R], str], sources: Sequence[SourceInfo]) -> list[_Group[R]]:
    """Records grouped by their UID, each group's sources in configuration order."""
    order = {info.id: index for index, info in enumerate(sources)}
    infos = {info.id: info for info in sources}
    groups: dict[str, list[R]] = {}
    for record in sorted(records, key=lambda r: order.get(r.source_id, len(order))):
        groups.setdefault(key(record), []).append(record)
    return [
        _Group(tuple(group), tuple(infos[r.source_id] for r in group if r.source_id in infos))
        for group in groups.values()
    ]
