"""Reports over DIMSE: SR and DOC series found with a SERIES-level C-FIND, their instances fetched by C-GET.

PS3.4 C.4.1 (Study Root C-FIND at SERIES level) and C.4.3 (C-GET, whose C-STORE sub-operations
come back on the same association: we propose the report storage classes with the SCP role,
PS3.7 D.3.3.4). A peer that does not accept C-GET gives UNSUPPORTED (data, not an exception).
Every association runs in the connector's bounded thread pool, never on the event loop, and is
released (or, when abandoned at the deadline, aborted) before the thread is given back.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import threading
import time
from concurrent.futures import Executor
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import build_role, evt
from pynetdicom.association import Association
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
)
from pynetdicom.status import code_to_category

from connectors._dimse_association import application_entity
from connectors._dimse_socket import tune_socket
from connectors.dimse_settings import DimseSourceSettings
from connectors.sr_text import (
    DOCUMENT_SOP_CLASSES,
    REPORT_MODALITIES,
    SR_SOP_CLASSES,
    answer_from_dataset,
    document_from_dataset,
)
from federation.errors import SourceProtocolError, SourceTimeout, SourceUnreachable
from federation.models import Deadline
from federation.reports import ReportAnswer, ReportDocument, ReportInstance, ReportStatus, StudyRef

__all__ = ["DimsePeer", "fetch_document", "fetch_report"]

_STORAGE_CLASSES = (*SR_SOP_CLASSES, *DOCUMENT_SOP_CLASSES)
_MAX_KEPT = 16
"""Report instances one C-GET may hand us; more are refused (Out of Resources, 0xA702)."""
_ABORT_LINGER_S = 0.25
"""How long an aborted association waits for the peer to close the connection (its ARTIM timer)."""


@dataclasses.dataclass(frozen=True, slots=True)
class DimsePeer:
    """One DIMSE source as the report reader needs it: settings, its thread pool, TLS and extended negotiation."""

    settings: DimseSourceSettings
    executor: Executor
    tls_args: tuple[Any, Any] | None = None
    ext_neg: list[Any] | None = None


@dataclasses.dataclass
class _Session:
    """The association in use, so that a reader abandoned at the deadline can abort it."""

    association: Association | None = None
    received: list[Dataset] = dataclasses.field(default_factory=list)
    abandoned: threading.Event = dataclasses.field(default_factory=threading.Event)

    def on_store(self, event: Any) -> int:
        """A C-STORE sub-operation of our C-GET: keep the report instance (PS3.4 C.4.3.3)."""
        if self.abandoned.is_set() or len(self.received) >= _MAX_KEPT:
            return 0xA702
        try:
            dataset = event.dataset
            dataset.file_meta = event.file_meta
        except Exception:  # an undecodable instance: refused, and the C-GET says so
            return 0xC210
        self.received.append(dataset)
        return 0x0000


async def fetch_report(peer: DimsePeer, study: StudyRef, deadline: Deadline) -> ReportAnswer:
    """The study's newest SR (text) or, without one, its newest encapsulated document."""
    answer: ReportAnswer = await _run(peer, _report_blocking, study, None, deadline)
    return answer


async def fetch_document(
    peer: DimsePeer, study: StudyRef, document: ReportInstance, deadline: Deadline
) -> ReportDocument:
    """The document report's bytes, fetched again with an IMAGE-level C-GET."""
    fetched: ReportDocument = await _run(peer, _document_blocking, study, document, deadline)
    return fetched


async def _run(
    peer: DimsePeer, function: Any, study: StudyRef, document: ReportInstance | None, deadline: Deadline
) -> Any:
    session = _Session()
    loop = asyncio.get_running_loop()
    future = loop.run_in_executor(peer.executor, function, peer, study, document, deadline, session)
    try:
        async with asyncio.timeout(deadline.remaining()):
            return await future
    except (TimeoutError, asyncio.CancelledError) as exc:
        session.abandoned.set()
        if session.association is not None:
            threading.Thread(target=_abort, args=(session.association,), daemon=True).start()
        if isinstance(exc, TimeoutError):
            raise SourceTimeout("no report answer before the deadline") from exc
        raise


