"""Asking sources: request sharing, fan-out under one deadline, and the circuit breakers' verdicts."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import logging
import time
from collections.abc import AsyncGenerator, Sequence
from typing import TYPE_CHECKING, Any

from federation.engine._core import EngineCore
from federation.engine._overload import Attempt
from federation.engine._query_state import SharedRequest, SourceResult, failure_of, millis_since, not_asked
from federation.identity.resolver import PlannedQuery, record_matches
from federation.models import Deadline, PatientQuery, SourceOutcome, SourceStatus, StudyQuery, StudyRecord

if TYPE_CHECKING:  # connectors import the engine's models: no import at run time, no cycle
    from connectors.base import Connector, SourceAnswer

log = logging.getLogger("federation.engine.engine")
_JOIN_SLACK_S = 0.25
"""A query joins an identical request in flight only if the source was given a deadline at most this much earlier."""
_NO_SLOT = "not asked: pacsfed's own limit of requests at once to this source (max_concurrency) held until the deadline"


_LATE = "not asked: the query's deadline passed while it waited in pacsfed (its own load)"


class _NoSlot(Exception):
    """No slot of pacsfed's own for this source came free before the deadline."""

    def __init__(self, reason: str = _NO_SLOT) -> None:
        super().__init__(reason)
        self.reason = reason


