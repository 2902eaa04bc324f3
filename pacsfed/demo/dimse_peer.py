"""A simulated DIMSE PACS: a pynetdicom Query/Retrieve SCP over an in-memory catalogue (demo only).

It answers C-ECHO, C-FIND (PS3.4 C.4.1) in the Patient Root and Study Root information models at
every level, with the matching of PS3.4 C.2.2.2, and Study Root C-GET (PS3.4 C.4.3) of its report
instances, sent as C-STORE sub-operations on the same association. Its series and instances are
the reports of :mod:`pacsfed.demo.reports` only: no image is simulated, so an image series is
neither listed nor retrieved. Responses hold only the keys asked for, plus SpecificCharacterSet
(always ISO_IR 192, UTF-8), QueryRetrieveLevel and RetrieveAETitle. Any calling AE is accepted; an
association called for another AE title is rejected (A-ASSOCIATE-RJ, "called AE title not
recognised", PS3.8 9.3.4), as a real PACS does.

Nothing here logs identifiers; note that pynetdicom itself logs every C-FIND request identifier
at INFO on the ``pynetdicom`` logger unless ``pynetdicom._config.LOG_REQUEST_IDENTIFIERS`` is
False, so keep that logger above INFO wherever patient data flows.
"""

from __future__ import annotations

import copy
import logging
import socket
import time
from collections.abc import Iterable, Iterator
from typing import Any

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import UID
from pynetdicom import AE, evt

from pacsfed.demo.patients import (
    UTF8_CHARSET,
    MatchError,
    MatchKey,
    keys_from_identifier,
    record_matches,
    validate_key,
)
from pacsfed.demo.reports import COMPREHENSIVE_SR, ENCAPSULATED_PDF, series_record

_log = logging.getLogger(__name__)

# C-FIND and C-GET statuses (PS3.4 C.4.1.1.4, C.4.3.1.4).
_PENDING = 0xFF00
_CANCEL = 0xFE00
_IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS = 0xA900
_UNABLE_TO_PROCESS = 0xC000

# PS3.4 Annex B (Verification) and C.6 (the FIND SOP classes); pynetdicom.sop_class builds its
# names dynamically, so mypy cannot see them.
_VERIFICATION = UID("1.2.840.10008.1.1")
_PATIENT_ROOT = UID("1.2.840.10008.5.1.4.1.2.1.1")
_STUDY_ROOT = UID("1.2.840.10008.5.1.4.1.2.2.1")
_STUDY_ROOT_GET = UID("1.2.840.10008.5.1.4.1.2.2.3")
# PS3.4 C.4.1.2.2.1 (hierarchical search): the levels of each model, top first, and the unique
# key of each level, which must hold one value at every level above the one queried.
_LEVELS = {_PATIENT_ROOT: ("PATIENT", "STUDY", "SERIES", "IMAGE"), _STUDY_ROOT: ("STUDY", "SERIES", "IMAGE")}
_UNIQUE_KEY = {"PATIENT": "PatientID", "STUDY": "StudyInstanceUID", "SERIES": "SeriesInstanceUID"}
_PATIENT_ATTRIBUTES = (
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "PatientBirthDate",
    "PatientSex",
)
_CANCEL_POLL_S = 0.01

FindResponse = tuple[int, Dataset | None]