def _report_blocking(
    peer: DimsePeer, study: StudyRef, _document: ReportInstance | None, deadline: Deadline, session: _Session
) -> ReportAnswer:
    assoc = _associate(peer, deadline, session)
    clean = False
    try:
        series = _report_series(assoc, study, deadline)
        clean = True
        if not series:
            return ReportAnswer(status=ReportStatus.NOT_FOUND)
        if not _accepts(assoc, StudyRootQueryRetrieveInformationModelGet):
            return ReportAnswer(
                status=ReportStatus.UNSUPPORTED,
                error="report series found, but the peer does not accept C-GET",
            )
        clean = False
        for series_uid in series:
            identifier = _identifier("SERIES", study.study_instance_uid, series_uid)
            _get(assoc, identifier, session)
            best = _best(session.received)
            if best is not None:
                clean = True
                return answer_from_dataset(best)
            session.received.clear()
        clean = True
        return ReportAnswer(status=ReportStatus.NOT_FOUND)
    finally:
        _end(assoc, clean=clean)


def _document_blocking(
    peer: DimsePeer, study: StudyRef, document: ReportInstance | None, deadline: Deadline, session: _Session
) -> ReportDocument:
    assert document is not None
    assoc = _associate(peer, deadline, session)
    clean = False
    try:
        if not _accepts(assoc, StudyRootQueryRetrieveInformationModelGet):
            clean = True
            raise SourceProtocolError("the peer does not accept C-GET")
        identifier = _identifier("IMAGE", study.study_instance_uid, document.series_instance_uid)
        identifier.SOPInstanceUID = document.sop_instance_uid
        _get(assoc, identifier, session)
        clean = True
        for dataset in session.received:
            if "EncapsulatedDocument" in dataset:
                return document_from_dataset(dataset)
        raise SourceProtocolError("C-GET returned no encapsulated document")
    finally:
        _end(assoc, clean=clean)


def _associate(peer: DimsePeer, deadline: Deadline, session: _Session) -> Association:
    s = peer.settings
    ae = application_entity(
        s,
        deadline,
        (
            StudyRootQueryRetrieveInformationModelFind,
            StudyRootQueryRetrieveInformationModelGet,
            *_STORAGE_CLASSES,
        ),
    )
    roles = [build_role(uid, scp_role=True) for uid in _STORAGE_CLASSES]
    assoc = ae.associate(
        s.host,
        s.port,
        ae_title=s.called_ae,
        ext_neg=[*roles, *(peer.ext_neg or [])],
        evt_handlers=[(evt.EVT_C_STORE, session.on_store), (evt.EVT_CONN_OPEN, tune_socket)],
        tls_args=peer.tls_args,
    )
    session.association = assoc
    if assoc.is_established:
        if session.abandoned.is_set():
            _abort(assoc)
            raise SourceTimeout("report reading abandoned at the deadline")
        return assoc
    if assoc.is_rejected:
        raise SourceUnreachable(f"association rejected by {s.called_ae} (is {s.calling_ae} known there?)")
    if deadline.expired:
        raise SourceTimeout("no association before the report deadline")
    raise SourceUnreachable("no association (connection refused, aborted or unanswered)")


def _report_series(assoc: Association, study: StudyRef, deadline: Deadline) -> list[str]:
    """The study's SR series, then its DOC series, each newest first (one SERIES-level C-FIND)."""
    identifier = _identifier("SERIES", study.study_instance_uid, "")
    identifier.Modality = ""
    identifier.SeriesDate = ""
    identifier.SeriesTime = ""
    identifier.SeriesNumber = ""
    found: list[tuple[bool, str, int, str]] = []
    try:
        responses = assoc.send_c_find(identifier, StudyRootQueryRetrieveInformationModelFind)
    except (ValueError, RuntimeError) as exc:
        raise SourceProtocolError("could not send the SERIES-level C-FIND") from exc
    for status, answer in responses:
        category = _category(status, assoc, deadline, "C-FIND")
        if category == "Pending" and answer is not None:
            modality = str(answer.get("Modality", "") or "").upper()
            uid = str(answer.get("SeriesInstanceUID", "") or "")
            if uid and modality in REPORT_MODALITIES:
                when = str(answer.get("SeriesDate", "") or "") + str(answer.get("SeriesTime", "") or "")
                found.append((modality != "SR", when, _int(answer.get("SeriesNumber")), uid))
        elif category != "Pending":
            if category not in ("Success", "Warning"):
                raise SourceProtocolError(
                    f"SERIES-level C-FIND failed with status 0x{int(status.Status):04X}"
                )
            break
    # SR first; within each kind the newest, then the highest SeriesNumber.
    found.sort(key=lambda s: (s[0], _later_first(s[1]), -s[2]))
    return [uid for *_, uid in found]


