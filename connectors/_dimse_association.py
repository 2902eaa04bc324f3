"""One association's life on the worker side: what happened on the wire, and how it is given up.

pynetdicom's association API blocks; a query the engine gives up at its deadline is ended from
another thread, by a C-CANCEL (PS3.7 9.3.2.3) and an A-ABORT that must not wait for the peer.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pynetdicom import AE, evt
from pynetdicom.association import Association
from pynetdicom.pdu_primitives import A_P_ABORT

from connectors._dimse_socket import guard_reads, tune_socket
from connectors.dimse_settings import DimseSourceSettings
from federation.models import Deadline

MESSAGE_ID = 1
"""The Message ID of our C-FIND; its C-CANCEL names it (PS3.7 9.3.2.3)."""
CANCEL_GRACE_S = 0.05
ABORT_LINGER_S = 0.25
"""How long an aborted association waits for the peer to close (the ARTIM timer in Sta13, PS3.8 9.2).

pynetdicom's ``abort()`` returns only once the state machine is back in Sta1: until the peer
closes the connection it reads (and drops) everything the peer still sends, bounded only by the
ARTIM timer, which is the ACSE timeout (the whole deadline). A peer streaming responses faster
than we read them never lets that drain end: the abort took the whole ACSE timeout."""


MIN_TIMEOUT_S = 0.05
"""The shortest timeout given to pynetdicom, however little of the deadline is left."""


def application_entity(settings: DimseSourceSettings, deadline: Deadline, contexts: Iterable[str]) -> AE:
    """An AE asking for ``contexts``, its timeouts the source's, cut to what is left of the deadline."""
    remaining = max(deadline.remaining(), MIN_TIMEOUT_S)
    ae = AE(ae_title=settings.calling_ae)
    ae.connection_timeout = min(settings.connect_timeout_s, remaining)
    ae.acse_timeout = min(settings.acse_timeout_s, remaining)
    ae.dimse_timeout = min(settings.dimse_timeout_s, remaining)
    ae.network_timeout = min(settings.network_timeout_s, remaining)
    for context in contexts:
        ae.add_requested_context(context)
    return ae


@dataclass
class AssociationWatch:
    """What happened on the wire while an association was being set up or used."""

    connected: bool = False
    peer_aborted: bool = False
    association: Association | None = None
    find_model: str | None = None
    """Set once a C-FIND request is out, so an abandoned query can be C-CANCELled."""
    cancelled: threading.Event = field(default_factory=threading.Event)
    _ending: threading.Lock = field(default_factory=threading.Lock)
    _ended: bool = False

    def claim_ending(self) -> bool:
        """True for the one caller that ends an abandoned association (the worker or ``abandon``).

        Both at once queued a C-CANCEL behind the other's A-ABORT: pynetdicom's reactor thread
        died on it (InvalidEventError, Evt9 in Sta13) and left the socket open.
        """
        with self._ending:
            first, self._ended = not self._ended, True
            return first

    def handlers(self) -> list[Any]:
        """pynetdicom event handlers that record the wire events and guard the socket."""

        def on_open(event: Any) -> None:
            self.connected = True
            self.association = event.assoc  # abandonable while its A-ASSOCIATE-RQ awaits an answer
            guard_reads(event)
            tune_socket(event)

        def on_abort(_event: Any) -> None:
            self.peer_aborted = True

        return [(evt.EVT_CONN_OPEN, on_open), (evt.EVT_ABORTED, on_abort)]


def identity_unconfirmed(settings: DimseSourceSettings, assoc: Association) -> bool:
    """A positive response was asked for a SAML or JWT identity and the A-ASSOCIATE-AC has none.

    Only those types carry a server response (PS3.7 D.3.3.7.2); for a username (with or
    without passcode) an acceptor may confirm nothing (pynetdicom never does), so it is not required.
    """
    identity = settings.user_identity
    if identity is None or not identity.positive_response or identity.type not in ("saml", "jwt"):
        return False
    return assoc.acceptor.user_identity is None


def abandon(watch: AssociationWatch, cancel: bool = True) -> None:
    """Stop a query given up at the deadline: C-CANCEL it (PS3.7 9.3.2.3) so the peer stops working, then abort.

    Called from the event loop's side (a thread of its own) and by the worker: only the first acts.
    """
    assoc = watch.association
    if assoc is None or not watch.claim_ending():
        return
    if cancel and watch.find_model is not None and assoc.is_established:
        with contextlib.suppress(Exception):
            assoc.send_c_cancel(MESSAGE_ID, query_model=watch.find_model)
            time.sleep(CANCEL_GRACE_S)  # let the C-CANCEL leave before the A-ABORT
    abort_quietly(assoc)
    if not assoc.is_established:
        # Still negotiating: pynetdicom's requestor waits on this queue for the whole ACSE timeout;
        # an abort primitive wakes it, so the worker thread is free now (conformance kit finding).
        with contextlib.suppress(Exception):
            assoc.dul.to_user_queue.put(A_P_ABORT())


def abandon_in_background(watch: AssociationWatch, cancel: bool = True) -> None:
    """``abandon`` in a thread of its own: a worker never waits for the peer to take an A-ABORT in."""
    if watch.association is None:
        return
    threading.Thread(target=abandon, args=(watch, cancel), name="pacsfed-dimse-abort", daemon=True).start()


def abort_quietly(assoc: Association) -> None:
    """Abort an association, ignoring errors: it is being abandoned anyway.

    Waits at most ``ABORT_LINGER_S`` for the peer to close the connection after our A-ABORT, then
    closes it (AA-2), however much the peer is still sending.
    """
    with contextlib.suppress(Exception):
        assoc.acse_timeout = ABORT_LINGER_S  # the ARTIM timer that the A-ABORT (AA-1) starts
    with contextlib.suppress(Exception):
        assoc.abort()
