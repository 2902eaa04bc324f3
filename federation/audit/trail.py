"""The audit trail as the app runs it: the local journal first, then each sink shipped independently.

``record`` returns once the record is fsync'd in the journal (AuditError otherwise: the audited
action must not proceed). One background task per sink reads the journal from that sink's own
persisted cursor, ships in batches (right after each record, and every ``ship_interval_s``),
and backs off exponentially while the sink is down; nothing is lost meanwhile, and a restart
resumes where the cursor says. ``search`` asks the searchable sink (Elasticsearch, or memory
for the memory cache backend) and adds the records it has not received yet; when it cannot
answer, the recent local journal answers instead, and :meth:`JournaledAuditTrail.search_page`
says the answer is partial.

Journal segments every durable sink has shipped are compressed (gzip; read as before), and deleted
once their last record is ``journal_keep_days`` (``audit.journal_keep_days``) old along the journal's own timeline (:mod:`federation.audit.clock`);
with no durable sink (memory backend, no syslog) the journal is the archive and is never pruned.
Sinks apply their own retention by the same timeline, never by the wall clock alone.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Sequence

from elasticsearch import AsyncElasticsearch

from federation.audit.elasticsearch import ElasticsearchAuditSink
from federation.audit.journal import START, AuditJournal
from federation.audit.records import AuditOutcome, AuditRecord, AuditTrail, PageKey, newest_page
from federation.audit.sink import AuditSink, MemoryAuditSink, matches, newest_first
from federation.audit.syslog_sink import SyslogAuditSink
from federation.errors import AuditError, AuditUnavailable
from federation.settings import Settings

logger = logging.getLogger(__name__)

_UNSHIPPED_BYTES = 16 * 1024 * 1024
_REFUSED_KEPT = 10_000
"""Refused actions remembered in memory while the journal cannot write, journaled once it can."""


class _Shipper:
    """One sink's shipping: its cursor, its backoff, its wake-up."""

    def __init__(
        self, sink: AuditSink, journal: AuditJournal, interval_s: float, backoff_max_s: float
    ) -> None:
        self.sink = sink
        self.journal = journal
        self.interval_s = interval_s
        self.backoff_max_s = backoff_max_s
        self.position = START
        self.failures = 0
        self.failed_attempts = 0
        """Failed deliveries since start (``failures`` counts the consecutive ones only), for metrics."""
        self.caught_up_at = time.monotonic()
        """When this sink last had everything journaled: how far behind it is, for metrics."""
        self.wake = asyncio.Event()
        self.forced = asyncio.Event()
        self._lock = asyncio.Lock()
        self._started = False

    async def load(self) -> None:
        self.position = await self.journal.load_cursor(self.sink.name) if self.sink.durable else START

    async def run(self) -> None:
        while True:
            # asyncio.timeout, not wait_for: no task made for each wait (one per audited request).
            if self.failures:
                delay = min(self.backoff_max_s, self.interval_s * 2 ** min(self.failures, 20))
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self.forced.wait()
            else:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.interval_s):
                        await self.wake.wait()
            self.wake.clear()
            self.forced.clear()
            await self.attempt()

    async def attempt(self) -> bool:
        """Ship everything journaled so far; True when caught up."""
        async with self._lock:
            try:
                shipped = await self._ship_all()
            except Exception as exc:  # keep shipping alive whatever a sink raises
                self.failures += 1
                self.failed_attempts += 1
                if self.failures == 1:
                    logger.warning(
                        "audit: sink %s is unavailable (%s); records wait in the journal",
                        self.sink.name,
                        _why(exc),
                    )
                return False
        if self.failures:
            logger.info("audit: sink %s is back after %d failed attempts", self.sink.name, self.failures)
            self.failures = 0
        if shipped:
            logger.debug("audit: shipped %d records to %s", shipped, self.sink.name)
        return True

    async def _ship_all(self) -> int:
        if not self._started:
            await self.sink.start()
            self._started = True
        shipped = 0
        while True:
            if self.position == self.journal.end:
                self.caught_up_at = time.monotonic()
                return shipped  # caught up: no thread and no file for a read that would find nothing
            records, after = await self.journal.read(self.position)
            if records:
                await self.sink.ship(records)
                shipped += len(records)
            if after == self.position:
                return shipped
            if self.sink.durable:
                await self.journal.save_cursor(self.sink.name, after)
            self.position = after

    def lag_s(self) -> float:
        """Seconds since this sink last had everything journaled (0 when it has it now)."""
        if self.position == self.journal.end:
            return 0.0
        return time.monotonic() - self.caught_up_at


