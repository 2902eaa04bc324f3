"""One call to one source outside a patient query (a report read, a retrieval), under its breaker and slots.

The same protections, with the same meaning, as a history query's requests (``_requests``): a
source whose circuit is open is not asked and the call fails at once (:class:`SourceSkipped`);
the call takes one of pacsfed's slots for the source (``max_concurrency``), and one that gets
none before its deadline is not sent (:class:`SourceBusy`: pacsfed's load, never held against
the source). When the call ends, the source's breaker judges it as a history query's request: a
source that cannot be reached or does not answer in time counts against it (a timeout only when
the source had at least half of the call's time: a long wait for a slot is pacsfed's); one that
answered, even with an error or a refusal, is up; anything else (cancelled, a fault of ours)
teaches nothing. A streamed answer holds its slot until :meth:`SourceCall.end` (its end or break),
but is judged when its first answer came (:meth:`SourceCall.answered`): a long download that is a
half-open circuit's probe does not keep the source's queries out until it ends.

Image retrievals take slots of their own (``max_retrievals``), and their waits are theirs: a
viewer queueing for a download never makes pacsfed "saturated", never defers a refresh and is
counted apart (``retrievals_busy``, not ``sources_busy``). Report reads take query slots
(``max_concurrency``: the connectors' own bounds are those), but never more than half of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from types import TracebackType

from federation.engine._core import EngineCore, _Slots
from federation.engine._overload import Attempt, OverloadWatch
from federation.engine.resilience import CircuitBreaker
from federation.errors import ConnectorError, SourceBusy, SourceSkipped, SourceTimeout, SourceUnreachable
from federation.models import Deadline

_NO_SLOT = "not asked: pacsfed's own limit of requests at once to this source (max_concurrency) held until the deadline"
_NO_RETRIEVAL_SLOT = "not asked: pacsfed's own limit of retrievals at once from this source (max_retrievals) held until the deadline"
_LATE = "not asked: the deadline passed while the request waited in pacsfed (its own load)"


class SourceCall:
    """One call to a source: :meth:`start` before asking it, :meth:`end` once (with its failure, if any).

    Also an async context manager: the block is the call, its exception the call's failure.
    """

    __slots__ = (
        "_attempt",
        "_breaker",
        "_budget_s",
        "_deadline",
        "_held",
        "_judged",
        "_limit",
        "_overload",
        "_reports",
        "_retrieval",
        "source_id",
    )

    def __init__(
        self,
        source_id: str,
        deadline: Deadline,
        breaker: CircuitBreaker,
        limit: _Slots,
        overload: OverloadWatch,
        *,
        retrieval: bool = False,
        reports: _Slots | None = None,
    ) -> None:
        self.source_id = source_id
        self._deadline = deadline
        self._budget_s = deadline.at - time.monotonic()
        self._breaker = breaker
        self._limit = limit
        self._overload = overload
        self._attempt = Attempt()
        self._held = False
        self._judged = False
        self._retrieval = retrieval
        self._reports = reports

    async def start(self) -> None:
        """Take the source's breaker's leave and one slot; SourceSkipped or SourceBusy when not."""
        breaker = self._breaker
        if not breaker.allow():
            retry = breaker.retry_in_s()
            raise SourceSkipped(
                f"{self.source_id}: circuit open after repeated failures; next try in {retry:.0f} s",
                retry_after_s=max(1, math.ceil(retry)),
            )
        try:
            await self._take_slot()
        except BaseException:
            breaker.release_probe()  # never asked: nothing learnt of the source
            raise
        self._held = True
        self._attempt.sent(self._deadline.remaining(), self._budget_s)

    async def _take_slot(self) -> None:
        reports = self._reports
        if reports is None:
            await self._take(self._limit)
            return
        await self._take(reports, queued=False)  # its share first: behind other report reads only
        try:
            await self._take(self._limit)
        except BaseException:
            reports.release()
            raise

    async def _take(self, limit: _Slots, *, queued: bool = True) -> None:
        """One slot of ``limit`` before the deadline; ``queued``: a wait that says pacsfed is saturated."""
        deadline = self._deadline
        if deadline.expired:
            self._busy(_LATE)
        if limit.locked():
            queued = queued and not self._retrieval
            waiting = self._overload.waiting_for_slot(self.source_id) if queued else contextlib.nullcontext()
            try:
                with waiting:
                    async with asyncio.timeout(deadline.remaining()):
                        await limit.acquire()
            except TimeoutError:
                self._busy(_NO_RETRIEVAL_SLOT if self._retrieval else _NO_SLOT)
        else:
            await limit.acquire()

    def _busy(self, reason: str) -> None:
        self._overload.note("retrievals_busy" if self._retrieval else "sources_busy")
        raise SourceBusy(f"{self.source_id}: {reason}")

    def answered(self) -> None:
        """The source answered (a stream's status and headers came): the breaker judges it now, the slot stays held."""
        if self._held and not self._judged:
            self._judged = True
            self._breaker.record_success()

    def end(self, error: BaseException | None = None) -> None:
        """Give the slot back and have the breaker judge the call (at most once; nothing if never started)."""
        if not self._held:
            return
        self._held = False
        self._limit.release()
        if self._reports is not None:
            self._reports.release()
        breaker = self._breaker
        if self._judged:  # judged when it answered: only the source lost while streaming still counts
            if isinstance(error, SourceTimeout | SourceUnreachable):
                breaker.record_failure()
            return
        if error is None:
            breaker.record_success()
        elif isinstance(error, SourceTimeout | TimeoutError):
            if self._attempt.fair:
                breaker.record_failure()
            else:  # it waited for a slot past half of its time: the lateness is pacsfed's
                breaker.release_probe()
        elif isinstance(error, SourceUnreachable):
            breaker.record_failure()
        elif isinstance(error, ConnectorError):  # it answered, with an error or a refusal: it is up
            breaker.record_success()
        else:  # cancelled, abandoned, or a fault of ours: nothing learnt of the source
            breaker.release_probe()

    async def __aenter__(self) -> SourceCall:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.end(exc)


class GuardedCalls(EngineCore):
    """Calls to one source that are not patient queries, held to the same breaker and slots."""

    def guarded(
        self, source_id: str, deadline: Deadline, *, retrieval: bool = False, report: bool = False
    ) -> SourceCall:
        """One call to ``source_id`` under its circuit breaker and one of its slots, waited for until ``deadline``.

        ``async with engine.guarded(source_id, deadline): ...``; or :meth:`SourceCall.start`, then
        :meth:`SourceCall.end` once the call is over (a streamed answer: when its stream ends).
        ``retrieval``: an image retrieval, which takes a slot of ``max_retrievals`` instead of
        ``max_concurrency`` (a viewer's downloads never make a physician's history query BUSY).
        ``report``: a report read, which takes one of ``max_concurrency`` but never more than half
        of them at once for reports (a FHIR search reading forty never makes a history query wait
        for all of them).
        """
        self.select([source_id])  # an unknown source is a QueryError
        limits = self._retrieval_limits if retrieval else self._limits
        breaker, limit = self._breakers[source_id], limits[source_id]
        reports = self._report_limits[source_id] if report and not retrieval else None
        return SourceCall(
            source_id, deadline, breaker, limit, self._overload, retrieval=retrieval, reports=reports
        )
