"""The conformance kit catches what it promises to: each fault of a small connector fails the check made for it.

``Shelf`` answers from the kit's studies in memory, and with a ``port`` talks TCP to the kit's
closed, silent or shedding port; its ``fault`` setting makes it misbehave in one way.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, ClassVar, Literal

import pytest

from connectors.base import Connector, ConnectorContext, SourceAnswer
from connectors.testing import Endpoint, KitStudy, NetworkConnectorConformance, kit_studies
from federation.errors import Overloaded, SourceProtocolError, SourceTimeout, SourceUnreachable
from federation.models import Deadline, StudyQuery, StudyRecord
from federation.settings import SourceSettings

SHELF: list[KitStudy] = []
LEAKS: list[Any] = []
"""Threads' stop events and sockets the faulty shelves leave behind, released after each test."""


class ShelfSettings(SourceSettings):
    kind: Literal["shelf"]
    fault: str = ""
    host: str = ""
    port: int = 0


def _record(study: KitStudy, source_id: str, fault: str) -> StudyRecord:
    names = study.patient_name.split("=")
    name = names[0].encode("latin-1", "replace").decode("latin-1") if fault == "mangles_names" else names[0]
    groups = (*names, "", "")[:3] if len(names) > 1 and fault != "mangles_names" else None
    return StudyRecord(
        source_id=source_id,
        study_instance_uid=study.study_instance_uid,
        patient_id=study.patient_id,
        patient_name=name,
        patient_name_groups=groups,
        patient_birth_date=study.patient_birth_date,
        patient_sex=study.patient_sex,
        study_date=None if fault == "loses_dates" else study.study_date,
        study_time=study.study_time,
        accession_number=study.accession_number,
        description=study.description,
        modalities=(study.modality,),
    )


class Shelf(Connector):
    """The kit's studies from memory, or a TCP exchange with ``host:port``, with one fault."""

    kind = "shelf"
    settings_model = ShelfSettings
    settings: ShelfSettings

    def __init__(self, settings: ShelfSettings, context: ConnectorContext) -> None:
        super().__init__(settings, context)
        if settings.fault == "leaks_thread":
            stop = threading.Event()
            LEAKS.append(stop)
            threading.Thread(target=stop.wait, name="shelf-leak", daemon=True).start()

    async def find_studies(self, query: StudyQuery, deadline: Deadline) -> SourceAnswer:
        fault = self.settings.fault
        if self.settings.port:
            await self._exchange(deadline, query.patient_id)
        if fault == "blocks":
            time.sleep(0.12)
        if fault == "slow_to_cancel":
            try:
                await asyncio.sleep(deadline.remaining())
            except asyncio.CancelledError:
                await asyncio.sleep(1.2)
                raise
        if fault == "leaks_socket":
            LEAKS.append(socket.socket())
        studies = [s for s in SHELF if s.patient_id == query.patient_id]
        if not studies and fault == "fails_on_no_match":
            raise SourceProtocolError("no such patient")
        warnings = (f"odd study of {query.patient_id}",) if fault == "quotes_patient" else ()
        return SourceAnswer([_record(s, self.id, fault) for s in studies], warnings)

    async def ping(self, deadline: Deadline) -> None:
        if self.settings.port:
            await self._exchange(deadline, None)

    async def _exchange(self, deadline: Deadline, patient_id: str | None) -> None:
        fault, writer = self.settings.fault, None
        try:
            async with contextlib.AsyncExitStack() as stack:
                if fault != "ignores_deadline":
                    await stack.enter_async_context(asyncio.timeout(deadline.remaining()))
                reader, writer = await asyncio.open_connection(self.settings.host, self.settings.port)
                if not await reader.read(1):  # closed unanswered: the peer sheds its load
                    if fault == "sheds_as_overloaded":
                        raise Overloaded("the peer is busy")
                    raise SourceUnreachable("the peer closed the connection")
        except ConnectionRefusedError as exc:
            if fault == "refused_is_protocol":
                raise SourceProtocolError("the peer said something odd") from exc
            raise SourceUnreachable("connection refused") from exc
        except TimeoutError as exc:
            raise SourceTimeout(
                f"no answer about {patient_id}" if fault == "quotes_patient" else "no answer"
            ) from exc
        finally:
            if writer is not None:
                writer.close()


class ShelfKit(NetworkConnectorConformance):
    """The kit on a Shelf with one fault (no ``Test`` prefix: run by the tests below, not collected)."""

    connector_class: ClassVar[type[Connector]] = Shelf
    fault = ""

    @pytest.fixture
    def conformance_peer(self) -> list[KitStudy]:
        return SHELF

    def source_settings(self, peer: Any, endpoint: Endpoint | None = None) -> Mapping[str, Any]:
        where = {"host": endpoint.host, "port": endpoint.port} if endpoint else {}
        return {"kind": "shelf", "id": "kit-shelf", "fault": self.fault, **where}

    def seed(self, peer: list[KitStudy], studies: Sequence[KitStudy]) -> None:
        peer[:] = studies


class TestTheKitPassesAHealthyShelf(ShelfKit):
    """Every check of the kit passes on a connector without faults."""


@pytest.fixture(autouse=True)
def _release_leaks() -> Iterator[None]:
    SHELF[:] = kit_studies()
    yield
    for leak in LEAKS:
        if isinstance(leak, threading.Event):
            leak.set()
        else:
            leak.close()
    LEAKS.clear()


@pytest.mark.parametrize(
    ("fault", "check", "complaint"),
    [
        ("loses_dates", "test_known_studies_come_back_normalized", "study_date is None"),
        (
            "fails_on_no_match",
            "test_no_match_is_an_empty_answer",
            "raised SourceProtocolError, not an empty answer",
        ),
        ("mangles_names", "test_non_ascii_names_survive", "names changed on the way"),
        ("blocks", "test_the_event_loop_is_never_blocked", r"the event loop was blocked for [1-9]\d\d+ ms"),
        ("slow_to_cancel", "test_a_call_ends_at_its_deadline_or_when_cancelled", "s after it was cancelled"),
        (
            "quotes_patient",
            "test_answers_and_logs_carry_no_patient_data_beyond_records",
            "carry patient data",
        ),
        (
            "leaks_thread",
            "test_aclose_is_idempotent_and_leaves_nothing_behind",
            "threads left running.*shelf-leak",
        ),
        ("leaks_socket", "test_aclose_is_idempotent_and_leaves_nothing_behind", "sockets left open"),
        ("refused_is_protocol", "test_an_unreachable_peer_is_source_unreachable", "not SourceUnreachable"),
        ("ignores_deadline", "test_a_silent_peer_is_source_timeout_at_the_deadline", "still running"),
        ("quotes_patient", "test_a_silent_peer_is_source_timeout_at_the_deadline", "carry patient data"),
        (
            "sheds_as_overloaded",
            "test_a_peer_shedding_load_is_the_hospitals_failure_never_busy",
            "raised Overloaded, not a ConnectorError",
        ),
    ],
)
def test_the_kit_fails_a_connector_with_the_fault_its_check_is_for(
    fault: str, check: str, complaint: str
) -> None:
    faulty = ShelfKit()
    faulty.fault = fault
    with pytest.raises((AssertionError, pytest.fail.Exception), match=complaint):
        getattr(faulty, check)(SHELF)
    getattr(ShelfKit(), check)(SHELF)  # the same check passes without the fault
