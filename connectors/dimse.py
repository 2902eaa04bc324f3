"""DIMSE connector: Study Root C-FIND at STUDY level (PS3.4 C.4.1), with a Patient Root fallback.

pynetdicom's association API blocks, so every association runs in a thread pool bounded per
source: a hung PACS can use up its own threads, never the event loop or another source's.
pynetdicom reports timeouts and aborts as empty status datasets and association flags, not
exceptions; each is checked and turned into a ConnectorError. The pieces live beside this module:
the C-FIND identifier (``_dimse_find``), the responses and their status categories
(``_dimse_responses``), an association's watch and abandonment (``_dimse_association``), the
socket guards (``_dimse_socket``) and the pool of idle associations (``_association_pool``).
"""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import _config
from pynetdicom.association import Association
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from connectors import dimse_reports
from connectors._association_pool import AssociationPool, close_in_background
from connectors._dimse_association import (
    MIN_TIMEOUT_S,
    AssociationWatch,
    abandon,
    abandon_in_background,
    abort_quietly,
    application_entity,
    identity_unconfirmed,
)
from connectors._dimse_find import FIND_MODELS, accepted_model, find_identifier
from connectors._dimse_responses import collect_studies
from connectors._user_identity import user_identity_request
from connectors.base import Connector, ConnectorContext, SourceAnswer
from connectors.dimse_settings import DimseSourceSettings
from connectors.normalize import study_record_from_dataset
from federation.errors import SourceAuthError, SourceProtocolError, SourceTimeout, SourceUnreachable
from federation.models import Deadline, StudyQuery, StudyRecord
from federation.reports import ReportAnswer, ReportDocument, ReportInstance, StudyRef
from federation.tls import client_context, handshake_failure, server_hostname

# pynetdicom logs whole identifiers (names, IDs, birth dates) by default: never let it.
_config.LOG_REQUEST_IDENTIFIERS = False
_config.LOG_RESPONSE_IDENTIFIERS = False

_CANCEL_FIRST_S = 0.5