class SimulatedDimsePacs:
    """A Query/Retrieve SCP on a loopback port: study-level datasets, and report instances to retrieve."""

    def __init__(
        self,
        ae_title: str,
        datasets: Iterable[Dataset],
        host: str = "127.0.0.1",
        port: int = 0,
        latency_s: float = 0.0,
        *,
        max_associations: int = 32,
        tcp_nodelay: bool = True,
        study_root: bool = True,
        reports: Iterable[Dataset] = (),
    ) -> None:
        self.ae_title = ae_title
        self.host = host
        self.latency_s = latency_s
        self.tcp_nodelay = tcp_nodelay
        self._requested_port = port
        self._studies = [copy.deepcopy(ds) for ds in datasets]
        self._patients = _patient_records(self._studies)
        self._instances = [copy.deepcopy(ds) for ds in reports]
        self._series = [series_record(ds) for ds in self._instances]
        self._ae = AE(ae_title=ae_title)
        self._ae.maximum_associations = max_associations
        self._ae.require_called_aet = True
        # Without Study Root it behaves like the older PACS that offer Patient Root only.
        for sop_class in (
            _VERIFICATION,
            _PATIENT_ROOT,
            *((_STUDY_ROOT, _STUDY_ROOT_GET) if study_root else ()),
        ):
            self._ae.add_supported_context(sop_class)
        if study_root:
            # C-GET sends the instances back as C-STORE requests: the SCU role of the storage
            # classes, which the retriever proposes by SCP/SCU Role Selection (PS3.7 D.3.3.4).
            for sop_class in (COMPREHENSIVE_SR, ENCAPSULATED_PDF):
                self._ae.add_supported_context(sop_class, scu_role=False, scp_role=True)
        self._server: Any = None
        self.cancelled_queries = 0
        self.associations_accepted = 0
        """How many associations clients opened (to check that they are reused)."""
        """How many C-FINDs were stopped by a C-CANCEL from the client."""

    @property
    def port(self) -> int:
        """The port the SCP listens on; only meaningful once started."""
        if self._server is None:
            raise RuntimeError("the simulated PACS is not started")
        return int(self._server.server_address[1])

    def start(self) -> int:
        """Start listening (in pynetdicom's own threads) and return the bound port."""
        if self._server is None:
            self._server = self._ae.start_server(
                (self.host, self._requested_port),
                block=False,
                evt_handlers=[
                    (evt.EVT_CONN_OPEN, self._on_connection),
                    (evt.EVT_ACCEPTED, self._on_accepted),
                    (evt.EVT_C_FIND, self._on_find),
                    (evt.EVT_C_GET, self._on_get),
                ],
            )
        return self.port

    def _on_accepted(self, _event: Any) -> None:
        self.associations_accepted += 1

    def active_associations(self) -> list[Any]:
        """The associations open now (tests abort them to play a peer that drops idle links)."""
        return list(self._server.active_associations) if self._server is not None else []

    def stop(self) -> None:
        """Abort open associations and close the listening socket; may block about half a second."""
        if self._server is None:
            return
        self._server = None
        self._ae.shutdown()

    def __enter__(self) -> SimulatedDimsePacs:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _on_connection(self, event: Any) -> None:
        """EVT_CONN_OPEN handler: turn Nagle off, so the simulator adds no delay of its own.

        pynetdicom leaves sockets with the OS defaults; with Nagle on at both ends, each C-FIND
        on loopback was measured here 40 to 100 ms slower (delayed ACKs), which would swamp any
        benchmark. ``tcp_nodelay=False`` keeps that behaviour, to simulate such a peer.
        """
        if self.tcp_nodelay:
            event.assoc.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _on_find(self, event: Any) -> Iterator[FindResponse]:
        """EVT_C_FIND handler: yields (status, identifier) pairs; runs in the association thread."""
        try:
            yield from self._find(event)
        except Exception as exc:  # never let pynetdicom log a traceback that may quote data
            _log.warning("C-FIND failed in %s: %s", self.ae_title, type(exc).__name__)
            yield _UNABLE_TO_PROCESS, None

    def _find(self, event: Any) -> Iterator[FindResponse]:
        identifier: Dataset = event.identifier
        level = str(identifier.get("QueryRetrieveLevel", "")).strip().upper()
        checked = _checked_keys(identifier, level, UID(event.request.AffectedSOPClassUID))
        if isinstance(checked, int):
            yield checked, None
            return
        keys = checked
        if not self._wait_latency(event):
            self.cancelled_queries += 1
            yield _CANCEL, None
            return
        for record in self._records(level):
            if event.is_cancelled:
                self.cancelled_queries += 1
                yield _CANCEL, None
                return
            if record_matches(record, keys):
                yield _PENDING, self._response(identifier, record, level)

    def _records(self, level: str) -> list[Dataset]:
        by_level = {"PATIENT": self._patients, "STUDY": self._studies, "SERIES": self._series}
        return by_level.get(level, self._instances)

    def _on_get(self, event: Any) -> Iterator[Any]:
        """EVT_C_GET handler: the number of sub-operations, then one (Pending, instance) per match."""
        try:
            identifier: Dataset = event.identifier
            level = str(identifier.get("QueryRetrieveLevel", "")).strip().upper()
            checked = _checked_keys(identifier, level, _STUDY_ROOT)
            if not isinstance(checked, int) and not self._wait_latency(event):
                checked = _CANCEL
            matches = [] if isinstance(checked, int) else [
                ds for ds in self._instances if record_matches(ds, checked)
            ]  # fmt: skip
        except Exception as exc:  # never let pynetdicom log a traceback that may quote data
            _log.warning("C-GET failed in %s: %s", self.ae_title, type(exc).__name__)
            checked = _UNABLE_TO_PROCESS
        if isinstance(checked, int):
            yield 1  # pynetdicom sends a failure status only once sub-operations are announced
            yield checked, None
            return
        yield len(matches)
        for instance in matches:
            if event.is_cancelled:
                yield _CANCEL, None
                return
            yield _PENDING, instance

    def _wait_latency(self, event: Any) -> bool:
        """Sleep ``latency_s`` in small steps; False if the query was cancelled meanwhile."""
        deadline = time.monotonic() + self.latency_s
        while (left := deadline - time.monotonic()) > 0:
            if event.is_cancelled:
                return False
            time.sleep(min(left, _CANCEL_POLL_S))
        return not event.is_cancelled

    def _response(self, identifier: Dataset, record: Dataset, level: str) -> Dataset:
        """Only the requested keys, valued from the record, empty where the record has no value."""
        out = Dataset()
        out.SpecificCharacterSet = UTF8_CHARSET
        for elem in identifier:
            if elem.tag.element == 0 or elem.keyword in ("SpecificCharacterSet", "RetrieveAETitle"):
                continue
            if elem.tag in record:
                out.add(copy.deepcopy(record[elem.tag]))
            else:
                out.add(DataElement(elem.tag, elem.VR, Sequence() if elem.VR == "SQ" else None))
        out.QueryRetrieveLevel = level
        out.RetrieveAETitle = self.ae_title
        return out


