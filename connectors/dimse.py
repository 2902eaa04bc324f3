"""DIMSE connector: Study Root C-FIND at STUDY level (PS3.4 C.4.1), with a Patient Root fallback.

The queries run on the event loop (no thread per association): an association is an
``asyncio.Protocol`` cutting bounded PDUs out of the stream (``_dimse_wire``), negotiated and
spoken with pynetdicom's own PDU and DIMSE message codecs (``_dimse_link``); the C-FIND
identifier is built in ``_dimse_find``, its responses read in ``_dimse_responses`` (one loop for
every query level, given each level's record builder by ``_dimse_levels``), and idle
associations wait in ``_association_pool``. Reports (SERIES C-FIND, then C-GET with its C-STORE
sub-operations) still go through pynetdicom's blocking association in a bounded thread pool
(``dimse_reports``), created only when a report is read.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from pynetdicom import _config
from pynetdicom.dimse_messages import C_ECHO_RQ
from pynetdicom.dimse_primitives import C_ECHO
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from connectors import dimse_reports
from connectors._association_pool import AssociationPool, close_in_background
from connectors._dimse_find import FIND_MODELS, accepted_model
from connectors._dimse_levels import Level, instance_level, series_level, study_level
from connectors._dimse_link import ABORT_LINGER_S, AssociationEnded, DimseLink, cut
from connectors._dimse_responses import (
    FindState,
    Found,
    identifier_request,
    read_responses,
    send_cancel,
    study_request,
)
from connectors._dimse_slots import Slots
from connectors._user_identity import user_identity_request
from connectors.base import Connector, ConnectorContext, InstanceAnswer, SeriesAnswer, SourceAnswer
from connectors.dicom_levels import instance_identifier, series_identifier
from connectors.dimse_settings import DimseSourceSettings
from federation.errors import SourceAuthError, SourceProtocolError, SourceTimeout
from federation.models import Deadline, InstanceQuery, SeriesQuery, StudyQuery, StudyRecord
from federation.reports import ReportAnswer, ReportDocument, ReportInstance, StudyRef
from federation.tls import client_context, server_hostname

# pynetdicom (the report reader's C-GET) logs whole identifiers by default: never let it.
_config.LOG_REQUEST_IDENTIFIERS = False
_config.LOG_RESPONSE_IDENTIFIERS = False
_STUDY_ROOT = FIND_MODELS[0]
R = TypeVar("R")


class DimseConnector(Connector):
    """Queries one PACS with C-FIND over a DICOM association."""

    kind = "dimse"
    settings_model = DimseSourceSettings
    supports_issuer_of_patient_id = True
    supports_demographic_search = True
    supports_reports = True
    supports_study_keys = True
    supports_uid_lists = True
    supports_series_query = True
    supports_instance_query = True

    settings: DimseSourceSettings

    def __init__(self, settings: DimseSourceSettings, context: ConnectorContext) -> None:
        super().__init__(settings, context)
        # Only the report reader (pynetdicom's blocking C-GET) uses threads; none start before it does.
        self._executor = ThreadPoolExecutor(
            max_workers=settings.max_concurrency, thread_name_prefix=f"pacsfed-dimse-{settings.id}"
        )
        self._pool = AssociationPool(settings.association_pool, settings.association_idle_s)
        self._slots = Slots(settings.max_concurrency)
        # DICOM TLS (PS3.15 B.12): the context is built now, so a bad CA or key file fails at start-up.
        self._tls_args = (
            (client_context(settings.tls), server_hostname(settings.tls, settings.host))
            if settings.tls is not None
            else None
        )
        self._identity = (
            user_identity_request(settings.user_identity)
            if settings.user_identity is not None and self._tls_args is not None
            else None
        )
        self._study_level = study_level(self.id, settings.called_ae)
        self._series_level = series_level(self.id, settings.called_ae)
        self._instance_level = instance_level(self.id, settings.called_ae)

    async def find_studies(self, query: StudyQuery, deadline: Deadline) -> SourceAnswer:
        """Every study matching the query, via one C-FIND on a pooled or fresh association."""

        def request(link: DimseLink, model: str) -> bytes:
            return study_request(link, model, query)

        found = await self._find(request, self._study_level, deadline)
        answer = SourceAnswer(found.records, found.warnings, found.truncated)
        if query.modalities and any(not record.modalities for record in answer.records):
            return await self._modalities_filled(query, answer, deadline)
        return answer

    async def find_series(self, query: SeriesQuery, deadline: Deadline) -> SeriesAnswer:
        """The study's series: one SERIES-level C-FIND (Study Root; Patient Root with the patient's id)."""

        def request(link: DimseLink, model: str) -> bytes:
            if model != _STUDY_ROOT and query.patient_id is None:
                raise SourceProtocolError(
                    "the peer takes only Patient Root C-FIND: a series query needs PatientID"
                )
            return identifier_request(
                link, model, series_identifier(query, patient_root=model != _STUDY_ROOT)
            )

        found = await self._find(request, self._series_level, deadline)
        return SeriesAnswer(found.records, found.warnings, found.truncated)

    async def find_instances(self, query: InstanceQuery, deadline: Deadline) -> InstanceAnswer:
        """The series' instances: one IMAGE-level C-FIND (Study Root)."""

        def request(link: DimseLink, model: str) -> bytes:
            if model != _STUDY_ROOT:
                raise SourceProtocolError("the peer takes only Patient Root C-FIND: no instance query")
            return identifier_request(link, model, instance_identifier(query))

        found = await self._find(request, self._instance_level, deadline)
        return InstanceAnswer(found.records, found.warnings, found.truncated)

    async def _modalities_filled(
        self, query: StudyQuery, answer: SourceAnswer, deadline: Deadline
    ) -> SourceAnswer:
        """Studies the peer gave without ModalitiesInStudy, with their series' modalities (one SERIES C-FIND each).

        A peer that returns no ModalitiesInStudy ignores it as a matching key too (dcmqrscp):
        asked for by modality, its studies get theirs from their series and are matched here.
        """

        async def filled(record: StudyRecord) -> StudyRecord:
            if record.modalities:
                return record
            query = SeriesQuery(study_instance_uid=record.study_instance_uid, patient_id=record.patient_id)
            series = await self.find_series(query, deadline)
            modalities = tuple(dict.fromkeys(s.modality for s in series.records if s.modality))
            return record.model_copy(update={"modalities": modalities})

        records = await asyncio.gather(*(filled(record) for record in answer.records))
        kept = [r for r in records if not r.modalities or set(query.modalities) & set(r.modalities)]
        return SourceAnswer(kept, answer.warnings, answer.truncated)

    async def ping(self, deadline: Deadline) -> None:
        """C-ECHO the peer (PS3.7 9.1.5)."""
        try:
            async with asyncio.timeout(deadline.remaining()):
                await self._echo(deadline)
        except TimeoutError as exc:
            raise SourceTimeout("no C-ECHO answer before the deadline") from exc

    async def fetch_report(self, study: StudyRef, deadline: Deadline) -> ReportAnswer:
        """The study's SR or document report (SERIES C-FIND, then C-GET): connectors.dimse_reports."""
        return await dimse_reports.fetch_report(self._report_peer(), study, deadline)

    async def fetch_report_document(
        self, study: StudyRef, document: ReportInstance, deadline: Deadline
    ) -> ReportDocument:
        """A document report's bytes, fetched again with C-GET."""
        return await dimse_reports.fetch_document(self._report_peer(), study, document, deadline)

    def _report_peer(self) -> dimse_reports.DimsePeer:
        ext_neg: list[Any] | None = [self._identity] if self._identity is not None else None
        return dimse_reports.DimsePeer(self.settings, self._executor, self._tls_args, ext_neg)

    async def aclose(self) -> None:
        """Release the pooled associations and stop the report reader's threads."""
        await self._pool.close()
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def _associate(self, deadline: Deadline, contexts: tuple[str, ...]) -> DimseLink:
        link = await DimseLink.open(self.settings, contexts, deadline, self._tls_args, self._identity)
        if self._identity_unconfirmed(link):
            link.abort()
            raise SourceAuthError("the peer did not confirm our user identity")
        return link

    def _identity_unconfirmed(self, link: DimseLink) -> bool:
        """A positive response was asked for a SAML or JWT identity and the A-ASSOCIATE-AC has none.

        Only those types carry a server response (PS3.7 D.3.3.7.2); for a username (with or
        without passcode) an acceptor may confirm nothing, so it is not required.
        """
        identity = self.settings.user_identity
        if identity is None or not identity.positive_response or identity.type not in ("saml", "jwt"):
            return False
        return link.identity_response is None

    async def _find(
        self, request: Callable[[DimseLink, str], bytes], level: Level[R], deadline: Deadline
    ) -> Found[R]:
        """One C-FIND at any level, on a pooled association or, when none is idle or it died idle, a fresh one."""
        try:
            async with asyncio.timeout(deadline.remaining()), self._slots:
                pooled = self._pool.take()
                if pooled is not None:
                    try:
                        return await self._find_on(pooled, request, level, deadline)
                    except AssociationEnded as exc:
                        # The pooled association died while idle (the peer aborted it): one new attempt.
                        if not exc.before_any_response or deadline.expired:
                            raise
                link = await self._associate(deadline, FIND_MODELS)
                return await self._find_on(link, request, level, deadline)
        except TimeoutError as exc:
            raise SourceTimeout("no answer before the deadline") from exc

    async def _find_on(
        self,
        link: DimseLink,
        request: Callable[[DimseLink, str], bytes],
        level: Level[R],
        deadline: Deadline,
    ) -> Found[R]:
        """One C-FIND on an established association; a clean end returns it to the pool.

        Given up (the deadline, the engine's cancel, an error) the association is C-CANCELled
        and aborted at once (PS3.7 9.3.2.3): a release would wait behind the responses a peer
        may go on sending (measured: 14 s behind a peer sending 10,000).
        """
        state = FindState()
        try:
            model = accepted_model(link.contexts)
            found = await read_responses(
                link,
                model,
                request(link, model),
                deadline,
                state,
                max_results=self.settings.max_results,
                level=level,
            )
        except BaseException:
            if state.model is not None and link.protocol.open:
                send_cancel(link, state.model)
            link.abort(ABORT_LINGER_S)
            raise
        if found.truncated and state.model is not None:
            link.abort(ABORT_LINGER_S)  # C-CANCELled: the C-CANCEL leaves, then the A-ABORT
        else:
            self._pool.give_back(link)
        return found

    async def _echo(self, deadline: Deadline) -> None:
        link = await self._associate(deadline, (Verification,))
        try:
            if Verification not in link.contexts:
                raise SourceProtocolError("the peer does not accept Verification (C-ECHO)")
            primitive = C_ECHO()
            primitive.MessageID = 1
            primitive.AffectedSOPClassUID = Verification
            request = C_ECHO_RQ()
            request.primitive_to_message(primitive)
            link.send(request, link.contexts[Verification][0])
            try:
                response = await link.receive(cut(self.settings.dimse_timeout_s, deadline))
            except TimeoutError as exc:
                raise SourceTimeout("no C-ECHO response in time") from exc
            except (
                AssociationEnded
            ) as exc:  # Orthanc, say, accepts the association, then aborts an unknown AE
                raise AssociationEnded(
                    f"{exc} during the C-ECHO (is {self.settings.calling_ae} registered there?)"
                ) from exc
            status = response.status if response.status is not None else -1
            if status != 0x0000:
                raise SourceProtocolError(f"C-ECHO failed with status 0x{status & 0xFFFF:04X}")
        except BaseException:
            link.abort()
            raise
        close_in_background(link)
