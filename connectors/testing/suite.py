"""The conformance kit's pytest classes: a connector's own test suite subclasses one and names its peer.

Every test is a plain (synchronous) pytest test that runs its own event loop with
:func:`asyncio.run`, so the kit needs neither pytest-asyncio nor any loop fixture.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator, Mapping, Sequence
from typing import Any, ClassVar, TypeVar

import httpx
import pytest

from connectors.base import Connector, ConnectorContext, SourceAnswer
from connectors.testing.probes import Endpoint, LoopWatch, ResourceCensus, closed_port, silent_port
from connectors.testing.studies import NO_SUCH_PATIENT, KitStudy, kit_studies
from federation.errors import ConnectorError, SourceTimeout, SourceUnreachable
from federation.models import Deadline, StudyQuery, StudyRecord

__all__ = ["ConnectorConformance", "NetworkConnectorConformance"]

T = TypeVar("T")

_REQUIRED_FIELDS = (
    "patient_id",
    "patient_birth_date",
    "patient_sex",
    "study_date",
    "accession_number",
    "description",
)
_ALWAYS_CHECKED = frozenset({"patient_id", "study_date"})
_RELEASE_GRACE_S = 2.0
"""How long threads and sockets may take to go away after ``aclose`` (a thread finishing its last poll)."""


_SEEDED: set[tuple[type, int]] = set()
"""(test class, peer) pairs already seeded in this session."""


_CHECK_LIMIT_S = 90.0
"""The longest one check may run: a connector that ignores its deadlines fails instead of hanging the suite."""


def _run(coroutine: Coroutine[Any, Any, T]) -> T:
    async def bounded() -> T:
        try:
            return await asyncio.wait_for(coroutine, _CHECK_LIMIT_S)
        except TimeoutError:
            pytest.fail(f"the check did not end in {_CHECK_LIMIT_S:.0f} s: a call ignores its deadline")

    return asyncio.run(bounded())


async def _awaited(value: Awaitable[T]) -> T:
    return await value


def _patient_data(studies: Sequence[KitStudy]) -> set[str]:
    """The strings that identify a kit patient: ids, family names of every group, birth dates."""
    found: set[str] = set()
    for study in studies:
        found.add(study.patient_id)
        found.add(study.patient_birth_date.strftime("%Y%m%d"))
        found.add(study.patient_birth_date.isoformat())
        for group in study.patient_name.split("="):
            family = group.split("^", 1)[0]
            if len(family) >= 2:
                found.add(family)
    return found


class _LogCapture(logging.Handler):
    """Every log record of INFO and up, from any logger, while a kit test runs."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        with contextlib.suppress(Exception):
            self.messages.append(f"{record.name}: {record.getMessage()}")


@contextlib.contextmanager
def _captured_logs() -> Iterator[_LogCapture]:
    root = logging.getLogger()
    handler, level = _LogCapture(), root.level
    root.addHandler(handler)
    root.setLevel(min(level, logging.INFO) if level else logging.INFO)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


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
                _run(_awaited(result))
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
        secrets = _patient_data(self.studies())
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

        _run(check())

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

        _run(check())

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

        _run(check())

    def test_demographic_search_finds_the_patient(self, seeded_peer: Any) -> None:
        """With ``supports_demographic_search``: a family-name prefix and a birth date find the studies."""
        if not self.connector_class.supports_demographic_search:
            pytest.skip("the connector does not declare supports_demographic_search")

        async def check() -> None:
            async with self.connected(seeded_peer) as connector:
                for studies in self.patients(ascii_names=True).values():
                    first = studies[0]
                    query = StudyQuery(
                        patient_name=f"{first.family_name[:4]}*", patient_birth_date=first.patient_birth_date
                    )
                    answer = await connector.find_studies(query, Deadline.after(self.query_deadline_s))
                    self.check_answer(answer, studies, connector.id)

        _run(check())

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
                await _cancelled_soon(
                    connector.find_studies(query, Deadline.after(self.query_deadline_s)), self
                )

        _run(check())

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

        _run(check())

    def test_answers_and_logs_carry_no_patient_data_beyond_records(self, seeded_peer: Any) -> None:
        """Log lines (INFO and up, every logger) and warnings never quote an id, a name or a birth date."""

        async def check() -> None:
            async with self.connected(seeded_peer) as connector:
                for patient_id in [*self.patients(), NO_SUCH_PATIENT]:
                    answer = await connector.find_studies(
                        StudyQuery(patient_id=patient_id), Deadline.after(self.query_deadline_s)
                    )
                    self.check_clean(list(answer.warnings), "warnings")

        with _captured_logs() as logs:
            _run(check())
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
            return await _settled(before[0].new_sockets)

        sockets = _run(check())
        assert not sockets, f"sockets left open after aclose: {sockets}"
        threads = _settled_now(before[0].new_threads)
        assert not threads, f"threads left running after aclose: {threads}"


