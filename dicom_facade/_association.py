"""One association accepted by the facade: the acceptor's side of the DICOM Upper Layer (PS3.8 9.2) on the event loop.

States, as PS3.8 Table 9-10 names them (only those an acceptor passes through):

    Sta2 (connected, ARTIM running) --A-ASSOCIATE-RQ--> AC or RJ --> Sta6 (established)
    Sta2 --silence past artim_s, or any other PDU--> closed (abort)
    Sta6 --P-DATA-TF--> a DIMSE message: C-ECHO-RQ answered; C-FIND-RQ answered by a task
                        (pending responses, then one final); C-CANCEL-RQ stops that task (FE00)
    Sta6 --A-RELEASE-RQ--> A-RELEASE-RP, closed       Sta6 --A-ABORT--> closed
    Sta6 --no message for idle_timeout_s while nothing runs--> A-ABORT, closed

Nothing polls: the association waits on the loop's selector (``connectors.dimse_protocol``), so
an idle association costs no CPU and no thread. Memory is bounded: PDUs are read under the
transport's limits, a request message is at most ``MAX_REQUEST_BYTES``, and responses are written
only while the caller reads them (write-buffer flow control).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from io import BytesIO
from typing import Any, Protocol

from pydicom.dataset import Dataset
from pydicom.uid import UID
from pynetdicom.dsutils import decode

from connectors.dimse_protocol import (
    A_ABORT,
    A_ASSOCIATE_RQ,
    A_RELEASE_RP,
    A_RELEASE_RQ,
    COMMAND_FIELD,
    MESSAGE_ID,
    MESSAGE_ID_BEING_RESPONDED_TO,
    P_DATA_TF,
    DulProtocol,
    PeerGone,
)
from dicom_facade._comments import FAILED, UNDECODABLE
from dicom_facade._messages import (
    C_CANCEL_RQ,
    C_ECHO_RQ,
    C_FIND_RQ,
    CANCEL,
    IDENTIFIER_DOES_NOT_MATCH,
    PENDING,
    UNABLE_TO_PROCESS,
    echo_response,
    encode_identifier,
    find_response,
)
from dicom_facade._negotiation import (
    VERIFICATION,
    Accepted,
    MalformedRequest,
    Rejection,
    Request,
    accept,
    read_request,
)
from dicom_facade._pdv import MalformedMessage, Message, MessageAssembler

log = logging.getLogger("pacsfed.dicom_facade")

MAX_REQUEST_BYTES = 1024 * 1024
"""Largest DIMSE request (command and identifier) read from a caller; a C-FIND identifier is a few KiB."""
_WRITE_HIGH = 256 * 1024
"""Response bytes queued for a caller before the next pending response waits for it to read."""
_RELEASE_RP = bytes([A_RELEASE_RP, 0, 0, 0, 0, 4, 0, 0, 0, 0])


@dataclasses.dataclass(frozen=True, slots=True)
class FindAnswer:
    """What a C-FIND gets: one identifier per match, then a final status (with ErrorComment when not success)."""

    matches: list[Dataset]
    status: int
    comment: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class FindCall:
    """One C-FIND request as the answerer sees it: the identifier, the model asked, who asks."""

    identifier: Dataset
    model: str
    calling_ae: str
    client_address: str | None


Answerer = Callable[[FindCall], Awaitable[FindAnswer]]


class Gate(Protocol):
    """Who may associate: ``admit`` says why not, or None; ``leave`` when an admitted association ends."""

    def admit(self, request: Request) -> Rejection | None: ...

    def leave(self) -> None: ...


@dataclasses.dataclass(frozen=True, slots=True)
class Timeouts:
    """ARTIM (PS3.8 9.1.5) for a silent or releasing caller, and the idle limit of an established association."""

    artim_s: float
    idle_s: float


class AssociationProtocol(DulProtocol):
    """An accepted connection: the transport's bounded PDU reader, with write flow control and its own task."""

    def __init__(self, serve: Callable[[AssociationProtocol], Coroutine[Any, Any, None]]) -> None:
        super().__init__()
        self._serve = serve
        self._writable = asyncio.Event()
        self._writable.set()
        self.task: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        assert isinstance(transport, asyncio.WriteTransport)
        transport.set_write_buffer_limits(high=_WRITE_HIGH)
        self.task = asyncio.get_running_loop().create_task(self._serve(self), name="dicom-association")

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self._writable.set()

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    async def drain(self) -> None:
        """Wait while the caller has not read enough of what was sent (never past the connection's end)."""
        await self._writable.wait()

    async def finish(self, artim_s: float) -> None:
        """After A-ASSOCIATE-RJ or A-RELEASE-RP: let the caller close first, within ARTIM (Sta13, PS3.8 9.2).

        Closing at once could reach a caller before our last PDU is read (some see an abort then).
        """
        ends = time.monotonic() + artim_s
        with contextlib.suppress(TimeoutError, PeerGone):
            while (left := ends - time.monotonic()) > 0:
                await self.next_pdu(left, artim_s)  # anything said now is ignored (AA-6)
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    @property
    def peer(self) -> str | None:
        """The caller's address, for the audit trail."""
        name = self.transport.get_extra_info("peername") if self.transport is not None else None
        return str(name[0]) if isinstance(name, tuple) and name else None


