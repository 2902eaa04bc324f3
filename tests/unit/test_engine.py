"""The fan-out engine's deadline, status and merge behaviour, with small in-test connectors.

These connectors stand in for faults only (slowness, crashes); real peers are in tests/integration.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import pytest

from connectors.base import Connector, ConnectorContext, SourceAnswer
from connectors.dicomweb_settings import DicomwebSourceSettings
from federation.cache.base import MemoryExamCache
from federation.engine.engine import FederationEngine, Phase
from federation.engine.request import HistoryRequest
from federation.engine.resilience import CircuitState
from federation.errors import (
    CacheError,
    CacheUnavailable,
    QueryError,
    SourceProtocolError,
    SourceTimeout,
    SourceUnreachable,
)
from federation.models import (
    CacheStatus,
    Deadline,
    Freshness,
    PatientQuery,
    SourceStatus,
    StudyQuery,
    StudyRecord,
)
from federation.settings import CircuitSettings

QUERY = PatientQuery(patient_id="PA-001")


class Scripted(Connector):
    """Answers after ``delay`` seconds with ``uids``, or raises ``error``."""

    kind = "scripted"

    def __init__(
        self, source_id: str, delay: float = 0.0, uids: Sequence[str] = (), error: Exception | None = None
    ):
        settings = DicomwebSourceSettings(id=source_id, kind="dicomweb", url="http://unused")
        super().__init__(settings, ConnectorContext())
        self.delay, self.uids, self.error = delay, uids, error
        self.cancelled = False
        self.calls = 0

    async def find_studies(self, query: StudyQuery, deadline: Deadline) -> SourceAnswer:
        self.calls += 1
        try:
            await asyncio.sleep(self.delay)
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        if self.error is not None:
            raise self.error
        return SourceAnswer(
            [
                StudyRecord(source_id=self.id, study_instance_uid=uid, patient_id=query.patient_id)
                for uid in self.uids
            ]
        )

    async def ping(self, deadline: Deadline) -> None:
        await self.find_studies(StudyQuery(patient_id="PING"), deadline)


def statuses(history: object) -> dict[str, SourceStatus]:
    return {o.source.id: o.status for o in history.sources}  # type: ignore[attr-defined]


async def test_slow_source_times_out_at_the_deadline_and_others_are_kept() -> None:
    slow = Scripted("slow", delay=30, uids=["x"])
    engine = FederationEngine([Scripted("fast", uids=["1", "2"]), slow], MemoryExamCache())
    started = time.monotonic()
    history = await engine.patient_history(QUERY, HistoryRequest(deadline_ms=300))
    elapsed = time.monotonic() - started
    assert elapsed < 0.3 + 0.5 + 0.5  # deadline + write wait + slack on a loaded machine
    assert statuses(history) == {"fast": SourceStatus.OK, "slow": SourceStatus.TIMEOUT}
    assert not history.complete
    assert {e.study_instance_uid for e in history.exams} == {"1", "2"}
    await asyncio.sleep(0)
    assert slow.cancelled


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (SourceUnreachable("refused"), SourceStatus.UNREACHABLE),
        (SourceTimeout("late"), SourceStatus.TIMEOUT),
        (SourceProtocolError("bad JSON"), SourceStatus.ERROR),
        (RuntimeError("Müller^Anna leaked"), SourceStatus.ERROR),
    ],
)
async def test_errors_become_statuses_without_patient_data(error: Exception, status: SourceStatus) -> None:
    engine = FederationEngine([Scripted("ok", uids=["1"]), Scripted("bad", error=error)], None)
    history = await engine.patient_history(QUERY)
    outcome = next(o for o in history.sources if o.source.id == "bad")
    assert outcome.status is status
    assert "Müller" not in (outcome.error or "")
    assert [e.study_instance_uid for e in history.exams] == ["1"]


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (SourceUnreachable("refused"), SourceStatus.UNREACHABLE),
        (UnicodeEncodeError("ascii", "Müller", 1, 2, "no"), SourceStatus.ERROR),
    ],
)
async def test_a_ping_that_fails_is_its_source_s_status_even_a_plugin_s_bug(
    error: Exception, status: SourceStatus
) -> None:
    """`pacsfed check`: a connector raising something else than a ConnectorError fails its line, not the check."""
    engine = FederationEngine([Scripted("ok"), Scripted("bad", error=error)], None)
    outcomes = {o.source.id: o for o in await engine.check_sources(2000)}
    assert outcomes["ok"].status is SourceStatus.OK
    assert outcomes["bad"].status is status
    assert "Müller" not in (outcomes["bad"].error or "")


async def test_stream_yields_one_update_per_source_then_final() -> None:
    engine = FederationEngine([Scripted("b", delay=0.1, uids=["2"]), Scripted("a", uids=["1"])], None)
    updates = [u async for u in engine.stream_history(QUERY)]
    assert [u.phase for u in updates] == [Phase.SOURCE, Phase.SOURCE, Phase.FINAL]
    assert [u.source.id for u in updates[:2] if u.source] == ["a", "b"]
    assert len(updates[0].history.exams) == 1 and len(updates[-1].history.exams) == 2
    assert updates[-1].history.complete
    # Statuses are listed in configuration order, whatever order they answered in.
    assert [o.source.id for o in updates[-1].history.sources] == ["b", "a"]


async def test_a_slow_consumer_never_turns_a_later_answer_into_a_timeout() -> None:
    """Two answers read while the consumer was busy must not leave a stale wake-up behind.

    The consumer of progressive updates awaits between events (a WebSocket send): "b" answers
    while "a"'s event is being sent, and is read in the same turn; "c" answers later, well
    within the deadline, and must come as OK, not as a TIMEOUT at once.
    """
    engine = FederationEngine(
        [
            Scripted("a", delay=0.01, uids=["1"]),
            Scripted("b", delay=0.02, uids=["2"]),
            Scripted("c", delay=0.15, uids=["3"]),
        ],
        None,
    )
    started = time.monotonic()
    updates = []
    async for update in engine.stream_history(QUERY, HistoryRequest(deadline_ms=5000)):
        updates.append(update)
        await asyncio.sleep(0.05)  # the consumer sending the event
    # Answers read in the same turn come as one update (answered lists them): never one lost.
    assert [u.phase for u in updates] == [Phase.SOURCE] * (len(updates) - 1) + [Phase.FINAL]
    assert sorted(s.id for u in updates for s in u.answered) == ["a", "b", "c"]
    assert statuses(updates[-1].history) == dict.fromkeys("abc", SourceStatus.OK)
    assert time.monotonic() - started < 4  # each source answered; nothing waited for the deadline


async def test_source_selection() -> None:
    a, b = Scripted("a", uids=["1"]), Scripted("b", uids=["2"])
    engine = FederationEngine([a, b], None)
    history = await engine.patient_history(QUERY, HistoryRequest(source_ids=("b",)))
    assert [o.source.id for o in history.sources] == ["b"]
    with pytest.raises(QueryError) as caught:
        await engine.patient_history(QUERY, HistoryRequest(source_ids=("nope",)))
    assert caught.value.code == "UNKNOWN_SOURCE"


@pytest.mark.parametrize("deadline_ms", [0, 10, 10_000_000])
async def test_deadline_outside_limits_is_refused(deadline_ms: int) -> None:
    engine = FederationEngine([Scripted("a")], None)
    with pytest.raises(QueryError) as caught:
        await engine.patient_history(QUERY, HistoryRequest(deadline_ms=deadline_ms))
    assert caught.value.code == "BAD_DEADLINE"


async def test_answers_are_written_through_the_cache() -> None:
    cache = MemoryExamCache()
    engine = FederationEngine([Scripted("a", uids=["1", "2"]), Scripted("b", uids=["2"])], cache)
    history = await engine.patient_history(QUERY)
    await engine.patient_history(QUERY)
    assert history.cache_status is CacheStatus.OK
    assert len(cache) == 3  # (a,1) (a,2) (b,2): a re-query updates, never duplicates


@pytest.mark.parametrize("bad", ["", "   ", "PA*", "P?", "A\\B", "x" * 65])
def test_patient_ids_that_would_match_others_are_refused(bad: str) -> None:
    with pytest.raises(QueryError) as caught:
        PatientQuery(patient_id=bad)
    assert caught.value.code == "BAD_PATIENT_INPUT"


async def test_a_source_that_keeps_failing_is_skipped_at_once() -> None:
    from federation.settings import CircuitSettings

    dead = Scripted("dead", error=SourceUnreachable("refused"))
    dead.settings = dead.settings.model_copy(update={"circuit": CircuitSettings(failures=2, reset_s=60)})
    slow_dead = Scripted("slow", delay=30)
    engine = FederationEngine([Scripted("ok", uids=["1"]), dead, slow_dead], None)
    for _ in range(2):
        await engine.patient_history(QUERY, HistoryRequest(deadline_ms=100))
    history = await engine.patient_history(QUERY, HistoryRequest(deadline_ms=100))
    assert statuses(history)["dead"] is SourceStatus.SKIPPED
    assert engine.circuit_state("dead").value == "OPEN"
    assert statuses(history)["slow"] is SourceStatus.TIMEOUT  # 5 failures are needed by default
    assert [e.study_instance_uid for e in history.exams] == ["1"]


async def test_a_source_that_answers_with_errors_is_up_and_its_circuit_stays_closed() -> None:
    """A refusal (a level it does not serve, a failure status, HTTP 404) costs no wait: never SKIPPED for it."""
    from federation.settings import CircuitSettings

    refusing = Scripted("refusing", error=SourceProtocolError("C-FIND failed with status 0xC000"))
    refusing.settings = refusing.settings.model_copy(
        update={"circuit": CircuitSettings(failures=2, reset_s=60)}
    )
    engine = FederationEngine([refusing], None)
    for _ in range(4):
        history = await engine.patient_history(QUERY, HistoryRequest(freshness=Freshness.LIVE))
        assert statuses(history)["refusing"] is SourceStatus.ERROR
    assert engine.circuit_state("refusing") is CircuitState.CLOSED and refusing.calls == 4


async def test_concurrent_identical_queries_cause_one_fan_out() -> None:
    source = Scripted("a", delay=0.2, uids=["1"])
    engine = FederationEngine([source], MemoryExamCache())
    histories = await asyncio.gather(
        *(engine.patient_history(QUERY, HistoryRequest(freshness=Freshness.LIVE)) for _ in range(8))
    )
    assert source.calls == 1
    assert all([e.study_instance_uid for e in h.exams] == ["1"] for h in histories)


async def test_cache_then_refresh_answers_from_the_cache_and_refreshes_once() -> None:
    source = Scripted("a", delay=0.05, uids=["1"])
    engine = FederationEngine([source], MemoryExamCache())
    live = await engine.patient_history(QUERY)
    assert source.calls == 1
    assert not live.sources[0].cached
    updates = [u async for u in engine.stream_history(QUERY)]
    assert [u.phase for u in updates] == [Phase.CACHE, Phase.FINAL]
    cached = updates[-1].history
    assert cached.sources[0].cached
    assert cached.sources[0].cached_at is not None
    assert cached.exams[0].locations[0].cached_at == cached.sources[0].cached_at
    assert cached.exams[0].locations[0].matched_by is not None
    await engine.patient_history(QUERY)  # while the first refresh is in flight: no second one
    await asyncio.sleep(0.2)
    assert source.calls == 2


async def test_a_refresh_waits_for_no_slot_a_caller_needs() -> None:
    source = Scripted("a", delay=0.2, uids=["1"])
    source.settings = source.settings.model_copy(update={"max_concurrency": 4})
    engine = FederationEngine([source], MemoryExamCache())
    await engine.patient_history(QUERY)  # cached now
    live = HistoryRequest(freshness=Freshness.LIVE)
    others = [PatientQuery(patient_id=f"PA-10{n}") for n in range(3)]
    busy = asyncio.gather(*(engine.patient_history(other, live) for other in others))
    await asyncio.sleep(0.05)  # three of the source's four slots are taken by callers' queries
    cached = await engine.patient_history(QUERY)
    assert cached.sources[0].cached
    await busy
    await asyncio.sleep(0.3)
    assert source.calls == 4  # the first query and the callers': the refresh was left out
    assert engine.load_counters()["refreshes_deferred"] == 1
    await engine.patient_history(QUERY)  # the slots are free again: refreshed
    await asyncio.sleep(0.3)
    assert source.calls == 5


async def test_a_burst_of_cached_reads_refreshes_only_on_spare_slots() -> None:
    source = Scripted("a", delay=0.3, uids=["1"])
    source.settings = source.settings.model_copy(update={"max_concurrency": 4})
    engine = FederationEngine([source], MemoryExamCache())
    patients = [PatientQuery(patient_id=f"PA-2{n:02}") for n in range(12)]
    for patient in patients:
        await engine.patient_history(patient)  # cached now
    asked = source.calls
    # Twelve cached patients opened at the same moment: each read decides on its refresh before
    # any refresh has run, so each decision must count the slots the ones before it took.
    await asyncio.gather(*(engine.patient_history(patient) for patient in patients))
    assert (
        engine.load_counters()["refreshes_deferred"] == 10
    )  # 4 and 3 of 4 slots free: spare; half taken is not
    assert not engine._limits["a"]._waiters  # no refresh queues for a slot
    live = HistoryRequest(freshness=Freshness.LIVE, deadline_ms=500)
    history = await engine.patient_history(PatientQuery(patient_id="PA-300"), live)
    assert statuses(history) == {"a": SourceStatus.OK}  # the caller's query took a slot left free
    await asyncio.sleep(0.4)
    assert source.calls == asked + 2 + 1
    assert engine._limits["a"]._value == 4  # every refresh gave its slot back


async def test_a_refresh_asks_on_its_one_slot_and_gives_it_back_even_if_it_never_ran() -> None:
    from federation.identity.resolver import PlannedQuery
    from federation.models import MatchedBy, MatchKind

    source = Scripted("a", delay=0.1, uids=["1"])
    engine = FederationEngine([source], MemoryExamCache())
    slots = engine._limits["a"]
    by_id = MatchedBy(kind=MatchKind.LOCAL_ID)
    plan = [PlannedQuery(StudyQuery(patient_id=pid), by_id) for pid in ("PA-001", "PA-001-OLD", "PA-001-X")]
    engine._refresh_in_background(source, plan, QUERY)
    assert slots._value == 3  # taken when decided, before the refresh ran
    for _ in range(3):
        await asyncio.sleep(0.03)
        assert slots._value == 3  # its three queries go one after another on that one slot
    await asyncio.sleep(0.35)
    assert source.calls == 3 and slots._value == 4
    engine._refresh_in_background(source, plan, QUERY)
    await engine.purge_cache(QUERY)  # cancels the refresh's request before it ever ran
    await asyncio.sleep(0.01)
    assert source.calls == 3 and slots._value == 4


async def test_cache_only_and_purge() -> None:
    source = Scripted("a", uids=["1"])
    engine = FederationEngine([source], MemoryExamCache())
    empty = await engine.patient_history(QUERY, HistoryRequest(freshness=Freshness.CACHE_ONLY))
    assert statuses(empty) == {"a": SourceStatus.NOT_CACHED}
    assert source.calls == 0
    await engine.patient_history(QUERY, HistoryRequest(freshness=Freshness.LIVE))
    held = await engine.patient_history(QUERY, HistoryRequest(freshness=Freshness.CACHE_ONLY))
    assert [e.study_instance_uid for e in held.exams] == ["1"]
    assert await engine.purge_cache(QUERY) == 1
    gone = await engine.patient_history(QUERY, HistoryRequest(freshness=Freshness.CACHE_ONLY))
    assert statuses(gone) == {"a": SourceStatus.NOT_CACHED}


async def test_an_expired_answer_is_not_served() -> None:
    source = Scripted("a", uids=["1"])
    source.settings = source.settings.model_copy(update={"ttl_s": 0.0})
    engine = FederationEngine([source], MemoryExamCache())
    await engine.patient_history(QUERY)
    again = await engine.patient_history(QUERY)
    assert not again.sources[0].cached
    assert source.calls == 2


async def test_a_refresh_in_flight_does_not_undo_a_purge() -> None:
    source = Scripted("a", delay=0.1, uids=["1"])
    engine = FederationEngine([source], MemoryExamCache())
    await engine.patient_history(QUERY)
    await engine.patient_history(QUERY)  # served from the cache; a refresh is now in flight
    await engine.purge_cache(QUERY)
    await asyncio.sleep(0.3)
    gone = await engine.patient_history(QUERY, HistoryRequest(freshness=Freshness.CACHE_ONLY))
    assert statuses(gone) == {"a": SourceStatus.NOT_CACHED}


async def test_a_shared_request_outlives_a_query_that_gives_up_while_another_waits() -> None:
    source = Scripted("a", delay=0.3, uids=["1"])
    engine = FederationEngine([source], None)
    patient = engine.patient_history(QUERY, HistoryRequest(deadline_ms=2000))
    impatient = engine.patient_history(QUERY, HistoryRequest(deadline_ms=100))
    slow, quick = await asyncio.gather(patient, impatient)
    assert statuses(quick) == {"a": SourceStatus.TIMEOUT}
    assert statuses(slow) == {"a": SourceStatus.OK}
    assert [e.study_instance_uid for e in slow.exams] == ["1"]
    assert source.calls == 1 and not source.cancelled


async def test_a_purge_abandons_the_request_in_flight() -> None:
    source = Scripted("a", delay=0.3, uids=["1"])
    engine = FederationEngine([source], MemoryExamCache())
    pending = asyncio.ensure_future(engine.patient_history(QUERY, HistoryRequest(freshness=Freshness.LIVE)))
    await asyncio.sleep(0.05)
    await engine.purge_cache(QUERY)
    history = await pending
    assert statuses(history) == {"a": SourceStatus.TIMEOUT}
    assert history.sources[0].error == "the shared request was abandoned"
    assert source.cancelled


async def test_requests_abandoned_by_purges_do_not_open_the_circuit() -> None:
    source = Scripted("a", delay=0.3, uids=["1"])
    engine = FederationEngine([source], MemoryExamCache())
    for _ in range(6):  # one more than the breaker's default threshold
        pending = asyncio.ensure_future(
            engine.patient_history(QUERY, HistoryRequest(freshness=Freshness.LIVE))
        )
        await asyncio.sleep(0.02)
        await engine.purge_cache(QUERY)
        assert statuses(await pending) == {"a": SourceStatus.TIMEOUT}
    # Abandoned by a purge is not the source failing: its circuit breaker counted none of them.
    assert engine.circuit_state("a") is CircuitState.CLOSED


async def test_a_consumer_that_stops_at_the_cached_answer_starts_no_live_request() -> None:
    cached, live = Scripted("a", uids=["1"]), Scripted("b", delay=0.1, uids=["2"])
    engine = FederationEngine([cached, live], MemoryExamCache())
    await engine.patient_history(QUERY, HistoryRequest(source_ids=("a",)))
    updates = engine.stream_history(QUERY)
    first = await anext(updates)
    assert first.phase is Phase.CACHE
    await updates.aclose()
    await asyncio.sleep(0.2)
    assert live.calls == 0


class Honest(Scripted):
    """Like Scripted, but gives up at the deadline it is given, as every real connector does."""

    async def find_studies(self, query: StudyQuery, deadline: Deadline) -> SourceAnswer:
        if self.delay > deadline.remaining():
            self.calls += 1
            await asyncio.sleep(deadline.remaining())
            raise SourceTimeout("no answer before the deadline")
        return await super().find_studies(query, deadline)


def flaky(source_id: str, **kwargs: object) -> Scripted:
    """A source whose circuit opens at the first failure and may be probed again 0.2 s later."""
    source = Scripted(source_id, **kwargs)  # type: ignore[arg-type]
    source.settings = source.settings.model_copy(update={"circuit": CircuitSettings(failures=1, reset_s=0.2)})
    return source


async def test_a_query_does_not_join_a_request_given_a_much_earlier_deadline() -> None:
    source = Honest("a", delay=0.3, uids=["1"])
    engine = FederationEngine([source], None)
    impatient = asyncio.ensure_future(engine.patient_history(QUERY, HistoryRequest(deadline_ms=100)))
    await asyncio.sleep(0)  # its request is in flight, due in 100 ms
    patient = await engine.patient_history(QUERY, HistoryRequest(deadline_ms=2000))
    assert statuses(await impatient) == {"a": SourceStatus.TIMEOUT}
    assert statuses(patient) == {"a": SourceStatus.OK}


async def test_one_failed_request_counts_once_however_many_queries_waited() -> None:
    dead = Scripted("dead", delay=0.05, error=SourceUnreachable("refused"))
    engine = FederationEngine([dead], None)
    await asyncio.gather(
        *(engine.patient_history(QUERY, HistoryRequest(freshness=Freshness.LIVE)) for _ in range(5))
    )
    assert dead.calls == 1
    assert engine.circuit_state("dead") is CircuitState.CLOSED  # one failure of five needed


async def test_a_probe_abandoned_by_a_purge_lets_the_next_query_probe() -> None:
    source = flaky("a", error=SourceUnreachable("refused"))
    engine = FederationEngine([source], MemoryExamCache())
    await engine.patient_history(QUERY, HistoryRequest(freshness=Freshness.LIVE))
    assert engine.circuit_state("a") is CircuitState.OPEN
    await asyncio.sleep(0.25)  # cool-down over: the next query is the probe
    source.error, source.delay, source.uids = None, 0.1, ["1"]  # healthy again
    probe = asyncio.ensure_future(engine.patient_history(QUERY, HistoryRequest(freshness=Freshness.LIVE)))
    await asyncio.sleep(0.02)
    await engine.purge_cache(QUERY)
    await probe
    after = await engine.patient_history(QUERY, HistoryRequest(freshness=Freshness.LIVE))
    assert statuses(after) == {"a": SourceStatus.OK}


async def test_a_consumer_stopping_at_the_cached_answer_gives_the_probe_back() -> None:
    source = flaky("a", error=SourceUnreachable("refused"))
    engine = FederationEngine([Scripted("c", uids=["9"]), source], MemoryExamCache())
    await engine.patient_history(QUERY, HistoryRequest(freshness=Freshness.LIVE))  # c cached; a fails: open
    await asyncio.sleep(0.25)
    source.error, source.uids = None, ["1"]
    updates = engine.stream_history(QUERY)
    assert (await anext(updates)).phase is Phase.CACHE
    await updates.aclose()  # no request was started
    after = await engine.patient_history(QUERY, HistoryRequest(source_ids=("a",), freshness=Freshness.LIVE))
    assert statuses(after) == {"a": SourceStatus.OK}


class SlowWriteCache(MemoryExamCache):
    """A memory cache whose writes take a network round trip, as Elasticsearch's do."""

    async def store_answers(self, query, answers):  # type: ignore[no-untyped-def]
        await asyncio.sleep(0.05)
        await super().store_answers(query, answers)