class RequestSharing(EngineCore):
    """Shared requests to the sources, their fan-out, and what the breakers learn from them."""

    async def _fan_out(
        self, jobs: dict[Connector, SharedRequest], deadline: Deadline, started: float
    ) -> AsyncGenerator[SourceResult, None]:
        """Each source's result as it comes, then TIMEOUT for those without one by the deadline."""
        async with contextlib.aclosing(self._fan_out_batches(jobs, deadline, started)) as batches:
            async for batch in batches:
                for result in batch:
                    yield result

    async def _fan_out_batches(
        self, jobs: dict[Connector, SharedRequest], deadline: Deadline, started: float
    ) -> AsyncGenerator[list[SourceResult], None]:
        """The results come so far, together, each time the consumer asks; TIMEOUT for the late at the deadline.

        A consumer busy with the previous batch (a progressive update being sent) gets every
        answer that came meanwhile in one batch: its updates coalesce instead of queueing. A
        request is released (cancelled once no other query waits for it) when its result is
        read, at the deadline, or when the consumer stops early.
        """
        waiting = {shared.task: (connector, shared) for connector, shared in jobs.items()}
        finished: collections.deque[asyncio.Task[SourceResult]] = collections.deque()
        loop = asyncio.get_running_loop()
        wake: asyncio.Future[None] = loop.create_future()

        def on_done(task: asyncio.Task[SourceResult]) -> None:
            finished.append(task)
            if not wake.done():
                wake.set_result(None)

        # One callback per task: asyncio.wait(FIRST_COMPLETED) would re-register every pending task
        # at each answer, O(sources²) over the fan-out.
        for task in waiting:
            task.add_done_callback(on_done)
        try:
            while waiting:
                if not finished:
                    if wake.done():
                        # Set for answers already read (they came while the consumer held an
                        # event): waiting on it would return at once and look like the deadline.
                        wake = loop.create_future()
                    await asyncio.wait((wake,), timeout=deadline.remaining())
                    if not finished:
                        break  # the deadline
                batch: list[SourceResult] = []
                while finished:
                    task = finished.popleft()
                    connector, shared = waiting.pop(task)
                    self._release(shared)
                    batch.append(self._result_of(connector, task))
                self._observe(batch)
                yield batch
            late = list(waiting.values())
            waiting.clear()
            for _, shared in late:
                shared.task.remove_done_callback(on_done)
                self._release(shared, at_deadline=True)
            batch = []
            for connector, shared in late:
                if shared.task.done():  # it ended at the deadline: its callback had not run yet
                    batch.append(self._result_of(connector, shared.task))
                    continue
                if not shared.attempt.asked:  # still waiting for one of pacsfed's own slots
                    self._overload.note("sources_busy")
                    batch.append(
                        SourceResult(
                            SourceOutcome(
                                source=connector.info,
                                status=SourceStatus.BUSY,
                                latency_ms=millis_since(started),
                                error=_NO_SLOT,
                            ),
                            (),
                        )
                    )
                    continue
                log.warning("source %s: no answer by the deadline", connector.id)
                batch.append(
                    SourceResult(
                        SourceOutcome(
                            source=connector.info,
                            status=SourceStatus.TIMEOUT,
                            latency_ms=millis_since(started),
                            error="no answer before the deadline",
                        ),
                        (),
                    )
                )
            if batch:
                self._observe(batch)
                yield batch
        finally:
            for task, (_, shared) in waiting.items():
                task.remove_done_callback(on_done)
                self._release(shared)

    def _observe(self, batch: list[SourceResult]) -> None:
        """Tell the observer, if any, of the outcomes of sources asked live."""
        if self._observer is not None:
            for result in batch:
                self._observer.source_answered(result.outcome, live=True)

    async def _ask(
        self,
        connector: Connector,
        planned: Sequence[PlannedQuery],
        deadline: Deadline,
        attempt: Attempt,
        verify: bool = True,
        *,
        reserved: bool = False,
    ) -> SourceResult:
        """Run a source's planned queries; keep only records that carry the identifier asked for.

        Each query first takes one of pacsfed's slots for the source (``max_concurrency``); one
        that gets none before the deadline is not sent (BUSY). ``attempt`` learns what was sent.
        ``reserved``: the request holds one slot already (a background refresh): its queries go
        one after another on it and wait for no other.
        """
        started = time.monotonic()
        budget = deadline.at - started
        limit = self._limits[connector.id]
        waiting = self._overload.waiting_for_slot
        span = self._observer.source_span if self._observer is not None else None

        async def send(query: StudyQuery) -> SourceAnswer:
            attempt.sent(deadline.remaining(), budget)
            if span is None:
                return await connector.find_studies(query, deadline)
            with span(connector.id):
                return await connector.find_studies(query, deadline)

        async def limited(query: StudyQuery) -> SourceAnswer:
            if deadline.expired:  # it got here too late (pacsfed's queue): not sent, BUSY, not the source's
                raise _NoSlot(_LATE)
            if reserved:
                return await send(query)
            if limit.locked():
                try:
                    with waiting(connector.id):
                        async with asyncio.timeout(deadline.remaining()):
                            await limit.acquire()
                except TimeoutError:
                    raise _NoSlot from None
            else:
                await limit.acquire()
            try:
                return await send(query)
            finally:
                limit.release()

        answers: list[SourceAnswer | BaseException]
        if len(planned) == 1 or reserved:  # one at a time: no task (gather makes one per query) needed
            answers = []
            for plan in planned:
                try:
                    answers.append(await limited(plan.query))
                except Exception as exc:
                    answers.append(exc)
        else:
            answers = await asyncio.gather(*(limited(p.query) for p in planned), return_exceptions=True)
        identity = self._identities[connector.id]
        records: dict[str, StudyRecord] = {}
        warnings: list[str] = []
        failure: tuple[SourceStatus, str] | None = None
        dropped = 0
        for plan, answer in zip(planned, answers, strict=True):
            if isinstance(answer, BaseException):
                if isinstance(answer, asyncio.CancelledError):
                    raise answer
                if isinstance(answer, _NoSlot):
                    failure = failure or (SourceStatus.BUSY, answer.reason)
                    continue
                failure = failure or failure_of(connector, answer)
                continue
            warnings.extend(answer.warnings)
            if answer.truncated and not any("max_results" in w for w in answer.warnings):
                warnings.append("the answer was truncated")
            for record in answer.records:
                if verify and not record_matches(record, plan, identity):
                    dropped += 1
                    continue
                if record.study_instance_uid not in records:
                    records[record.study_instance_uid] = record.found_by(plan.matched_by)
        if dropped:
            # The source ignored a matching key: its extra answers belong to other patients.
            warnings.append(f"{dropped} answers for other patient identifiers were discarded")
        status, error = failure if failure else (SourceStatus.OK, None)
        if status is SourceStatus.BUSY:
            self._overload.note("sources_busy")
        return SourceResult(
            SourceOutcome(
                source=connector.info,
                status=status,
                latency_ms=millis_since(started),
                exam_count=len(records),
                error=error,
                warnings=tuple(dict.fromkeys(warnings)),
            ),
            list(records.values()),
        )

    def _share(
        self,
        connector: Connector,
        planned: Sequence[PlannedQuery],
        query: PatientQuery,
        deadline: Deadline,
        *,
        reserved: bool = False,
    ) -> SharedRequest:
        """The request for a source's answer: the one an identical query has in flight, or a new one.

        Every caller releases it (:meth:`_release`) once; it is cancelled only when every query
        waiting for it has given up. ``reserved``: the caller took one of the source's slots for
        it (:meth:`_Slots.take_spare`): a new request holds it until its task ends (even one
        cancelled before it ran), one joined gives it back at once.
        """
        key = (query.cache_key() or "", connector.id)
        shared = self._inflight.get(key) if key[0] else None
        if (
            shared is None
            or shared.task.done()
            or shared.task.cancelling()
            or shared.deadline.at + _JOIN_SLACK_S < deadline.at  # the source would give up well before
        ):
            attempt = Attempt()
            task = self._spawn(self._ask(connector, planned, deadline, attempt, reserved=reserved))
            if reserved:
                task.add_done_callback(functools.partial(self._give_back_slot, connector.id))
            shared = self._judged(connector, SharedRequest(task, key, deadline, attempt=attempt))
            if key[0]:
                self._inflight[key] = shared
                task.add_done_callback(functools.partial(self._forget_inflight_of, key, shared))
        elif reserved:
            self._limits[connector.id].release()
        shared.waiters += 1
        return shared

    def _give_back_slot(self, source_id: str, _: asyncio.Task[Any]) -> None:
        self._limits[source_id].release()

    def _forget_inflight_of(self, key: tuple[str, str], shared: SharedRequest, _: asyncio.Task[Any]) -> None:
        self._forget_inflight(key, shared)

    def _judged(self, connector: Connector, shared: SharedRequest) -> SharedRequest:
        """Have the source's circuit breaker judge this request once, when it ends, however many waited."""
        shared.task.add_done_callback(functools.partial(self._judge_request, connector.id, shared))
        return shared

    def _judge_request(self, source_id: str, shared: SharedRequest, task: asyncio.Task[SourceResult]) -> None:
        breaker = self._breakers[source_id]
        if task.cancelled():
            if shared.timed_out and shared.attempt.fair:  # every query waiting for it gave up at its deadline
                breaker.record_failure()
            else:  # abandoned, or never given its time (a slot wait is pacsfed's): nothing learnt of the source
                breaker.release_probe()
        elif task.exception() is not None:
            breaker.release_probe()  # a fault of ours, reported by the task's own error handling
        else:
            self._judge(task.result().outcome, shared.attempt)

    def _release(self, shared: SharedRequest, *, at_deadline: bool = False) -> None:
        """One query no longer waits for this request: the last one to leave cancels it."""
        shared.waiters -= 1
        if shared.waiters == 0 and not shared.task.done():
            shared.timed_out = at_deadline
            shared.task.cancel()
            if shared.key is not None:
                self._forget_inflight(shared.key, shared)

    @staticmethod
    def _result_of(connector: Connector, task: asyncio.Task[SourceResult]) -> SourceResult:
        """A finished request's result; one cancelled by the queries that started it was abandoned."""
        if task.cancelled():
            return not_asked(connector, SourceStatus.TIMEOUT, "the shared request was abandoned")
        return task.result()

    def _forget_inflight(self, key: tuple[str, str], shared: SharedRequest) -> None:
        if self._inflight.get(key) is shared:
            del self._inflight[key]

    def _judge(self, outcome: SourceOutcome, attempt: Attempt) -> None:
        """Feed a source's outcome to its circuit breaker; what pacsfed's own queue caused is not the source's.

        The breaker counts a source that cannot be reached or does not answer in time. One that
        answered, even with an error (a query level it refuses, a failure status, HTTP 404), is up:
        asking it costs no wait, and skipping it would hide the hospital for nothing. A timeout
        counts only when the source had at least half of the request's time (it did not wait long
        for a slot); a BUSY request never reached the source.
        """
        breaker = self._breakers[outcome.source.id]
        status = outcome.status
        if status is SourceStatus.OK or (status is SourceStatus.ERROR and attempt.asked):
            breaker.record_success()
        elif (status is SourceStatus.UNREACHABLE and attempt.asked) or (
            status is SourceStatus.TIMEOUT and attempt.fair
        ):
            breaker.record_failure()
        else:
            breaker.release_probe()

    def _skipped(self, connector: Connector) -> SourceResult:
        retry = self._breakers[connector.id].retry_in_s()
        return SourceResult(
            SourceOutcome(
                source=connector.info,
                status=SourceStatus.SKIPPED,
                latency_ms=0,
                error=f"circuit open after repeated failures; next try in {retry:.0f} s",
            ),
            (),
        )