def _get(assoc: Association, identifier: Dataset, session: _Session) -> None:
    """One C-GET; its instances land in ``session.received`` through the C-STORE handler."""
    try:
        responses = assoc.send_c_get(identifier, StudyRootQueryRetrieveInformationModelGet)
    except (ValueError, RuntimeError) as exc:
        raise SourceProtocolError("could not send the C-GET") from exc
    sent = time.monotonic()
    for status, _ in responses:
        if session.abandoned.is_set():
            raise SourceTimeout("report reading abandoned at the deadline")
        if not status or "Status" not in status:
            if time.monotonic() - sent >= (assoc.dimse_timeout or 0.0) * 0.9:
                raise SourceTimeout("no C-GET response in time")
            # Orthanc answers a C-GET its DicomModalities do not allow (AllowGet) with no valid response.
            raise SourceProtocolError(
                f"the peer refused the C-GET (may {assoc.requestor.ae_title} retrieve there?)"
            )
        category = code_to_category(int(status.Status))
        if category == "Pending":
            continue
        if category in ("Success", "Warning") or session.received:
            return
        raise SourceProtocolError(f"C-GET refused or failed with status 0x{int(status.Status):04X}")


def _category(status: Dataset | None, assoc: Association, deadline: Deadline, what: str) -> str:
    if not status or "Status" not in status:
        if deadline.expired:
            raise SourceTimeout(f"no {what} response before the report deadline")
        raise SourceProtocolError(f"no {what} response (timeout or association aborted)")
    return str(code_to_category(int(status.Status)))


def _best(datasets: list[Dataset]) -> Dataset | None:
    """The report instance with the highest InstanceNumber (dose reports and key images are skipped)."""
    reports = [d for d in datasets if str(d.get("SOPClassUID", "")) in _STORAGE_CLASSES]
    return max(reports, key=lambda d: _int(d.get("InstanceNumber")), default=None)


def _identifier(level: str, study_uid: str, series_uid: str) -> Dataset:
    identifier = Dataset()
    identifier.QueryRetrieveLevel = level
    identifier.StudyInstanceUID = study_uid
    identifier.SeriesInstanceUID = series_uid
    return identifier


def _accepts(assoc: Association, abstract_syntax: str) -> bool:
    return any(context.abstract_syntax == abstract_syntax for context in assoc.accepted_contexts)


def _end(assoc: Association, *, clean: bool) -> None:
    """Release after a clean exchange, else abort; nothing once the association is ending already.

    After the peer's or pynetdicom's own A-ABORT the state machine waits in Sta13 for the socket to
    close, and a release (Evt11) or abort (Evt15) there kills pynetdicom's reactor thread
    (InvalidEventError), leaving the socket open.
    """
    if _state(assoc) == "Sta13":
        _reap(assoc)
        return
    if _state(assoc) == "Sta1":
        return
    if clean and _state(assoc) == "Sta6":
        with contextlib.suppress(Exception):
            assoc.release()
        return
    _abort(assoc)


def _abort(assoc: Association) -> None:
    if _state(assoc) in ("Sta1", "Sta13"):
        return
    with contextlib.suppress(Exception):
        assoc.acse_timeout = _ABORT_LINGER_S
        assoc.abort()


def _reap(assoc: Association) -> None:
    """An association ending in Sta13: wait a little for the socket to close, then close it ourselves
    if pynetdicom's reactor died there (a peer that aborts between the two PDUs of our C-GET request
    makes the reactor send the second one in Sta13: InvalidEventError), so no socket or thread is left."""
    until = time.monotonic() + _ABORT_LINGER_S
    dul = getattr(assoc, "dul", None)
    while dul is not None and dul.is_alive() and _state(assoc) == "Sta13" and time.monotonic() < until:
        time.sleep(0.01)
    if dul is not None and not dul.is_alive():
        with contextlib.suppress(Exception):
            if dul.socket is not None:
                dul.socket.close()
        with contextlib.suppress(Exception):
            assoc.kill()


def _state(assoc: Association) -> str | None:
    machine = getattr(getattr(assoc, "dul", None), "state_machine", None)
    state = getattr(machine, "current_state", None)
    return state if isinstance(state, str) else None


def _int(value: Any) -> int:
    try:
        return int(str(value or "0"))
    except ValueError:
        return 0


def _later_first(when: str) -> tuple[int, ...]:
    digits = "".join(ch for ch in when if ch.isdigit())[:14].ljust(14, "0")
    return tuple(-int(ch) for ch in digits) if when else (1,)