async def test_a_purge_removes_a_write_that_was_already_on_its_way() -> None:
    cache = SlowWriteCache()
    engine = FederationEngine([Scripted("a", uids=["1"])], cache, cache_write_wait_s=0.0)
    await engine.patient_history(
        QUERY, HistoryRequest(freshness=Freshness.LIVE)
    )  # its write is now in flight
    await engine.purge_cache(QUERY)  # an erasure request
    await asyncio.sleep(0.1)
    held = await engine.patient_history(QUERY, HistoryRequest(freshness=Freshness.CACHE_ONLY))
    assert statuses(held) == {"a": SourceStatus.NOT_CACHED}
    assert not held.exams


async def test_a_write_a_purge_stopped_waiting_for_undoes_itself_for_that_purge_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("federation.engine.engine._PURGE_WAIT_S", 0.01)
    cache = SlowWriteCache()
    engine = FederationEngine(
        [Scripted("a", uids=["1"]), Scripted("b", uids=["2"])], cache, cache_write_wait_s=0.0
    )
    await engine.patient_history(QUERY, HistoryRequest(freshness=Freshness.LIVE))  # both writes in flight
    await engine.purge_cache(QUERY, "b")  # returns before they land
    await asyncio.sleep(0.1)
    held = await engine.patient_history(QUERY, HistoryRequest(freshness=Freshness.CACHE_ONLY))
    assert statuses(held) == {"a": SourceStatus.OK, "b": SourceStatus.NOT_CACHED}