def _checked_keys(identifier: Dataset, level: str, model: UID) -> list[MatchKey] | int:
    """The identifier's matching keys, or the failure status of a query this model cannot take."""
    levels = _LEVELS.get(model, ())
    if level not in levels:
        return _IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS
    keys = keys_from_identifier(identifier)
    # PS3.4 C.4.1.2.2.1: below the top level, the unique keys above must be given.
    if not all(_single_value(keys, _UNIQUE_KEY[above]) for above in levels[: levels.index(level)]):
        return _IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS
    try:
        for key in keys:
            validate_key(key)
    except MatchError:
        return _UNABLE_TO_PROCESS
    return keys


def _single_value(keys: list[MatchKey], name: str) -> bool:
    """True if the keys hold one value of ``name`` without wildcards."""
    for key in keys:
        if key.name == name and len(key.values) == 1:
            return not {"*", "?"} & set(key.values[0])
    return False


def _patient_records(studies: list[Dataset]) -> list[Dataset]:
    """One PATIENT-level record per (PatientID, IssuerOfPatientID), with its related counts."""
    patients: dict[tuple[str, str], Dataset] = {}
    for study in studies:
        key = (str(study.get("PatientID", "")), str(study.get("IssuerOfPatientID", "")))
        record = patients.get(key)
        if record is None:
            record = Dataset()
            record.SpecificCharacterSet = UTF8_CHARSET
            for keyword in _PATIENT_ATTRIBUTES:
                if keyword in study:
                    record.add(copy.deepcopy(study[keyword]))
            record.NumberOfPatientRelatedStudies = 0
            record.NumberOfPatientRelatedSeries = 0
            record.NumberOfPatientRelatedInstances = 0
            patients[key] = record
        record.NumberOfPatientRelatedStudies += 1
        record.NumberOfPatientRelatedSeries += int(study.get("NumberOfStudyRelatedSeries", 0))
        record.NumberOfPatientRelatedInstances += int(study.get("NumberOfStudyRelatedInstances", 0))
    return list(patients.values())
