"""One DICOM association on the event loop: negotiation (PS3.8 7.1), DIMSE messages, release and abort.

The PDUs and DIMSE messages are pynetdicom's own (``pynetdicom.pdu``, ``pynetdicom.dimse_messages``),
the data sets pydicom's (``pynetdicom.dsutils``); only the waiting is ours, on the event loop
(``_dimse_wire``). Every wait is bounded by a timeout that the caller has cut to its deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from io import BytesIO
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION, pdu
from pynetdicom.dimse_messages import DIMSEMessage
from pynetdicom.dsutils import decode
from pynetdicom.pdu_primitives import (
    A_ASSOCIATE,
    ImplementationClassUIDNotification,
    ImplementationVersionNameNotification,
    MaximumLengthNotification,
    UserIdentityNegotiation,
)
from pynetdicom.presentation import PresentationContext

from connectors import _dimse_wire as wire
from connectors._dimse_message import Assembler, Received
from connectors.dimse_settings import DimseSourceSettings
from federation.errors import SourceProtocolError, SourceTimeout, SourceUnreachable
from federation.models import Deadline
from federation.tls import handshake_failure

MIN_TIMEOUT_S = 0.05
"""The shortest timeout given to a wait, however little of the deadline is left."""
OUR_MAX_PDU = 16384
"""The largest PDU we accept (PS3.8 D.1), announced in our A-ASSOCIATE-RQ."""
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
"""Largest DIMSE message (command and data set) read from a peer; a C-FIND identifier is a few KiB."""
ABORT_LINGER_S = 0.25
"""How long an abandoned association's last PDUs (C-CANCEL, A-ABORT) may take to leave."""
_APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"
_TRANSFER_SYNTAXES = (ImplicitVRLittleEndian, ExplicitVRLittleEndian)

TlsArgs = tuple[ssl.SSLContext, str]


class AssociationEnded(SourceProtocolError):
    """The peer aborted, released or dropped the association while we were using it."""

    def __init__(self, message: str, *, before_any_response: bool = True) -> None:
        super().__init__(message)
        self.before_any_response = before_any_response