def _why(exc: BaseException) -> str:
    # AuditError texts are ours (no patient data); for anything else only the type is logged.
    return str(exc) if isinstance(exc, AuditError) else type(exc).__name__


_COMPRESS_AFTER_S = 3600.0
"""Shipped segments are compressed once their last record is this old (along the journal's timeline)."""


class JournaledAuditTrail(AuditTrail):
    """Journal first (fsync'd), then every sink from its own cursor, in the background."""

    def __init__(
        self,
        journal: AuditJournal,
        sinks: Sequence[AuditSink],
        *,
        ship_interval_s: float = 1.0,
        backoff_max_s: float = 30.0,
        close_timeout_s: float = 2.0,
        journal_keep_days: float = 30.0,
        maintenance_interval_s: float = 3600.0,
    ) -> None:
        self.journal = journal
        self.sinks = tuple(sinks)
        self.close_timeout_s = close_timeout_s
        self.journal_keep_days = journal_keep_days
        self.maintenance_interval_s = maintenance_interval_s
        self._shippers = [_Shipper(sink, journal, ship_interval_s, backoff_max_s) for sink in sinks]
        self._tasks: list[asyncio.Task[None]] = []
        self._refused: collections.deque[AuditRecord] = collections.deque(maxlen=_REFUSED_KEPT)
        self._refused_lost = 0

    async def record(self, record: AuditRecord) -> None:
        """Append durably (AuditUnavailable if the journal cannot be written), then wake the shippers.

        A record the journal refused is kept in memory (as a failure, ``AUDIT_UNAVAILABLE``: the
        action did not happen) and journaled once the journal writes again.
        """
        try:
            await self.journal.append(record)
        except AuditError:
            self._refuse(record)
            raise
        await self._journal_refused()
        for shipper in self._shippers:
            shipper.wake.set()

    def _refuse(self, record: AuditRecord) -> None:
        if len(self._refused) == self._refused.maxlen:
            self._refused_lost += 1
        outcome = AuditOutcome.DENIED if record.outcome is AuditOutcome.DENIED else AuditOutcome.FAILURE
        self._refused.append(record.model_copy(update={"outcome": outcome, "detail": AuditUnavailable.code}))

    async def _journal_refused(self) -> None:
        """Journal the actions refused while the journal could not write (they ride the next batch)."""
        while self._refused:
            await self.journal.append(self._refused.popleft(), wait=False)
        if self._refused_lost:
            logger.error(
                "audit: %d refused actions were not kept (over %d while the journal could not write)",
                self._refused_lost,
                _REFUSED_KEPT,
            )
            self._refused_lost = 0

    async def record_soon(self, record: AuditRecord) -> None:
        """Queue ``record`` for the journal's next batch without waiting (its access is already durable)."""
        await self.journal.append(record, wait=False)

    async def unavailable(self) -> str | None:
        """Why the journal cannot take records (readiness), after trying again; None when it can."""
        reason = await self.journal.probe()
        if reason is None:
            await self._journal_refused()
        return reason

    async def start(self) -> None:
        """Open the journal (AuditError if unusable) and start shipping, replaying what is unshipped."""
        await self.journal.open()
        for shipper in self._shippers:
            await shipper.load()
            shipper.wake.set()
            self._tasks.append(asyncio.create_task(shipper.run(), name=f"audit-ship-{shipper.sink.name}"))
        self._tasks.append(asyncio.create_task(self._maintain(), name="audit-maintenance"))

    async def flush(self, timeout_s: float = 5.0) -> bool:
        """Try every sink now, backoff or not; True when all have everything journaled so far."""
        for shipper in self._shippers:
            shipper.forced.set()
        try:
            async with asyncio.timeout(timeout_s):
                results = await asyncio.gather(*(shipper.attempt() for shipper in self._shippers))
        except TimeoutError:
            return False
        return all(results)

    def shipping(self) -> dict[str, tuple[float, int]]:
        """Sink name → (seconds its shipping is behind the journal, failed deliveries since start), for metrics."""
        return {shipper.sink.name: (shipper.lag_s(), shipper.failed_attempts) for shipper in self._shippers}

    def sink_status(self) -> dict[str, bool]:
        """Sink name → whether its last delivery attempt succeeded (for readiness and metrics)."""
        return {shipper.sink.name: shipper.failures == 0 for shipper in self._shippers}

    async def search(
        self, *, patient_id: str | None = None, actor: str | None = None, first: int = 50
    ) -> list[AuditRecord]:
        """Newest first from the searchable sink plus what it has not received; the journal when it is down."""
        await self.journal.settle()
        shipper = next((s for s in self._shippers if s.sink.searchable), None)
        if shipper is None:
            local = await self.journal.recent(_UNSHIPPED_BYTES)
            return newest_first([r for r in local if matches(r, patient_id, actor)], first)
        pending, _ = await self.journal.read(
            shipper.position, max_records=1_000_000, max_bytes=_UNSHIPPED_BYTES
        )
        try:
            found = await shipper.sink.search(patient_id=patient_id, actor=actor, first=first)
        except AuditError as exc:
            logger.warning("audit: search falls back to the local journal (%s)", exc)
            found = await self.journal.recent(_UNSHIPPED_BYTES)
        return newest_first([r for r in [*found, *pending] if matches(r, patient_id, actor)], first)

    async def search_page(
        self, *, patient_id: str | None, first: int, after: PageKey | None
    ) -> tuple[list[AuditRecord], bool, bool]:
        """Up to ``first`` records older than ``after``, newest first; whether more follow; whether partial.

        Partial: the searchable sink could not answer, so only this server's recent journal was read.
        """
        await self.journal.settle()
        shipper = next((s for s in self._shippers if s.sink.searchable), None)
        partial = False
        found: list[AuditRecord] = []
        pending: list[AuditRecord] = []
        if shipper is None:
            found = await self.journal.recent(_UNSHIPPED_BYTES)
        else:
            pending, _ = await self.journal.read(
                shipper.position, max_records=1_000_000, max_bytes=_UNSHIPPED_BYTES
            )
            try:
                found = await shipper.sink.search(patient_id=patient_id, first=first + 1, after=after)
            except AuditError as exc:
                logger.warning("audit: a partial answer from the local journal (%s)", exc)
                found = await self.journal.recent(_UNSHIPPED_BYTES)
                partial = True
        page = newest_page([r for r in [*found, *pending] if matches(r, patient_id, None)], first + 1, after)
        return page[:first], len(page) > first, partial

    async def _maintain(self) -> None:
        while True:
            await self.maintain()
            await asyncio.sleep(self.maintenance_interval_s)

    async def maintain(self) -> int:
        """Apply the sinks' retention and delete journal segments every durable sink has; return how many.

        Both go by the journal's timeline: a clock set ahead or back ages nothing by itself.
        """
        try:
            timeline = await self.journal.timeline()
        except AuditError as exc:
            logger.warning("audit: maintenance skipped (%s)", exc)
            return 0
        for shipper in self._shippers:
            try:
                await shipper.sink.maintain(timeline)
            except Exception as exc:  # retried at the next round
                logger.warning("audit: maintenance of sink %s failed (%s)", shipper.sink.name, _why(exc))
        durable = [shipper.position for shipper in self._shippers if shipper.sink.durable]
        if not durable:
            return 0
        removed = await self.journal.prune(min(durable), self.journal_keep_days * 86_400)
        # What is kept, shipped an hour ago at least, takes a fraction of the disk (gzip, read as before).
        await self.journal.compress(min(durable), _COMPRESS_AFTER_S)
        return removed

    async def aclose(self) -> None:
        """A short final shipping attempt, then stop the tasks and close the sinks and the journal."""
        with contextlib.suppress(Exception):  # outcome records still queued are written and shipped too
            await self.journal.settle()
        if self._tasks:
            await self.flush(self.close_timeout_s)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        for sink in self.sinks:
            with contextlib.suppress(Exception):
                await sink.aclose()
        await self.journal.aclose()


def build_audit_trail(settings: Settings, es_client: AsyncElasticsearch | None) -> JournaledAuditTrail:
    """The trail for these settings: Elasticsearch when the cache uses it (memory otherwise), plus syslog if configured."""
    audit = settings.audit
    sinks: list[AuditSink] = []
    if es_client is not None:
        sinks.append(ElasticsearchAuditSink(es_client, settings.cache.index_prefix, audit.retention_days))
    else:
        sinks.append(MemoryAuditSink())
    if audit.syslog is not None:
        sinks.append(SyslogAuditSink(audit.syslog))
    return JournaledAuditTrail(
        AuditJournal(audit.journal_dir),
        sinks,
        ship_interval_s=audit.ship_interval_s,
        journal_keep_days=audit.journal_keep_days,
    )
