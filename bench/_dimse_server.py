"""Simulated DIMSE PACS in their own process: every C-FIND answered after a fixed latency.

The DIMSE sibling of ``bench/_qido_server.py``, with the same two habits, for the same reasons:
it costs close to nothing per query (a bare asyncio protocol; the association request decoded
by pynetdicom's PDU codec once per association, everything per message written by hand from
bytes prepared at start), and it answers after LATENCY seconds to within ~0.1 ms (wake a
little early, spin to the due time) while busy-polling its event loop between queries, so a
query is read when it arrives, not when an idle CPU wakes up (``--sleep-when-idle`` restores
sleeping in epoll).

It accepts every association (any AE titles) for Study Root and Patient Root C-FIND and for
Verification, in Implicit VR Little Endian when proposed, else Explicit VR Little Endian. Each
C-FIND is answered with one pending response per study of the demo patient at AZ Sint-Jan,
then success, all in one write after the latency, whatever the identifier asks; a C-CANCEL
turns a query's answer into the Cancel status. C-ECHO is answered at once. Associations stay
open until the client releases or aborts them, so they can be reused.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import cast

from pydicom.dataset import Dataset
from pynetdicom.dsutils import encode
from pynetdicom.pdu import A_ASSOCIATE_RQ

from bench._dimse_wire import (
    ABORT,
    ASSOCIATE_AC,
    ASSOCIATE_RQ,
    C_CANCEL_RQ,
    C_ECHO_RQ,
    C_ECHO_RSP,
    C_FIND_RQ,
    C_FIND_RSP,
    CANCEL,
    COMMAND_FIELD,
    DATA_SET_TYPE,
    EXPLICIT_LE,
    IMPLICIT_LE,
    MESSAGE_ID,
    NO_DATA_SET,
    P_DATA_TF,
    PATIENT_ROOT_FIND,
    PENDING,
    RELEASE_RP,
    RELEASE_RQ,
    RESPONDED_TO,
    STUDY_ROOT_FIND,
    SUCCESS,
    VERIFICATION,
    PduReader,
    accepted_context,
    associate,
    message,
    pdu,
    pdvs,
    response,
    us_fields,
)
from bench._serving import serve_forever
from pacsfed.demo import demo_studies

_EARLY_S = 0.0015
_SUPPORTED = (STUDY_ROOT_FIND, PATIENT_ROOT_FIND, VERIFICATION)
_MAX_PDU = 1 << 16


def _identifiers() -> dict[str, list[bytes]]:
    """The demo patient's studies as C-FIND answers, encoded once in each transfer syntax."""
    studies: list[Dataset] = []
    for ds in demo_studies("demo-az-sint-jan"):
        if ds.PatientID == "DEMO-001":
            ds.QueryRetrieveLevel = "STUDY"
            ds.RetrieveAETitle = "SIMPACS"
            studies.append(ds)
    encoded: dict[str, list[bytes]] = {}
    for syntax, implicit in ((IMPLICIT_LE, True), (EXPLICIT_LE, False)):
        encoded[syntax] = [cast(bytes, encode(ds, implicit, True)) for ds in studies]
    return encoded