class DimseLink:
    """An established association: its accepted contexts and the peer's limits."""

    def __init__(self, protocol: wire.DulProtocol, settings: DimseSourceSettings) -> None:
        self.protocol = protocol
        self.settings = settings
        self.contexts: dict[str, tuple[int, UID]] = {}
        """Accepted abstract syntax -> (presentation context ID, transfer syntax)."""
        self.peer_max_pdu = 0
        self.identity_response: bytes | None = None

    @classmethod
    async def open(
        cls,
        settings: DimseSourceSettings,
        abstract_syntaxes: tuple[str, ...],
        deadline: Deadline,
        tls: TlsArgs | None,
        identity: UserIdentityNegotiation | None,
    ) -> DimseLink:
        """Connect and negotiate; SourceUnreachable / SourceTimeout / SourceProtocolError on failure."""
        loop = asyncio.get_running_loop()
        connect_s = cut(settings.connect_timeout_s, deadline)
        started = time.monotonic()
        try:
            async with asyncio.timeout(connect_s):
                _, protocol = await loop.create_connection(
                    wire.DulProtocol,
                    settings.host,
                    settings.port,
                    ssl=tls[0] if tls else None,
                    server_hostname=tls[1] if tls else None,
                )
        except TimeoutError as exc:
            raise SourceTimeout(f"no TCP connection within {time.monotonic() - started:.1f} s") from exc
        except ssl.SSLError as exc:
            raise SourceUnreachable(await _tls_reason(settings, tls, deadline, exc)) from exc
        except OSError as exc:
            raise SourceUnreachable("connection refused or host unreachable") from exc
        link = cls(protocol, settings)
        try:
            await link._negotiate(abstract_syntaxes, deadline, tls, identity)
        except BaseException:
            protocol.abort()
            raise
        return link

    async def _negotiate(
        self,
        abstract_syntaxes: tuple[str, ...],
        deadline: Deadline,
        tls: TlsArgs | None,
        identity: UserIdentityNegotiation | None,
    ) -> None:
        s = self.settings
        requested = _contexts(abstract_syntaxes)
        self.protocol.send(_associate_rq(s, requested, identity))
        started = time.monotonic()
        try:
            pdu_type, data = await self.protocol.next_pdu(
                cut(s.acse_timeout_s, deadline), s.network_timeout_s
            )
        except TimeoutError as exc:
            raise SourceTimeout(f"no association response within {time.monotonic() - started:.1f} s") from exc
        except wire.PeerGone as exc:
            if exc.fault:
                raise SourceProtocolError(str(exc)) from exc
            if tls is not None:
                raise SourceUnreachable(await _tls_reason(s, tls, deadline, exc)) from exc
            raise SourceUnreachable(
                f"association aborted by the peer (is {s.calling_ae} registered there?)"
            ) from exc
        if pdu_type == wire.A_ASSOCIATE_RJ:
            raise SourceUnreachable(_rejection(s, data))
        if pdu_type == wire.A_ABORT:
            raise SourceUnreachable(f"association aborted by the peer (is {s.calling_ae} registered there?)")
        if pdu_type != wire.A_ASSOCIATE_AC:
            raise SourceProtocolError(f"PDU type 0x{pdu_type:02X} instead of an A-ASSOCIATE answer")
        try:
            accept = pdu.A_ASSOCIATE_AC()
            accept.decode(data)
            primitive = accept.to_primitive()
            by_id = {cx.context_id: cx.abstract_syntax for cx in requested}
            for cx in primitive.presentation_context_definition_results_list:
                if cx.result == 0x00 and cx.context_id in by_id and cx.transfer_syntax:
                    self.contexts.setdefault(
                        str(by_id[cx.context_id]), (int(cx.context_id or 0), cx.transfer_syntax[0])
                    )
            self.peer_max_pdu = int(primitive.maximum_length_received or 0)
            for item in primitive.user_information:
                if isinstance(item, UserIdentityNegotiation):
                    self.identity_response = item.server_response
        except Exception as exc:  # garbage in an A-ASSOCIATE-AC: pynetdicom's decoders raise anything
            raise SourceProtocolError("the peer's A-ASSOCIATE-AC could not be decoded") from exc

    # -- DIMSE ---------------------------------------------------------------------------
    def send(self, message: DIMSEMessage, context_id: int) -> None:
        """Encode a DIMSE message into P-DATA-TF PDUs of the peer's maximum length, and send them."""
        self.protocol.send(encode_message(message, context_id, self.peer_max_pdu))

    async def receive(self, within_s: float) -> Received:
        """The next whole DIMSE message; TimeoutError if none within ``within_s``.

        AssociationEnded when the peer aborts, releases or drops the association,
        SourceProtocolError when it breaks the protocol (the connection is then closed).
        """
        message = Assembler()
        size = 0
        ends = time.monotonic() + within_s
        while True:
            try:
                pdu_type, data = await self.protocol.next_pdu(
                    ends - time.monotonic(), self.settings.network_timeout_s
                )
            except wire.PeerGone as exc:
                if exc.fault:
                    raise SourceProtocolError(str(exc)) from exc
                raise AssociationEnded("connection closed by the peer during the association") from exc
            if pdu_type == wire.P_DATA_TF:
                size += len(data)
                if size > MAX_MESSAGE_BYTES:
                    self.protocol.abort()
                    raise SourceProtocolError(f"a DIMSE message longer than {MAX_MESSAGE_BYTES} bytes")
                try:
                    whole = message.add_pdu(data)
                    if whole is not None:
                        return whole
                except SourceProtocolError:
                    self.protocol.abort()
                    raise
                except Exception as exc:  # garbage in a P-DATA-TF
                    self.protocol.abort()
                    raise SourceProtocolError("a P-DATA-TF PDU could not be decoded") from exc
            elif pdu_type == wire.A_ABORT:
                self.protocol.close()
                raise AssociationEnded("association aborted by the peer")
            elif pdu_type == wire.A_RELEASE_RQ:
                self.protocol.send(bytes([wire.A_RELEASE_RP, 0, 0, 0, 0, 4, 0, 0, 0, 0]))
                self.protocol.close()
                raise AssociationEnded("association released by the peer")
            else:
                self.protocol.abort()
                raise SourceProtocolError(f"unexpected PDU type 0x{pdu_type:02X} during the association")

    def decode_dataset(self, data: bytes, abstract_syntax: str) -> Dataset:
        """A data set received under ``abstract_syntax``'s transfer syntax."""
        syntax = self.contexts[abstract_syntax][1]
        return decode(BytesIO(data), syntax.is_implicit_VR, syntax.is_little_endian, syntax.is_deflated)

    # -- ending --------------------------------------------------------------------------
    @property
    def usable(self) -> bool:
        """Still established, with nothing unread."""
        return self.protocol.usable

    def abort(self, linger_s: float = 0.0) -> None:
        """A-ABORT (PS3.8 7.3.1) without waiting for the peer beyond ``linger_s``."""
        self.protocol.abort(linger_s)

    async def release(self, within_s: float) -> None:
        """A-RELEASE (PS3.8 7.2): wait up to ``within_s`` for the peer's A-RELEASE-RP, then close; abort if it fails."""
        if not self.usable:
            self.protocol.close()
            return
        self.protocol.release_request()
        try:
            ends = time.monotonic() + within_s
            while True:
                pdu_type, _ = await self.protocol.next_pdu(
                    ends - time.monotonic(), self.settings.network_timeout_s
                )
                if pdu_type in (wire.A_RELEASE_RP, wire.A_ABORT):
                    break
        except (TimeoutError, wire.PeerGone):
            self.protocol.abort()
        finally:
            self.protocol.close()


