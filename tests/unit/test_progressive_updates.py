"""Progressive updates that grow with N: coalesced SOURCE events, deltas, and the running merge.

The connectors here stand in for timing only (an answer held until the test lets it go); real
peers and the WebSocket front end are in tests/integration/test_subscription_delta.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import Sequence

from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.base import Connector, ConnectorContext, SourceAnswer
from connectors.dicomweb_settings import DicomwebSourceSettings
from federation.engine.engine import FederationEngine, HistoryUpdate, Phase
from federation.engine.request import HistoryRequest
from federation.merge import RunningMerge, merge_records
from federation.models import Deadline, PatientQuery, SourceInfo, StudyQuery, StudyRecord

QUERY = PatientQuery(patient_id="PA-001")


class Held(Connector):
    """Answers ``uids`` once ``release`` is set; ``answered`` is set as it returns."""

    kind = "held"

    def __init__(self, source_id: str, uids: Sequence[str], *, held: bool = True) -> None:
        settings_ = DicomwebSourceSettings(id=source_id, kind="dicomweb", url="http://unused")
        super().__init__(settings_, ConnectorContext())
        self.uids = uids
        self.release = asyncio.Event()
        self.answered = asyncio.Event()
        if not held:
            self.release.set()

    async def find_studies(self, query: StudyQuery, deadline: Deadline) -> SourceAnswer:
        await self.release.wait()
        self.answered.set()
        return SourceAnswer(
            [
                StudyRecord(source_id=self.id, study_instance_uid=uid, patient_id=query.patient_id)
                for uid in self.uids
            ]
        )

    async def ping(self, deadline: Deadline) -> None:
        return None


async def _settle() -> None:
    """Let the event loop run the callbacks of requests that just finished."""
    for _ in range(20):
        await asyncio.sleep(0)


async def test_answers_that_come_while_the_consumer_is_busy_come_as_one_update() -> None:
    a, b, c = Held("a", ["1"], held=False), Held("b", ["2"]), Held("c", ["3"])
    engine = FederationEngine([a, b, c], None)
    updates = engine.stream_history(QUERY, HistoryRequest(deadline_ms=10_000))
    async with contextlib.aclosing(updates):
        first = await anext(updates)
        # The consumer is still busy with the first update (sending it) while b and c answer.
        b.release.set()
        c.release.set()
        await asyncio.gather(b.answered.wait(), c.answered.wait())
        await _settle()
        coalesced = await anext(updates)
        final = await anext(updates)
    assert (first.phase, [s.id for s in first.answered]) == (Phase.SOURCE, ["a"])
    assert coalesced.phase is Phase.SOURCE
    assert sorted(s.id for s in coalesced.answered) == ["b", "c"]
    assert coalesced.source == coalesced.answered[-1]
    assert [o.source.id for o in coalesced.history.sources] == ["a", "b", "c"]
    assert final.phase is Phase.FINAL and final.answered == () and final.changed is None
    assert len(final.history.exams) == 3


async def test_a_delta_holds_only_the_exams_an_update_added_or_changed() -> None:
    a, b = Held("a", ["1", "2"], held=False), Held("b", ["2", "3"])
    engine = FederationEngine([a, b], None)
    updates: list[HistoryUpdate] = []
    async for update in engine.stream_history(QUERY, HistoryRequest(deadline_ms=10_000)):
        updates.append(update)
        b.release.set()  # b answers only after a's update was taken
    first, second, final = updates
    assert {e.study_instance_uid for e in first.delta().history.exams} == {"1", "2"}
    # b adds study 3 and a second location to study 2; study 1 is unchanged.
    delta = second.delta().history
    assert {e.study_instance_uid for e in delta.exams} == {"2", "3"}
    assert [len(e.locations) for e in delta.exams if e.study_instance_uid == "2"] == [2]
    assert [o.source.id for o in delta.sources] == ["a", "b"]  # the sources stay complete
    assert {e.study_instance_uid for e in second.history.exams} == {"1", "2", "3"}
    assert final.delta() is final  # CACHE and FINAL carry the whole history
    assert {e.study_instance_uid for e in final.history.exams} == {"1", "2", "3"}


SOURCES = {s: SourceInfo(id=s, name=s.upper(), kind="dicomweb") for s in "abcd"}
_records = st.builds(
    StudyRecord,
    source_id=st.sampled_from(sorted(SOURCES)),
    study_instance_uid=st.sampled_from(["1.1", "1.2", "1.3", "1.4", "1.5"]),
    study_date=st.none() | st.dates(min_value=dt.date(2020, 1, 1), max_value=dt.date(2020, 1, 5)),
    description=st.none() | st.sampled_from(["CT", "MR", ""]),
    number_of_instances=st.none() | st.integers(0, 9),
)


@settings(max_examples=200, deadline=None)
@given(
    records=st.lists(_records, max_size=25),
    arrival=st.permutations(sorted(SOURCES)),
    replaced=st.none() | st.sampled_from(sorted(SOURCES)),
)
def test_the_running_merge_gives_what_merging_everything_again_gives(
    records: list[StudyRecord], arrival: list[str], replaced: str | None
) -> None:
    by_source: dict[str, list[StudyRecord]] = {}
    for record in records:  # one record per study and source, as a source answers
        kept = by_source.setdefault(record.source_id, [])
        if all(r.study_instance_uid != record.study_instance_uid for r in kept):
            kept.append(record)
    merge = RunningMerge(SOURCES)
    current: dict[str, Sequence[StudyRecord]] = {}
    for source_id in arrival:
        before = {e.study_instance_uid: e for e in merge.exams()}
        current[source_id] = by_source.get(source_id, [])
        changed = merge.update(current)
        after = {e.study_instance_uid: e for e in merge.exams()}
        assert {uid for uid in after if before.get(uid) != after[uid]} <= changed
        expected = merge_records([r for rs in current.values() for r in rs], SOURCES)
        assert merge.exams() == expected
    if replaced is not None:  # a result replaced within the query (a demographic status)
        current[replaced] = ()
        merge.update(current)
        assert merge.exams() == merge_records([r for rs in current.values() for r in rs], SOURCES)
