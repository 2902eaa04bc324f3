"""The cache's time-based indices: their names, templates, read aliases, migration, deletion by age, stats.

Layout 2 (this code): answers and their studies go to the index of the period (a UTC day or an
ISO week) they were made in, ``<prefix>-answers-v2-YYYY.MM.DD`` and ``<prefix>-exams-v2-YYYY.MM.DD``
(the period's first day). Every replica derives the same name from the date, so none has to roll
anything over, and no two race to. An index template per kind and layout (``<prefix>-exams-v2``,
priority 100, its ``version`` the layout) gives each new index its strict mapping and puts it in a
read alias (``<prefix>-cache-exams``, ``<prefix>-cache-answers``). A later layout writes to new
names under its own template and joins the same aliases: an upgrade reads the older indices as
they are (no reindex) until they age out. Layout 1 (before) was one concrete index per kind,
``<prefix>-exams`` and ``<prefix>-answers``: at start-up they are put in the read aliases (once;
their templates removed) and age out like the others, by their newest document.

An index is deleted whole once its period ended ``keep_days`` ago: no ``_delete_by_query``, no ILM
needed (the test distribution has neither). Only indices in the cache's own aliases whose names
are the cache's own are ever deleted: the audit indices keep their own retention.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from elasticsearch import AsyncElasticsearch, BadRequestError, NotFoundError

from federation.elasticsearch import ELASTICSEARCH_ERRORS, IndexSetup, already_exists, ensure_index, failure
from federation.errors import CacheError

logger = logging.getLogger("federation.cache")

LAYOUT = 2
"""The index layout this code writes (part of the names and the templates' version)."""

Kind = Literal["exams", "answers"]
KINDS: tuple[Kind, ...] = ("answers", "exams")


@dataclass(frozen=True)
class CacheIndexStats:
    """One cache index: its kind, the period it covers (None for a layout-1 index), documents and bytes."""

    index: str
    kind: str
    period_start: dt.date | None
    documents: int
    size_bytes: int


class CacheIndices:
    """Names, set-up, migration, expiry and stats of the cache's indices (one object per cache)."""

    def __init__(
        self,
        client: AsyncElasticsearch,
        prefix: str,
        mappings: Mapping[Kind, Mapping[str, Any]],
        *,
        period: Literal["day", "week"] = "week",
        keep_days: int = 30,
        ilm_policy: str | None = None,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self._client = client
        self.prefix = prefix
        self._mappings = mappings
        self.period = period
        self.keep_days = keep_days
        self.ilm_policy = ilm_policy
        self.clock = clock
        self._dated = re.compile(
            rf"^{re.escape(prefix)}-(exams|answers)-v(\d+)-(\d{{4}})\.(\d{{2}})\.(\d{{2}})$"
        )
        self._ready: set[str] = set()
        self._templates_ready = False

    def alias(self, kind: Kind) -> str:
        """The read alias over every index of ``kind``, of every layout."""
        return f"{self.prefix}-cache-{kind}"

    def legacy(self, kind: Kind) -> str:
        """The one concrete index of ``kind`` that layout 1 wrote."""
        return f"{self.prefix}-{kind}"

    def period_start(self, at: dt.datetime) -> dt.date:
        """The first day of the period ``at`` (UTC) falls in."""
        day = at.astimezone(dt.UTC).date()
        return day if self.period == "day" else day - dt.timedelta(days=day.weekday())

    def index_for(self, kind: Kind, at: dt.datetime) -> str:
        """The index answers (or studies) made at ``at`` are written to."""
        return f"{self.prefix}-{kind}-v{LAYOUT}-{self.period_start(at):%Y.%m.%d}"

    def exams_of(self, answers_index: str) -> str:
        """The exams index written together with ``answers_index`` (same layout and period)."""
        return f"{self.prefix}-exams{answers_index[len(self.prefix) + len('-answers') :]}"

    def parse(self, index: str) -> tuple[Kind, dt.date | None] | None:
        """Kind and period start of one of the cache's own index names (None for any other name)."""
        for legacy in KINDS:
            if index == self.legacy(legacy):
                return legacy, None
        match = self._dated.match(index)
        if match is None:
            return None
        kind_name, _, year, month, day = match.groups()
        kind: Kind = "exams" if kind_name == "exams" else "answers"
        return kind, dt.date(int(year), int(month), int(day))

    def _period_end(self, start: dt.date) -> dt.date:
        return start + dt.timedelta(days=1 if self.period == "day" else 7)

    def _setup(self, kind: Kind, index: str, *, template: bool) -> IndexSetup:
        settings: dict[str, Any] = {"number_of_shards": 1, "number_of_replicas": 0, "refresh_interval": "1s"}
        if self.ilm_policy is not None:
            settings["index.lifecycle.name"] = self.ilm_policy
        return IndexSetup(
            index,
            self._mappings[kind],
            settings=settings,
            template=f"{self.prefix}-{kind}-v{LAYOUT}" if template else None,
            priority=100,
            meta={"owner": "pacsfed-cache", "layout": LAYOUT},
            create=not template,
            upgrade=template,  # the template's pattern: indices of this layout gain fields added since
            aliases=(self.alias(kind),),
            version=LAYOUT if template else None,
        )

    async def prepare(self) -> None:
        """Templates of this layout, the migration of layout 1's indices, and the current period's indices."""
        if not self._templates_ready:
            for kind in KINDS:
                pattern = f"{self.prefix}-{kind}-v{LAYOUT}-*"
                await ensure_index(
                    self._client,
                    self._setup(kind, pattern, template=True),
                    CacheError,
                    "cannot prepare the index template",
                )
            await self._migrate()
            self._templates_ready = True
        await self.ensure_current()

    async def ensure_current(self) -> tuple[str, str]:
        """The answers and exams indices of the current period, created if absent (by any replica)."""
        now = self.clock()
        names = (self.index_for("answers", now), self.index_for("exams", now))
        for kind, name in zip(KINDS, names, strict=True):
            if name not in self._ready:
                await ensure_index(
                    self._client,
                    self._setup(kind, name, template=False),
                    CacheError,
                    "cannot prepare the index",
                )
                self._ready.add(name)
        return names

    async def _migrate(self) -> None:
        """Put layout 1's concrete indices in the read aliases (no reindex) and drop their templates."""
        try:
            for kind in KINDS:
                legacy = self.legacy(kind)
                with_alias = await self._client.indices.exists_alias(name=self.alias(kind), index=legacy)
                if not with_alias and await self._client.indices.exists(index=legacy):
                    await self._client.indices.put_alias(index=legacy, name=self.alias(kind))
                    logger.info(
                        "cache: index %s (layout 1) joins the read alias %s", legacy, self.alias(kind)
                    )
                with contextlib.suppress(NotFoundError):
                    await self._client.indices.delete_index_template(name=legacy)
        except BadRequestError as exc:
            if not already_exists(exc):
                raise CacheError(f"cannot migrate the cache indices ({exc.error})") from exc
        except ELASTICSEARCH_ERRORS as exc:
            raise failure(exc, CacheError, "cannot migrate the cache indices") from exc

    async def live(self, kind: Kind) -> list[str]:
        """Every index in the read alias of ``kind``, newest period first (layout 1's last)."""
        try:
            found = await self._client.indices.get_alias(name=self.alias(kind))
        except NotFoundError:
            return []
        except ELASTICSEARCH_ERRORS as exc:
            raise failure(exc, CacheError, "cannot list the cache indices") from exc
        return sorted(found, key=self._order)

    def _order(self, index: str) -> tuple[int, int, str]:
        parsed = self.parse(index)
        start = parsed[1] if parsed is not None else None
        return (1, 0, index) if start is None else (0, -start.toordinal(), index)

    async def delete_expired(self) -> list[str]:
        """Delete the cache's indices whose period ended ``keep_days`` ago; their names."""
        cutoff = self.clock().astimezone(dt.UTC).date() - dt.timedelta(days=self.keep_days)
        expired: list[str] = []
        for kind in KINDS:
            for index in await self.live(kind):
                parsed = self.parse(index)
                if parsed is None:
                    continue  # someone else's index in our alias: never ours to delete
                start = parsed[1]
                if start is None:
                    newest = await self._newest(index, kind)
                    if newest is None or newest < cutoff:
                        expired.append(index)
                elif self._period_end(start) <= cutoff:
                    expired.append(index)
        if expired:
            try:
                await self._client.indices.delete(index=",".join(expired), ignore_unavailable=True)
            except NotFoundError:
                pass  # another replica deleted them first
            except ELASTICSEARCH_ERRORS as exc:
                raise failure(exc, CacheError, "cannot delete expired cache indices") from exc
            self._ready.difference_update(expired)
            logger.info("cache: deleted %d indices past %d days", len(expired), self.keep_days)
        return expired

    async def _newest(self, index: str, kind: Kind) -> dt.date | None:
        """The day of the newest document in a layout-1 index (None when empty)."""
        field = "answered_at" if kind == "answers" else "cached_at"
        try:
            found = await self._client.search(
                index=index, size=0, aggregations={"newest": {"max": {"field": field}}}
            )
        except ELASTICSEARCH_ERRORS as exc:
            raise failure(exc, CacheError, "cannot date a cache index") from exc
        value = found["aggregations"]["newest"].get("value")
        return None if value is None else dt.datetime.fromtimestamp(value / 1000, dt.UTC).date()

    async def stats(self) -> list[CacheIndexStats]:
        """Documents and bytes of every cache index, newest period first."""
        names = [index for kind in KINDS for index in await self.live(kind)]
        if not names:
            return []
        try:
            found = await self._client.indices.stats(index=",".join(names), metric="docs,store")
        except ELASTICSEARCH_ERRORS as exc:
            raise failure(exc, CacheError, "cannot read the cache's index stats") from exc
        result = []
        for index in names:
            parsed = self.parse(index)
            totals = found["indices"].get(index, {}).get("primaries", {})
            result.append(
                CacheIndexStats(
                    index,
                    parsed[0] if parsed is not None else "other",
                    parsed[1] if parsed is not None else None,
                    int(totals.get("docs", {}).get("count", 0)),
                    int(totals.get("store", {}).get("size_in_bytes", 0)),
                )
            )
        return result