async def test_a_consumer_that_stops_releases_its_requests_at_once() -> None:
    slow = Scripted("slow", delay=5, uids=["2"])
    engine = FederationEngine([Scripted("fast", uids=["1"]), slow], None)
    updates = engine.stream_history(QUERY, HistoryRequest(deadline_ms=10_000))
    assert (await anext(updates)).phase is Phase.SOURCE
    await updates.aclose()  # the page was closed
    await asyncio.sleep(0)  # the cancellation reaches the request
    assert slow.cancelled


class UnreadableCache(MemoryExamCache):
    """A cache that cannot be read (the real node stopped is in tests/integration/test_audit_resilience.py)."""

    async def cached_answers(self, query, source_ids):  # type: ignore[no-untyped-def]
        raise CacheError("elasticsearch: cache read failed (ConnectionError)")


async def test_cache_only_without_a_readable_cache_is_cache_unavailable_not_not_cached() -> None:
    source = Scripted("a", uids=["1"])
    engine = FederationEngine([source], UnreadableCache())
    with pytest.raises(CacheUnavailable) as caught:
        await engine.patient_history(QUERY, HistoryRequest(freshness=Freshness.CACHE_ONLY))
    assert caught.value.code == "CACHE_UNAVAILABLE" and source.calls == 0
    live = await engine.patient_history(QUERY)  # other freshness: the sources answer instead
    assert statuses(live) == {"a": SourceStatus.OK}
