"""The conformance kit's pytest classes: a connector's own test suite subclasses one and names its peer.

Every test is a plain (synchronous) pytest test that runs its own event loop with
:func:`asyncio.run`, so the kit needs neither pytest-asyncio nor any loop fixture.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any, ClassVar

import httpx
import pytest

from connectors.base import Connector, ConnectorContext, SourceAnswer
from connectors.testing._checks import (
    awaited,
    cancelled_soon,
    captured_logs,
    patient_data,
    run_check,
    settled,
    settled_now,
)
from connectors.testing.levels import check_instance_query, check_series_query, check_study_keys
from connectors.testing.probes import Endpoint, LoopWatch, ResourceCensus
from connectors.testing.studies import NO_SUCH_PATIENT, KitStudy, kit_studies
from federation.errors import ConnectorError, SourceTimeout
from federation.models import Deadline, StudyQuery, StudyRecord

__all__ = ["ConnectorConformance"]


_REQUIRED_FIELDS = (
    "patient_id",
    "patient_birth_date",
    "patient_sex",
    "study_date",
    "accession_number",
    "description",
)
_ALWAYS_CHECKED = frozenset({"patient_id", "study_date"})


_SEEDED: set[tuple[type, int]] = set()
"""(test class, peer) pairs already seeded in this session."""


class ConnectorConformance:
    """The checks every connector passes, whatever it talks to (subclass it as ``Test…``).

    Implement :meth:`conformance_peer` (a fixture giving whatever your peer is),
    :meth:`source_settings` and :meth:`seed`, and set :attr:`connector_class`. Connectors that
    reach a peer over the network subclass :class:`NetworkConnectorConformance` instead.
    """

    connector_class: ClassVar[type[Connector]]
    """The connector under test."""
    may_omit: ClassVar[frozenset[str]] = frozenset()
    """Normalized fields the peer may leave out of its answers (checked when present)."""
    loop_block_limit_s: ClassVar[float] = 0.05
    """The longest the connector may keep the event loop from running other tasks."""
    cancel_within_s: ClassVar[float] = 0.5
    """How soon after its deadline, or after being cancelled, a call must have ended."""
    query_deadline_s: ClassVar[float] = 15.0
    """The deadline of an ordinary kit query (a generous one: peers under test may be slow)."""

    # --- what a connector's own suite provides -------------------------------------------------

    @pytest.fixture
    def conformance_peer(self) -> Any:
        """Override: a fixture giving the connector's peer (anything your hooks take; start it once per session)."""
        raise NotImplementedError("override the conformance_peer fixture")

    def source_settings(self, peer: Any, endpoint: Endpoint | None = None) -> Mapping[str, Any]:
        """Override: a source of your kind as configured (``kind``, ``id``, …), reaching ``peer``.

        With ``endpoint``, the same source pointed at that host and port instead (the kit's
        closed and silent ports): only :class:`NetworkConnectorConformance` asks for it.
        """
        raise NotImplementedError("override source_settings(peer, endpoint=None)")

    def seed(self, peer: Any, studies: Sequence[KitStudy]) -> Awaitable[None] | None:
        """Override: make ``peer`` hold these studies (sync or async; called once per class).

        The same studies are seeded in every run: make it idempotent (fixed UIDs are used).
        """
        raise NotImplementedError("override seed(peer, studies)")

    def studies(self) -> Sequence[KitStudy]:
        """The studies seeded and checked; override to leave out what your peer cannot hold."""
        return kit_studies()

    def connector(self, peer: Any, context: ConnectorContext, endpoint: Endpoint | None = None) -> Connector:
        """A connector built as pacsfed builds one: its settings validated by its ``settings_model``."""
        settings = self.connector_class.settings_model.model_validate(
            dict(self.source_settings(peer, endpoint))
        )
        return self.connector_class(settings, context)

    # --- plumbing ------------------------------------------------------------------------------

    @pytest.fixture
    def seeded_peer(self, conformance_peer: Any) -> Any:
        """The peer, seeded with :meth:`studies` once per test class and peer."""
        key = (type(self), id(conformance_peer))
        if key not in _SEEDED:
            result = self.seed(conformance_peer, self.studies())
            if inspect.isawaitable(result):
                run_check(awaited(result))
            _SEEDED.add(key)
        return conformance_peer

    @contextlib.asynccontextmanager
    async def connected(self, peer: Any, endpoint: Endpoint | None = None) -> AsyncIterator[Connector]:
        """A connector with its own shared HTTP client, closed (twice, as the engine may) on exit."""
        async with httpx.AsyncClient() as http_client:
            connector = self.connector(peer, ConnectorContext(http_client=http_client), endpoint)
            try:
                yield connector
            finally:
                await connector.aclose()
                await connector.aclose()

    def patients(self, *, ascii_names: bool | None = None) -> dict[str, list[KitStudy]]:
        """The seeded studies by PatientID (only ASCII names, only others, or all)."""
        found: dict[str, list[KitStudy]] = {}
        for study in self.studies():
            if ascii_names is None or study.patient_name.isascii() == ascii_names:
                found.setdefault(study.patient_id, []).append(study)
        return found

    def check_record(self, record: StudyRecord, study: KitStudy, settings_id: str) -> None:
        """Fail unless ``record`` is ``study`` as a normalized StudyRecord of this source."""
        assert record.source_id == settings_id, f"source_id {record.source_id!r}, not the source's id"
        expected: dict[str, Any] = {
            "patient_id": study.patient_id,
            "patient_birth_date": study.patient_birth_date,
            "patient_sex": study.patient_sex,
            "study_date": study.study_date,
            "accession_number": study.accession_number,
            "description": study.description,
        }
        for name in _REQUIRED_FIELDS:
            value = getattr(record, name)
            if value is None and name in self.may_omit and name not in _ALWAYS_CHECKED:
                continue
            assert value == expected[name], (
                f"{study.study_instance_uid}: {name} is {value!r}, not {expected[name]!r}"
            )
        if record.study_time is not None or "study_time" not in self.may_omit:
            when = record.study_time.replace(microsecond=0) if record.study_time is not None else None
            assert when == study.study_time, (
                f"{study.study_instance_uid}: study_time is {record.study_time!r}, not {study.study_time!r}"
            )
        if record.modalities or "modalities" not in self.may_omit:
            assert record.modalities == (study.modality,), (
                f"{study.study_instance_uid}: modalities {record.modalities!r}, not {(study.modality,)!r}"
            )
        for count in ("number_of_series", "number_of_instances"):
            value = getattr(record, count)
            assert value in (None, 1), f"{study.study_instance_uid}: {count} is {value!r}, not 1"

    def check_answer(self, answer: SourceAnswer, studies: Sequence[KitStudy], settings_id: str) -> None:
        """Fail unless the answer holds exactly these studies, each normalized."""
        assert isinstance(answer, SourceAnswer), (
            f"find_studies returned {type(answer).__name__}, not SourceAnswer"
        )
        by_uid = {record.study_instance_uid: record for record in answer.records}
        expected = {study.study_instance_uid: study for study in studies}
        assert set(by_uid) == set(expected), f"studies {sorted(by_uid)}, not {sorted(expected)}"
        assert len(answer.records) == len(by_uid), "a study came back twice in one answer"
        for uid, study in expected.items():
            self.check_record(by_uid[uid], study, settings_id)
        self.check_clean(list(answer.warnings), "an answer's warnings")

    def check_clean(self, texts: Sequence[str], what: str) -> None:
        """Fail if any text quotes a kit patient's id, family name or birth date."""
        secrets = patient_data(self.studies())
        for text in texts:
            leaked = sorted(s for s in secrets if s in text)
            assert not leaked, f"{what} carry patient data {leaked}: {text!r}"

    # --- the checks ----------------------------------------------------------------------------

    def test_known_studies_come_back_normalized(self, seeded_peer: Any) -> None:
        """Each seeded patient's studies, and only those, with every normalized field."""

        async def check() -> None:
            async with self.connected(seeded_peer) as connector:
                for patient_id, studies in self.patients(ascii_names=True).items():
                    answer = await connector.find_studies(
                        StudyQuery(patient_id=patient_id), Deadline.after(self.query_deadline_s)
                    )
                    self.check_answer(answer, studies, connector.id)
                    for record in answer.records:
                        pn = record.patient_pn
                        assert pn == studies[0].patient_name, (
                            f"patient name {pn!r}, not {studies[0].patient_name!r}"
                        )

        run_check(check())

    def test_no_match_is_an_empty_answer(self, seeded_peer: Any) -> None:
        """A PatientID nobody has: an empty answer, not an error."""

        async def check() -> None:
            async with self.connected(seeded_peer) as connector:
                try:
                    answer = await connector.find_studies(
                        StudyQuery(patient_id=NO_SUCH_PATIENT), Deadline.after(self.query_deadline_s)
                    )
                except ConnectorError as exc:
                    pytest.fail(f"raised {type(exc).__name__}, not an empty answer ({exc})")
                assert isinstance(answer, SourceAnswer), f"find_studies returned {type(answer).__name__}"
                assert list(answer.records) == [], "a PatientID nobody has found studies"
                assert not answer.truncated

        run_check(check())

    def test_non_ascii_names_survive(self, seeded_peer: Any) -> None:
        """Names in Latin, Greek, Cyrillic and Japanese (all three component groups) come back unchanged."""

        async def check() -> None:
            async with self.connected(seeded_peer) as connector:
                wrong: list[str] = []
                for patient_id, studies in self.patients(ascii_names=False).items():
                    answer = await connector.find_studies(
                        StudyQuery(patient_id=patient_id), Deadline.after(self.query_deadline_s)
                    )
                    self.check_answer(answer, studies, connector.id)
                    wrong += [
                        f"{record.patient_pn!r} for {studies[0].patient_name!r}"
                        for record in answer.records
                        if record.patient_pn != studies[0].patient_name
                    ]
                assert not wrong, f"names changed on the way: {', '.join(wrong)}"

        run_check(check())

    def test_demographic_search_finds_the_patient(self, seeded_peer: Any) -> None:
        """With ``supports_demographic_search``: a family-name prefix and a birth date find the studies.

        Without it the engine never sends such a query; sent anyway, it must be refused with a
        ConnectorError or answered within the patient's own studies, never widened to others'.
        """
        declared = self.connector_class.supports_demographic_search

        async def check() -> None:
            async with self.connected(seeded_peer) as connector:
                for studies in self.patients(ascii_names=True).values():
                    first = studies[0]
                    query = StudyQuery(
                        patient_name=f"{first.family_name[:4]}*", patient_birth_date=first.patient_birth_date
                    )
                    if declared:
                        answer = await connector.find_studies(query, Deadline.after(self.query_deadline_s))
                        self.check_answer(answer, studies, connector.id)
                        continue
                    try:
                        answer = await connector.find_studies(query, Deadline.after(self.query_deadline_s))
                    except ConnectorError as refused:
                        self.check_clean([str(refused)], "a refused query's error")
                        continue
                    own = {study.study_instance_uid for study in studies}
                    others = [r.study_instance_uid for r in answer.records if r.study_instance_uid not in own]
                    assert not others, f"a demographic query it does not support was widened: {others}"

        run_check(check())

    def test_study_keys_match(self, seeded_peer: Any) -> None:
        """With ``supports_study_keys``: StudyInstanceUID, AccessionNumber, StudyDate ranges and ModalitiesInStudy."""
        run_check(self._with_connector(seeded_peer, check_study_keys))

    def test_series_of_a_study_are_listed(self, seeded_peer: Any) -> None:
        """With ``supports_series_query``: each study's series; without, ``find_series`` raises ConnectorError."""
        run_check(self._with_connector(seeded_peer, check_series_query))

    def test_instances_of_a_series_are_listed(self, seeded_peer: Any) -> None:
        """With ``supports_instance_query``: each series' instances; without, ``find_instances`` raises."""
        run_check(self._with_connector(seeded_peer, check_instance_query))

    async def _with_connector(
        self, peer: Any, check: Callable[[ConnectorConformance, Connector], Awaitable[None]]
    ) -> None:
        async with self.connected(peer) as connector:
            await check(self, connector)

    def test_a_call_ends_at_its_deadline_or_when_cancelled(self, seeded_peer: Any) -> None:
        """An expired deadline, and a caller's cancellation, end the call within ``cancel_within_s``."""

        async def check() -> None:
            async with self.connected(seeded_peer) as connector:
                query = StudyQuery(patient_id=next(iter(self.patients())))
                started = time.monotonic()
                with contextlib.suppress(SourceTimeout):
                    await connector.find_studies(query, Deadline.after(0.0))
                late = time.monotonic() - started
                assert late <= self.cancel_within_s, f"an expired deadline still took {late:.3f} s"
                await cancelled_soon(
                    connector.find_studies(query, Deadline.after(self.query_deadline_s)), self.cancel_within_s
                )

        run_check(check())

    def test_the_event_loop_is_never_blocked(self, seeded_peer: Any) -> None:
        """Pings, queries (some at once), an empty answer and ``aclose`` never stall the loop ``loop_block_limit_s``.

        The connector is built before the watch starts: pacsfed builds connectors at start-up.
        """

        async def check() -> None:
            deadline = Deadline.after(self.query_deadline_s)
            async with self.connected(seeded_peer) as connector, LoopWatch() as watch:
                await connector.ping(deadline)
                queries = [StudyQuery(patient_id=pid) for pid in [*self.patients(), NO_SUCH_PATIENT]]
                await asyncio.gather(*(connector.find_studies(q, deadline) for q in queries))
                await connector.find_studies(queries[0], deadline)
                await connector.aclose()
            longest_ms = watch.longest_s * 1000
            limit_ms = self.loop_block_limit_s * 1000
            assert watch.longest_s <= self.loop_block_limit_s, (
                f"the event loop was blocked for {longest_ms:.0f} ms (limit {limit_ms:.0f} ms)"
            )

        run_check(check())

    def test_answers_and_logs_carry_no_patient_data_beyond_records(self, seeded_peer: Any) -> None:
        """Log lines (INFO and up, every logger) and warnings never quote an id, a name or a birth date."""

        async def check() -> None:
            async with self.connected(seeded_peer) as connector:
                for patient_id in [*self.patients(), NO_SUCH_PATIENT]:
                    answer = await connector.find_studies(
                        StudyQuery(patient_id=patient_id), Deadline.after(self.query_deadline_s)
                    )
                    self.check_clean(list(answer.warnings), "warnings")

        with captured_logs() as logs:
            run_check(check())
        self.check_clean(logs.messages, "log lines")

    def test_aclose_is_idempotent_and_leaves_nothing_behind(self, seeded_peer: Any) -> None:
        """After a ping, queries and ``aclose`` twice: no new thread, no open socket."""
        before: list[ResourceCensus] = []

        async def check() -> list[str]:
            before.append(ResourceCensus.now())
            async with self.connected(seeded_peer) as connector:
                deadline = Deadline.after(self.query_deadline_s)
                await connector.ping(deadline)
                for patient_id in self.patients():
                    await connector.find_studies(StudyQuery(patient_id=patient_id), deadline)
            return await settled(before[0].new_sockets)

        sockets = run_check(check())
        assert not sockets, f"sockets left open after aclose: {sockets}"
        threads = settled_now(before[0].new_threads)
        assert not threads, f"threads left running after aclose: {threads}"