class _Association(asyncio.Protocol):
    """One association: negotiation, then C-FIND and C-ECHO answered until release or abort."""

    def __init__(self, answers: dict[str, list[bytes]], latency: float) -> None:
        self._answers, self._latency = answers, latency
        self._reader = PduReader()
        self._transport: asyncio.Transport | None = None
        self._contexts: dict[int, tuple[str, str]] = {}  # accepted: id -> (abstract, transfer syntax)
        self._command = b""
        self._waiting_for_data: tuple[int, int, str] | None = None  # (context, message id, SOP class)
        self._cancelled: set[int] = set()
        self._queue: asyncio.Queue[tuple[float, int, int, str]] = asyncio.Queue()
        self._writer: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        self._writer = asyncio.get_running_loop().create_task(self._answer_in_order())

    def connection_lost(self, exc: Exception | None) -> None:
        if self._writer is not None:
            self._writer.cancel()

    def data_received(self, data: bytes) -> None:
        assert self._transport is not None
        for kind, body in self._reader.feed(data):
            if kind == P_DATA_TF:
                self._p_data(body)
            elif kind == ASSOCIATE_RQ:
                self._transport.write(self._accept(body))
            elif kind == RELEASE_RQ:
                self._transport.write(pdu(RELEASE_RP, bytes(4)))
                self._transport.close()
            elif kind == ABORT:
                self._transport.close()

    def _accept(self, body: bytes) -> bytes:
        request = A_ASSOCIATE_RQ()
        request.decode(pdu(ASSOCIATE_RQ, body))
        items = []
        for context in request.presentation_context:
            syntaxes = [str(ts) for ts in context.transfer_syntax]
            chosen = next((ts for ts in (IMPLICIT_LE, EXPLICIT_LE) if ts in syntaxes), None)
            context_id = int(context.context_id or 0)
            if str(context.abstract_syntax) not in _SUPPORTED:
                items.append(accepted_context(context_id, 3, IMPLICIT_LE))
            elif chosen is None:
                items.append(accepted_context(context_id, 4, IMPLICIT_LE))
            else:
                self._contexts[context_id] = (str(context.abstract_syntax), chosen)
                items.append(accepted_context(context_id, 0, chosen))
        called, calling = request.called_ae_title, request.calling_ae_title
        return associate(ASSOCIATE_AC, called, calling, items, _MAX_PDU)

    def _p_data(self, body: bytes) -> None:
        loop = asyncio.get_running_loop()
        for context_id, control, payload in pdvs(body):
            if control & 1:  # a command fragment
                self._command += payload
                if not control & 2:
                    continue
                fields = us_fields(self._command)
                self._command = b""
                sop_class = self._contexts.get(context_id, (VERIFICATION, ""))[0]
                field = fields.get(COMMAND_FIELD)
                if field == C_ECHO_RQ:
                    self._queue.put_nowait((loop.time(), context_id, fields[MESSAGE_ID], sop_class))
                elif field == C_CANCEL_RQ:
                    self._cancelled.add(fields[RESPONDED_TO])
                elif field == C_FIND_RQ and fields.get(DATA_SET_TYPE) != NO_DATA_SET:
                    self._waiting_for_data = (context_id, fields[MESSAGE_ID], sop_class)
            elif control & 2 and self._waiting_for_data is not None:  # the identifier's last fragment
                context_id, message_id, sop_class = self._waiting_for_data
                self._waiting_for_data = None
                self._queue.put_nowait((loop.time() + self._latency, context_id, message_id, sop_class))

    async def _answer_in_order(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due, context_id, message_id, sop_class = await self._queue.get()
            # asyncio's timers fire up to ~1 ms late: wake a little early and spin to the due time.
            delay = due - loop.time() - _EARLY_S
            if delay > 0:
                await asyncio.sleep(delay)
            while loop.time() < due:
                pass
            assert self._transport is not None
            if self._transport.is_closing():
                return
            self._transport.write(self._answer(context_id, message_id, sop_class))

    def _answer(self, context_id: int, message_id: int, sop_class: str) -> bytes:
        if sop_class == VERIFICATION:
            return message(context_id, response(C_ECHO_RSP, sop_class, message_id, SUCCESS, False))
        if message_id in self._cancelled:
            self._cancelled.discard(message_id)
            return message(context_id, response(C_FIND_RSP, sop_class, message_id, CANCEL, False))
        pending = response(C_FIND_RSP, sop_class, message_id, PENDING, True)
        answers = [message(context_id, pending, ds) for ds in self._answers[self._contexts[context_id][1]]]
        final = message(context_id, response(C_FIND_RSP, sop_class, message_id, SUCCESS, False))
        return b"".join(answers) + final


async def serve(port: int, latency: float, sleep_when_idle: bool = False) -> None:
    """Serve on 127.0.0.1:PORT until cancelled."""
    answers = _identifiers()
    await serve_forever(lambda: _Association(answers, latency), port, sleep_when_idle)


def main() -> None:
    """Serve on 127.0.0.1:PORT, answering each C-FIND after LATENCY seconds."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--latency", type=float, default=0.1)
    parser.add_argument("--sleep-when-idle", action="store_true", help="sleep in epoll between queries")
    args = parser.parse_args()
    asyncio.run(serve(args.port, args.latency, args.sleep_when_idle))


if __name__ == "__main__":
    main()