class NetworkConnectorConformance(ConnectorConformance):
    """Also checks what a connector does when its peer is unreachable or silent (the kit's own ports)."""

    dead_deadline_s: ClassVar[float] = 1.5
    """The deadline given against the silent port: the call must end with SourceTimeout by then."""

    def test_an_unreachable_peer_is_source_unreachable(self, seeded_peer: Any) -> None:
        """A refused connection raises SourceUnreachable (status UNREACHABLE), naming no patient."""

        async def check() -> list[str]:
            messages: list[str] = []
            with closed_port() as endpoint:
                async with self.connected(seeded_peer, endpoint) as connector:
                    query = StudyQuery(patient_id=next(iter(self.patients())))
                    for call in (
                        lambda: connector.find_studies(query, Deadline.after(self.query_deadline_s)),
                        lambda: connector.ping(Deadline.after(self.query_deadline_s)),
                    ):
                        messages.append(await _raises(SourceUnreachable, call))
            return messages

        with _captured_logs() as logs:
            messages = _run(check())
        self.check_clean(messages, "error messages")
        self.check_clean(logs.messages, "log lines")

    def test_a_silent_peer_is_source_timeout_at_the_deadline(self, seeded_peer: Any) -> None:
        """A peer that accepts and never answers: SourceTimeout (status TIMEOUT) at the deadline, not later."""

        async def check() -> list[str]:
            messages: list[str] = []
            with silent_port() as endpoint:
                async with self.connected(seeded_peer, endpoint) as connector:
                    query = StudyQuery(patient_id=next(iter(self.patients())))
                    for call in (
                        lambda: connector.find_studies(query, Deadline.after(self.dead_deadline_s)),
                        lambda: connector.ping(Deadline.after(self.dead_deadline_s)),
                    ):
                        started = time.monotonic()
                        within_s = self.dead_deadline_s + self.cancel_within_s + 1.0
                        messages.append(await _raises(SourceTimeout, call, within_s))
                        late = time.monotonic() - started - self.dead_deadline_s
                        assert late <= self.cancel_within_s, (
                            f"SourceTimeout came {late:.3f} s after the deadline"
                        )
            return messages

        with _captured_logs() as logs:
            messages = _run(check())
        self.check_clean(messages, "error messages")
        self.check_clean(logs.messages, "log lines")

    def test_cancelled_while_the_peer_is_silent_ends_soon_and_leaves_nothing(self, seeded_peer: Any) -> None:
        """Cancelling a call that waits on a silent peer ends it soon; aclose then releases everything."""
        before: list[ResourceCensus] = []

        async def check() -> list[str]:
            with silent_port() as endpoint:
                before.append(ResourceCensus.now())
                async with self.connected(seeded_peer, endpoint) as connector:
                    query = StudyQuery(patient_id=next(iter(self.patients())))
                    await _cancelled_soon(
                        connector.find_studies(query, Deadline.after(30.0)), self, wait_s=0.3
                    )
                    await _cancelled_soon(connector.ping(Deadline.after(30.0)), self, wait_s=0.3)
                return await _settled(before[0].new_sockets)

        sockets = _run(check())
        assert not sockets, f"sockets left open after aclose: {sockets}"
        threads = _settled_now(before[0].new_threads)
        assert not threads, f"threads left running after aclose: {threads}"


async def _raises(
    expected: type[ConnectorError], call: Callable[[], Awaitable[object]], within_s: float = _CHECK_LIMIT_S
) -> str:
    """The message of the ``expected`` error the call raises within ``within_s``; fail on anything else."""
    task = asyncio.ensure_future(call())
    done, _ = await asyncio.wait({task}, timeout=within_s)
    if not done:
        task.cancel()
        pytest.fail(f"still running {within_s:.1f} s later instead of raising {expected.__name__}")
    try:
        task.result()
    except expected as exc:
        return str(exc)
    except ConnectorError as exc:
        pytest.fail(f"raised {type(exc).__name__} ({exc}), not {expected.__name__}")
    except Exception as exc:  # a foreign exception escaped the connector
        pytest.fail(f"raised {type(exc).__name__}, not a ConnectorError ({expected.__name__})")
    pytest.fail(f"answered instead of raising {expected.__name__}")


async def _cancelled_soon(call: Awaitable[object], kit: ConnectorConformance, wait_s: float = 0.0) -> None:
    """Start the call, cancel it after ``wait_s``, and fail unless it ends within ``cancel_within_s``."""
    task = asyncio.ensure_future(call)
    await asyncio.sleep(wait_s)
    task.cancel()
    cancelled_at = time.monotonic()
    done, _ = await asyncio.wait({task}, timeout=kit.cancel_within_s + 5.0)
    late = time.monotonic() - cancelled_at
    assert done, f"the call was still running {late:.1f} s after it was cancelled"
    assert late <= kit.cancel_within_s, f"the call ended {late:.3f} s after it was cancelled"
    if not task.cancelled():
        exc = task.exception()
        assert exc is None or isinstance(exc, ConnectorError), f"cancelling it raised {type(exc).__name__}"


async def _settled(leftovers: Callable[[], list[str]]) -> list[str]:
    """What ``leftovers`` still reports after a short grace (a socket closing, a thread ending)."""
    until = time.monotonic() + _RELEASE_GRACE_S
    while (found := leftovers()) and time.monotonic() < until:  # noqa: ASYNC110 - polling the OS, no event to wait on
        await asyncio.sleep(0.05)
    return found


def _settled_now(leftovers: Callable[[], list[str]]) -> list[str]:
    until = time.monotonic() + _RELEASE_GRACE_S
    while (found := leftovers()) and time.monotonic() < until:
        time.sleep(0.05)
    return found