def encode_message(message: DIMSEMessage, context_id: int, peer_max_pdu: int) -> bytes:
    """A DIMSE message as P-DATA-TF PDUs (PS3.8 9.3.5) no longer than the peer accepts (0: any length)."""
    max_pdu = peer_max_pdu if peer_max_pdu == 0 or peer_max_pdu > 6 else 0
    out = bytearray()
    for primitive in message.encode_msg(context_id, max_pdu):
        item = pdu.P_DATA_TF()
        item.from_primitive(primitive)
        out += item.encode()
    return bytes(out)


def cut(timeout_s: float, deadline: Deadline) -> float:
    """A configured timeout, cut to what is left of the deadline (at least MIN_TIMEOUT_S)."""
    return min(timeout_s, max(deadline.remaining(), MIN_TIMEOUT_S))


def _contexts(abstract_syntaxes: tuple[str, ...]) -> list[PresentationContext]:
    contexts = []
    for index, abstract in enumerate(abstract_syntaxes):
        context = PresentationContext()
        context.context_id = 2 * index + 1
        context.abstract_syntax = UID(abstract)
        for syntax in _TRANSFER_SYNTAXES:
            context.add_transfer_syntax(syntax)
        contexts.append(context)
    return contexts


def _associate_rq(
    settings: DimseSourceSettings,
    contexts: list[PresentationContext],
    identity: UserIdentityNegotiation | None,
) -> bytes:
    """Our A-ASSOCIATE-RQ PDU (PS3.8 9.3.2): contexts, max PDU, implementation, User Identity."""
    primitive = A_ASSOCIATE()
    primitive.application_context_name = UID(_APPLICATION_CONTEXT)
    primitive.calling_ae_title = settings.calling_ae
    primitive.called_ae_title = settings.called_ae
    primitive.presentation_context_definition_list = contexts
    max_length = MaximumLengthNotification()
    max_length.maximum_length_received = OUR_MAX_PDU
    implementation = ImplementationClassUIDNotification()
    implementation.implementation_class_uid = PYNETDICOM_IMPLEMENTATION_UID
    version = ImplementationVersionNameNotification()
    version.implementation_version_name = PYNETDICOM_IMPLEMENTATION_VERSION
    user_information: list[Any] = [max_length, implementation, version]
    if identity is not None:
        user_information.append(identity)
    primitive.user_information = user_information
    request = pdu.A_ASSOCIATE_RQ()
    request.from_primitive(primitive)
    return request.encode()


async def _tls_reason(
    settings: DimseSourceSettings, tls: TlsArgs | None, deadline: Deadline, exc: BaseException
) -> str:
    """``TLS handshake failed: …``, said the way ``federation.tls.handshake_failure`` says it.

    Under TLS 1.3 a server refuses our certificate after our side of the handshake is done, so
    its refusal ends the connection at our first read; a second handshake, off the loop, names it.
    """
    if tls is not None and not deadline.expired:
        timeout = cut(settings.connect_timeout_s, deadline)
        with contextlib.suppress(Exception):
            reason = await asyncio.to_thread(handshake_failure, settings.host, settings.port, *tls, timeout)
            if reason is not None:
                return f"TLS handshake failed: {reason}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS handshake failed: {(exc.reason or 'the peer ended the TLS handshake').lower().replace('_', ' ')}"
    return f"association aborted by the peer (is {settings.calling_ae} registered there?)"


def _rejection(s: DimseSourceSettings, data: bytes) -> str:
    """What an A-ASSOCIATE-RJ says (PS3.8 9.3.4: result, source and reason at bytes 7 to 9)."""
    source, reason = (data[8], data[9]) if len(data) >= 10 else (0, 0)
    if (source, reason) == (1, 7):
        return (
            f"association rejected: the peer is not {s.called_ae} (called AE title not recognised;"
            " check called_ae and the port)"
        )
    if (source, reason) == (1, 3):
        return f"association rejected: {s.called_ae} does not know the calling AE title {s.calling_ae}"
    return f"association rejected by {s.called_ae} (is {s.calling_ae} known there?)"