async def serve_association(
    protocol: AssociationProtocol, gate: Gate, answer: Answerer, timeouts: Timeouts
) -> None:
    """Negotiate, then answer messages until the caller releases, aborts or goes silent."""
    try:
        pdu_type, data = await protocol.next_pdu(timeouts.artim_s, timeouts.artim_s)
    except (TimeoutError, PeerGone):
        protocol.close()  # ARTIM expired or the caller left before asking (PS3.8 9.2.3, AA-2)
        return
    if pdu_type != A_ASSOCIATE_RQ:
        protocol.abort()
        return
    try:
        request = read_request(data)
    except MalformedRequest:
        protocol.abort()
        return
    rejection = gate.admit(request)
    if rejection is not None:
        log.info("association from %r refused: %s", request.calling_ae, rejection.name.lower())
        protocol.send(rejection.encode())
        await protocol.finish(timeouts.artim_s)
        return
    try:
        accepted = accept(request)
        protocol.send(accepted.pdu)
        await _Session(protocol, request, accepted, answer, timeouts).run()
    finally:
        gate.leave()


class _Session:
    """An established association (Sta6): DIMSE messages in, responses out, one C-FIND at a time."""

    def __init__(
        self,
        protocol: AssociationProtocol,
        request: Request,
        accepted: Accepted,
        answer: Answerer,
        timeouts: Timeouts,
    ) -> None:
        self.protocol = protocol
        self.request = request
        self.contexts = accepted.contexts
        self.answer = answer
        self.timeouts = timeouts
        self.max_pdu = request.max_pdu
        self.find: asyncio.Task[None] | None = None
        self.find_message_id: int | None = None
        self.cancelled_by_caller = False

    async def run(self) -> None:
        protocol = self.protocol
        assembler = MessageAssembler()
        try:
            while True:
                try:
                    pdu_type, data = await protocol.next_pdu(self.timeouts.idle_s, self.timeouts.artim_s)
                except TimeoutError:
                    if self.find is not None and not self.find.done():
                        continue  # the caller waits for our answer: its silence is expected
                    protocol.abort()
                    return
                except PeerGone:
                    return
                if pdu_type == P_DATA_TF:
                    try:
                        messages = assembler.add_pdu(data)
                    except MalformedMessage:
                        protocol.abort()
                        return
                    if assembler.pending_bytes > MAX_REQUEST_BYTES:
                        protocol.abort()
                        return
                    for message in messages:
                        if not await self._dispatch(message):
                            return
                elif pdu_type == A_RELEASE_RQ:
                    await self._stop_find()
                    protocol.send(_RELEASE_RP)
                    await protocol.finish(self.timeouts.artim_s)
                    return
                elif pdu_type == A_ABORT:
                    protocol.close()
                    return
                else:
                    protocol.abort()
                    return
        finally:
            await self._stop_find()

    async def _dispatch(self, message: Message) -> bool:
        """Answer or start answering one request; False when the association must end."""
        context_id = message.context_id
        command = message.command.get(COMMAND_FIELD)
        if command == C_CANCEL_RQ:
            responded_to = message.command.get(MESSAGE_ID_BEING_RESPONDED_TO)
            if self.find is not None and not self.find.done() and responded_to == self.find_message_id:
                self.cancelled_by_caller = True
                self.find.cancel()
            return True  # a C-CANCEL for an answered request is ignored (PS3.7 9.3.2.3)
        context = self.contexts.get(context_id)
        message_id = message.command.get(MESSAGE_ID)
        if context is None or message_id is None:
            self.protocol.abort()
            return False
        abstract, syntax = context
        if command == C_ECHO_RQ and abstract == VERIFICATION:
            self.protocol.send(echo_response(message_id, abstract, context_id, self.max_pdu))
            return True
        if command == C_FIND_RQ and abstract != VERIFICATION and message.data is not None:
            if self.find is not None:
                await self.find  # no asynchronous operations were negotiated: one at a time
            self.cancelled_by_caller = False
            self.find_message_id = message_id
            self.find = asyncio.create_task(
                self._find(message_id, abstract, syntax, context_id, message.data), name="dicom-c-find"
            )
            return True
        self.protocol.abort()  # a request this context or this facade does not offer
        return False

    async def _find(self, message_id: int, model: str, syntax: UID, context_id: int, data: bytes) -> None:
        """Answer one C-FIND: a pending response per match, then the final one (FE00 once cancelled)."""
        protocol = self.protocol

        def final(status: int, comment: str | None = None) -> None:
            protocol.send(find_response(message_id, model, context_id, self.max_pdu, status, comment=comment))

        try:
            identifier = decode(BytesIO(data), syntax.is_implicit_VR, True, False)
        except Exception:
            final(IDENTIFIER_DOES_NOT_MATCH, UNDECODABLE)
            return
        try:
            answer = await self.answer(FindCall(identifier, model, self.request.calling_ae, protocol.peer))
            for match in answer.matches:
                await protocol.drain()
                if not protocol.open:
                    return
                encoded = encode_identifier(match, syntax.is_implicit_VR)
                protocol.send(
                    find_response(message_id, model, context_id, self.max_pdu, PENDING, identifier=encoded)
                )
            final(answer.status, answer.comment)
        except asyncio.CancelledError:
            if not self.cancelled_by_caller:
                raise
            final(CANCEL)
        except Exception as exc:  # an answer that could not be made: said, never the details
            log.warning("C-FIND from %r failed: %s", self.request.calling_ae, type(exc).__name__)
            final(UNABLE_TO_PROCESS, FAILED)

    async def _stop_find(self) -> None:
        task = self.find
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
