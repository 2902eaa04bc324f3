"""The DIMSE association pool under a race real peers cannot force: a fake association, a hook.

An association handed back to the pool by a query that ended cleanly must never be C-CANCELled
and aborted by that query's cancellation landing late, once another query has taken it.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time

from pydicom.dataset import Dataset
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind  # type: ignore[attr-defined]

from connectors.base import ConnectorContext
from connectors.dimse import DimseConnector
from connectors.dimse_settings import DimseSourceSettings
from federation.models import Deadline, StudyQuery


def status(code: int) -> Dataset:
    ds = Dataset()
    ds.Status = code
    return ds


def study(uid: str) -> Dataset:
    ds = Dataset()
    ds.StudyInstanceUID = uid
    ds.PatientID = "PA-001"
    return ds


class FakeAssociation:
    """An established association; C-CANCEL makes the running C-FIND end with Cancel (0xFE00)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.is_established = True
        self.accepted_contexts = [
            type("Ctx", (), {"abstract_syntax": StudyRootQueryRetrieveInformationModelFind})()
        ]
        self.dimse_timeout = self.acse_timeout = 10.0
        self.network_timeout = 10.0
        self.cancelled = threading.Event()
        self.find_started = threading.Event()
        self.aborted = False
        self.slow = False

    def send_c_find(self, identifier, model, msg_id=1):  # type: ignore[no-untyped-def]
        self.find_started.set()
        self.cancelled.clear()
        yield status(0xFF00), study(f"{self.name}.1")
        if self.slow and self.cancelled.wait(1.0):
            yield status(0xFE00), None  # the peer honoured a C-CANCEL
            return
        yield status(0xFF00), study(f"{self.name}.2")
        yield status(0x0000), None

    def send_c_cancel(self, msg_id, query_model=None):  # type: ignore[no-untyped-def]
        self.cancelled.set()

    def abort(self) -> None:
        self.aborted = True
        self.is_established = False

    def release(self) -> None:
        self.is_established = False


async def test_a_late_cancel_leaves_an_association_given_back_to_the_pool_alone() -> None:
    settings = DimseSourceSettings(id="pacs", kind="dimse", host="127.0.0.1", port=1, called_ae="PACS")
    connector = DimseConnector(settings, ConnectorContext())
    loop = asyncio.get_running_loop()
    shared = FakeAssociation("1.2.826.0.1.3680043.10.999")
    connector._pool.give_back(shared)  # an idle pooled association
    deadline = Deadline.after(5)
    query = StudyQuery(patient_id="PA-001")
    tasks: dict[str, asyncio.Task[object]] = {}
    real_give_back = connector._pool.give_back

    def give_back(association):  # type: ignore[no-untyped-def]
        real_give_back(association)  # query A ended cleanly: the association is idle again
        if "b" in tasks:
            return
        association.slow = True
        association.find_started.clear()
        # Query B (another patient view) starts at once and takes the association from the pool...
        loop.call_soon_threadsafe(
            lambda: tasks.setdefault("b", asyncio.ensure_future(connector.find_studies(query, deadline)))
        )
        assert association.find_started.wait(1.0)
        # ...while query A's task is cancelled (its last waiter gave up / a purge / the deadline) just
        # before the loop picks up A's result: A's _run sees CancelledError with watch.association set.
        loop.call_soon_threadsafe(tasks["a"].cancel)
        time.sleep(0.2)

    connector._pool.give_back = give_back  # type: ignore[method-assign]
    tasks["a"] = asyncio.ensure_future(connector.find_studies(query, deadline))
    with contextlib.suppress(asyncio.CancelledError):
        await tasks["a"]
    answer_b = await tasks["b"]
    await asyncio.sleep(0.4)
    await connector.aclose()
    assert not answer_b.truncated and len(answer_b.records) == 2, (answer_b.records, answer_b.warnings)
    assert not shared.aborted