class DimseConnector(Connector):
    """Queries one PACS with C-FIND over a DICOM association."""

    kind = "dimse"
    settings_model = DimseSourceSettings
    supports_issuer_of_patient_id = True
    supports_demographic_search = True
    supports_reports = True

    settings: DimseSourceSettings

    def __init__(self, settings: DimseSourceSettings, context: ConnectorContext) -> None:
        super().__init__(settings, context)
        self._executor = ThreadPoolExecutor(
            max_workers=settings.max_concurrency, thread_name_prefix=f"pacsfed-dimse-{settings.id}"
        )
        self._pool = AssociationPool(settings.association_pool, settings.association_idle_s)
        # DICOM TLS (PS3.15 B.12): the context is built now, so a bad CA or key file fails at start-up.
        self._tls_args = (
            (client_context(settings.tls), server_hostname(settings.tls, settings.host))
            if settings.tls is not None
            else None
        )
        self._ext_neg: list[Any] | None = (
            [user_identity_request(settings.user_identity)]
            if settings.user_identity is not None and self._tls_args is not None
            else None
        )

    async def find_studies(self, query: StudyQuery, deadline: Deadline) -> SourceAnswer:
        """Every study matching the query, via one C-FIND on a pooled or fresh association."""
        answer: SourceAnswer = await self._run(self._find_blocking, query, deadline)
        return answer

    async def ping(self, deadline: Deadline) -> None:
        """C-ECHO the peer (PS3.7 9.1.5)."""
        await self._run(self._echo_blocking, deadline)

    async def fetch_report(self, study: StudyRef, deadline: Deadline) -> ReportAnswer:
        """The study's SR or document report (SERIES C-FIND, then C-GET): connectors.dimse_reports."""
        return await dimse_reports.fetch_report(self._report_peer(), study, deadline)

    async def fetch_report_document(
        self, study: StudyRef, document: ReportInstance, deadline: Deadline
    ) -> ReportDocument:
        """A document report's bytes, fetched again with C-GET."""
        return await dimse_reports.fetch_document(self._report_peer(), study, document, deadline)

    def _report_peer(self) -> dimse_reports.DimsePeer:
        return dimse_reports.DimsePeer(self.settings, self._executor, self._tls_args, self._ext_neg)

    async def aclose(self) -> None:
        """Release the pooled associations and stop the source's threads."""
        self._pool.close()
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def _run(self, function: Any, *args: Any) -> Any:
        """Run ``function(*args, watch)`` in the source's threads; ``args`` end with the deadline.

        The deadline is enforced here as a whole: pynetdicom's timeouts bound each wait, and a
        peer that drips bytes never lets one of them run out.
        """
        deadline: Deadline = args[-1]
        watch = AssociationWatch()
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._executor, function, *args, watch)
        try:
            async with asyncio.timeout(deadline.remaining()):
                try:
                    return await future
                except asyncio.CancelledError:
                    # The engine or the deadline gave up: free the thread now, not at the peer's timeout.
                    watch.cancelled.set()
                    if watch.association is not None:
                        threading.Thread(target=abandon, args=(watch,), daemon=True).start()
                    raise
        except TimeoutError as exc:
            raise SourceTimeout("no answer before the deadline") from exc

    def _associate(
        self, deadline: Deadline, contexts: tuple[str, ...], watch: AssociationWatch
    ) -> Association:
        s = self.settings
        ae = application_entity(s, deadline, contexts)
        started = time.monotonic()
        assoc = ae.associate(
            s.host,
            s.port,
            ae_title=s.called_ae,
            evt_handlers=watch.handlers(),
            tls_args=self._tls_args,
            ext_neg=self._ext_neg,
        )
        watch.association = assoc
        if assoc.is_established:
            if watch.cancelled.is_set():
                abort_quietly(assoc)
                raise SourceTimeout("query abandoned at the deadline")
            if identity_unconfirmed(s, assoc):
                abort_quietly(assoc)
                raise SourceAuthError("the peer did not confirm our user identity")
            return assoc
        elapsed = time.monotonic() - started
        if self._tls_args is not None and not assoc.is_rejected:
            self._raise_if_tls_failed(deadline, watch, elapsed, ae.connection_timeout or 0.0)
        if not watch.connected:
            if deadline.expired or elapsed >= (ae.connection_timeout or 0.0) * 0.95:
                raise SourceTimeout(f"no TCP connection within {elapsed:.1f} s")
            raise SourceUnreachable("connection refused or host unreachable")
        if assoc.is_rejected:
            raise SourceUnreachable(f"association rejected by {s.called_ae} (is {s.calling_ae} known there?)")
        if watch.peer_aborted:
            raise SourceUnreachable(f"association aborted by the peer (is {s.calling_ae} registered there?)")
        raise SourceTimeout(f"no association response within {elapsed:.1f} s")

    def _raise_if_tls_failed(
        self, deadline: Deadline, watch: AssociationWatch, elapsed: float, connection_timeout: float
    ) -> None:
        """SourceUnreachable naming the TLS failure, if the association failed in the TLS handshake.

        pynetdicom reports a failed handshake as a failed connection (or, when the server refuses
        our certificate under TLS 1.3, as a dropped one): a second handshake says which it was.
        """
        timed_out = not watch.connected and elapsed >= connection_timeout * 0.95
        if self._tls_args is None or timed_out or deadline.expired:
            return
        context, hostname = self._tls_args
        timeout = max(min(self.settings.connect_timeout_s, deadline.remaining()), MIN_TIMEOUT_S)
        reason = handshake_failure(self.settings.host, self.settings.port, context, hostname, timeout)
        if reason is not None:
            raise SourceUnreachable(f"TLS handshake failed: {reason}")

    def _find_blocking(self, query: StudyQuery, deadline: Deadline, watch: AssociationWatch) -> SourceAnswer:
        identifier = find_identifier(query, self.settings.query_charset)
        pooled = self._pool.take()
        if pooled is not None:
            try:
                return self._find_on(pooled, identifier, deadline, watch)
            except SourceProtocolError:
                # The pooled association died while idle (the peer aborted it): one new attempt.
                if watch.cancelled.is_set() or deadline.expired:
                    raise
        return self._find_on(self._associate(deadline, FIND_MODELS, watch), identifier, deadline, watch)

    def _find_on(
        self, assoc: Association, identifier: Dataset, deadline: Deadline, watch: AssociationWatch
    ) -> SourceAnswer:
        """One C-FIND on an established association; a clean end returns it to the pool."""
        watch.association = assoc
        remaining = max(deadline.remaining(), MIN_TIMEOUT_S)
        # A little past the deadline: the engine gives up at the deadline and C-CANCELs the query;
        # the DIMSE timeout is the backstop for when nobody does.
        assoc.dimse_timeout = min(self.settings.dimse_timeout_s, remaining + _CANCEL_FIRST_S)
        assoc.acse_timeout = min(self.settings.acse_timeout_s, remaining)
        clean = truncated = False
        try:
            answer = collect_studies(
                assoc,
                accepted_model(assoc),
                identifier,
                deadline,
                watch,
                max_results=self.settings.max_results,
                calling_ae=self.settings.calling_ae,
                to_record=self._record,
            )
            clean, truncated = not answer.truncated, answer.truncated
            return answer
        finally:
            if not assoc.is_established:
                pass
            elif clean and not (watch.cancelled.is_set() or deadline.expired):
                # Claimed first: a cancel of this query landing later must not C-CANCEL and abort
                # the association once another query has taken it from the pool.
                if watch.claim_ending():
                    self._pool.give_back(assoc)
            elif truncated or watch.cancelled.is_set() or deadline.expired:
                # Not a release: after a C-CANCEL a peer may go on sending responses, and a release
                # would wait behind them (measured: 14 s behind a peer sending 10,000). Nor an abort
                # here: the answer is ready and must not wait for the peer to stop sending.
                abandon_in_background(watch, cancel=not truncated)  # a truncated C-FIND was C-CANCELled
            elif watch.claim_ending():
                close_in_background(assoc)  # the answer need not wait for the peer's A-RELEASE-RP

    def _record(self, answer: Dataset) -> StudyRecord | None:
        """The one place a C-FIND answer becomes a StudyRecord."""
        return study_record_from_dataset(answer, self.id, default_retrieve_ae=self.settings.called_ae)

    def _echo_blocking(self, deadline: Deadline, watch: AssociationWatch) -> None:
        assoc = self._associate(deadline, (Verification,), watch)
        try:
            status = assoc.send_c_echo()
            if not status or "Status" not in status:
                raise SourceTimeout("no C-ECHO response in time")
            if int(status.Status) != 0x0000:
                raise SourceProtocolError(f"C-ECHO failed with status 0x{int(status.Status):04X}")
        finally:
            if assoc.is_established:
                assoc.release()
