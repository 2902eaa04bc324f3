"""The DICOM facade's association state machine and encoding, against pynetdicom's SCU and a raw socket.

The answerer is a small fake here (the federation behind it is tested end to end in
tests/outside/test_dicom_facade_served.py): these tests hold the Upper Layer and DIMSE sides,
association acceptance and refusal, C-ECHO, C-FIND pending/final responses, C-CANCEL, P-DATA
fragmentation to the caller's maximum PDU, ARTIM, release and abort.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import struct
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from peers.pki import make_pki
from pydicom.dataset import Dataset
from pydicom.uid import ImplicitVRLittleEndian
from pynetdicom import AE, pdu
from pynetdicom.pdu_primitives import A_ASSOCIATE, MaximumLengthNotification
from pynetdicom.presentation import PresentationContext
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    PatientRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)

from dicom_facade import DicomFacade, FindAnswer, FindCall
from federation.errors import ConfigError
from federation.settings import DicomFacadeSettings
from federation.settings_security import TlsSettings

STUDY_ROOT = str(StudyRootQueryRetrieveInformationModelFind)


class FakeAnswerer:
    """Answers each C-FIND with ``count`` studies; ``hold`` makes it wait until cancelled."""

    def __init__(self) -> None:
        self.count = 3
        self.description = "CT HEAD"
        self.comments = ""
        self.hold = False
        self.started = asyncio.Event()
        self.calls: list[FindCall] = []
        self.status = 0x0000
        self.comment: str | None = None

    async def __call__(self, call: FindCall) -> FindAnswer:
        self.calls.append(call)
        self.started.set()
        if self.hold:
            await asyncio.Event().wait()
        matches = []
        for index in range(self.count):
            ds = Dataset()
            ds.QueryRetrieveLevel = "STUDY"
            ds.StudyInstanceUID = f"1.2.3.{index}"
            ds.StudyDescription = self.description
            ds.PatientComments = self.comments
            matches.append(ds)
        return FindAnswer(matches, self.status, self.comment)


@pytest.fixture
async def facade() -> AsyncIterator[tuple[DicomFacade, FakeAnswerer]]:
    settings = DicomFacadeSettings(
        port=1, ae_title="PACSFED", allowed_calling_aes=["WORKSTATION"], max_associations=2
    )
    settings = settings.model_copy(update={"port": 0})
    answerer = FakeAnswerer()
    server = DicomFacade(settings, answerer)
    await server.start()
    try:
        yield server, answerer
    finally:
        await server.stop()


def _ae(calling: str = "WORKSTATION") -> AE:
    ae = AE(ae_title=calling)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    ae.add_requested_context(Verification)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    ae.add_requested_context(PatientRootQueryRetrieveInformationModelFind)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
    return ae


def _query() -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    ds.PatientID = "P1"
    ds.StudyInstanceUID = ""
    return ds


async def test_echo_and_find_on_one_association(facade: tuple[DicomFacade, FakeAnswerer]) -> None:
    server, answerer = facade

    def scu() -> tuple[int, list[tuple[int, Dataset | None]], bool, set[str]]:
        assoc = _ae().associate("127.0.0.1", server.port, ae_title="PACSFED")
        assert assoc.is_established
        accepted = {str(cx.abstract_syntax) for cx in assoc.accepted_contexts}
        echo = assoc.send_c_echo().Status
        found = [(int(s.Status), i) for s, i in assoc.send_c_find(_query(), STUDY_ROOT)]
        assoc.release()
        return echo, found, assoc.is_released, accepted

    echo, found, released, accepted = await asyncio.to_thread(scu)
    assert echo == 0x0000
    assert [status for status, _ in found] == [0xFF00, 0xFF00, 0xFF00, 0x0000]
    assert [i.StudyInstanceUID for _, i in found[:3] if i is not None] == ["1.2.3.0", "1.2.3.1", "1.2.3.2"]
    assert released
    assert str(StudyRootQueryRetrieveInformationModelMove) not in accepted  # C-MOVE is not offered
    assert answerer.calls[0].calling_ae == "WORKSTATION"
    assert answerer.calls[0].identifier.PatientID == "P1"
    await _until(lambda: server.gate.open == 0)


async def test_a_final_warning_carries_its_error_comment(facade: tuple[DicomFacade, FakeAnswerer]) -> None:
    server, answerer = facade
    answerer.count, answerer.status, answerer.comment = 1, 0xB000, "partial: hospital-b UNREACHABLE"

    def scu() -> list[Dataset]:
        assoc = _ae().associate("127.0.0.1", server.port, ae_title="PACSFED")
        statuses = [s for s, _ in assoc.send_c_find(_query(), STUDY_ROOT)]
        assoc.release()
        return statuses

    statuses = await asyncio.to_thread(scu)
    assert [int(s.Status) for s in statuses] == [0xFF00, 0xB000]
    assert statuses[-1].ErrorComment == "partial: hospital-b UNREACHABLE"


@pytest.mark.parametrize(
    ("calling", "called", "reason"),
    [("INTRUDER", "PACSFED", 3), ("WORKSTATION", "SOMEONE", 7)],
)
async def test_unknown_callers_and_wrong_called_aes_are_rejected(
    facade: tuple[DicomFacade, FakeAnswerer], calling: str, called: str, reason: int
) -> None:
    server, answerer = facade

    def scu() -> bool:
        return bool(_ae(calling).associate("127.0.0.1", server.port, ae_title=called).is_established)

    # pynetdicom now and then reports a received A-ASSOCIATE-RJ as an abort (its threads race): the
    # raw caller below reads the rejection's reason itself.
    assert not await asyncio.to_thread(scu)
    rj = await _raw_associate(server.port, calling, called, max_pdu=16384)
    assert rj[0] == 0x03 and rj[7:10] == bytes([1, 1, reason])  # rejected-permanent, service-user
    assert answerer.calls == []
    await _until(lambda: server.gate.open == 0)


async def test_past_max_associations_the_next_is_rejected_transiently(
    facade: tuple[DicomFacade, FakeAnswerer],
) -> None:
    server, _ = facade
    held = [await _raw_associate(server.port, "WORKSTATION", "PACSFED", 16384, keep=True) for _ in range(2)]
    try:
        third = await _raw_associate(server.port, "WORKSTATION", "PACSFED", 16384)
        assert third[0] == 0x03 and third[7:10] == bytes([2, 3, 2])  # transient, local limit exceeded
    finally:
        for answer in held:
            writer = answer.writer  # type: ignore[attr-defined]
            writer.close()
    await _until(lambda: server.gate.open == 0)


async def test_responses_are_cut_to_the_callers_max_pdu(facade: tuple[DicomFacade, FakeAnswerer]) -> None:
    server, answerer = facade
    answerer.count, answerer.comments = 2, "X" * 300  # several fragments per identifier at 128 bytes
    answer = await _raw_associate(server.port, "WORKSTATION", "PACSFED", max_pdu=128, keep=True)
    reader, writer = answer.reader, answer.writer  # type: ignore[attr-defined]
    try:
        assert answer[0] == 0x02
        writer.write(_find_request(context_id=1, message_id=7, max_pdu=128))
        lengths, statuses, command = [], [], b""
        while not statuses or statuses[-1] == 0xFF00:
            pdu_type, body = await _read_pdu(reader)
            assert pdu_type == 0x04
            lengths.append(len(body))  # Maximum Length Received bounds the PDU's variable field (PS3.8 D.1)
            for header, fragment in _items(body):
                if header & 0x01:
                    command += fragment
                    if header & 0x02:
                        statuses.append(_status(command))
                        command = b""
        pending, final = statuses.count(0xFF00), statuses[-1]
        assert max(lengths) <= 128 and len(lengths) > 4
        assert (pending, final) == (2, 0x0000)
    finally:
        writer.close()


async def test_c_cancel_ends_a_find_with_the_cancel_status(facade: tuple[DicomFacade, FakeAnswerer]) -> None:
    server, answerer = facade
    answerer.hold = True
    answer = await _raw_associate(server.port, "WORKSTATION", "PACSFED", max_pdu=16384, keep=True)
    reader, writer = answer.reader, answer.writer  # type: ignore[attr-defined]
    try:
        writer.write(_find_request(context_id=1, message_id=9, max_pdu=16384))
        await asyncio.wait_for(answerer.started.wait(), 10)
        writer.write(_cancel_request(context_id=1, message_id=9))
        pdu_type, body = await asyncio.wait_for(_read_pdu(reader), 10)
        assert pdu_type == 0x04
        assert [_status(f) for h, f in _items(body) if h == 0x03] == [0xFE00]
    finally:
        writer.close()


async def test_a_silent_caller_is_dropped_after_artim() -> None:
    settings = DicomFacadeSettings(port=1, allowed_calling_aes=["WORKSTATION"], artim_s=0.2)
    server = DicomFacade(settings.model_copy(update={"port": 0}), FakeAnswerer())
    await server.start()
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        assert await asyncio.wait_for(reader.read(), 10) == b""  # closed by the facade, nothing sent
    finally:
        writer.close()
        await server.stop()


async def test_an_abort_ends_the_association(facade: tuple[DicomFacade, FakeAnswerer]) -> None:
    server, _ = facade
    answer = await _raw_associate(server.port, "WORKSTATION", "PACSFED", 16384, keep=True)
    reader, writer = answer.reader, answer.writer  # type: ignore[attr-defined]
    assert server.gate.open == 1
    writer.write(bytes([0x07, 0, 0, 0, 0, 4, 0, 0, 0, 0]))
    assert await asyncio.wait_for(reader.read(), 10) == b""
    writer.close()
    await _until(lambda: server.gate.open == 0)


# -- a raw caller: PDUs as bytes, to see what a DICOM library would hide ------------------------------


class _Answer(bytes):
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter


async def _raw_associate(port: int, calling: str, called: str, max_pdu: int, keep: bool = False) -> _Answer:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    primitive = A_ASSOCIATE()
    primitive.application_context_name = "1.2.840.10008.3.1.1.1"
    primitive.calling_ae_title = calling
    primitive.called_ae_title = called
    context = PresentationContext()
    context.context_id = 1
    context.abstract_syntax = STUDY_ROOT
    context.add_transfer_syntax(ImplicitVRLittleEndian)  # the raw requests below are written in it
    primitive.presentation_context_definition_list = [context]
    length = MaximumLengthNotification()
    length.maximum_length_received = max_pdu
    primitive.user_information = [length]
    request = pdu.A_ASSOCIATE_RQ()
    request.from_primitive(primitive)
    writer.write(request.encode())
    pdu_type, body = await asyncio.wait_for(_read_pdu(reader), 10)
    answer = _Answer(bytes([pdu_type, 0]) + struct.pack(">L", len(body)) + body)
    answer.reader, answer.writer = reader, writer
    if not keep:
        writer.close()
    return answer


async def _read_pdu(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    header = await reader.readexactly(6)
    pdu_type, length = header[0], struct.unpack(">L", header[2:])[0]
    return pdu_type, await reader.readexactly(length)


def _command(elements: list[tuple[int, bytes]]) -> bytes:
    body = b"".join(struct.pack("<HHL", 0, element, len(value)) + value for element, value in elements)
    return struct.pack("<HHLL", 0, 0, 4, len(body)) + body


def _us(value: int) -> bytes:
    return struct.pack("<H", value)


def _p_data(context_id: int, header: int, fragment: bytes) -> bytes:
    item = struct.pack(">LB", len(fragment) + 2, context_id) + bytes([header]) + fragment
    return bytes([0x04, 0]) + struct.pack(">L", len(item)) + item


def _find_request(context_id: int, message_id: int, max_pdu: int) -> bytes:
    uid = STUDY_ROOT.encode() + (b"\0" if len(STUDY_ROOT) % 2 else b"")
    command = _command(
        [
            (0x0002, uid),
            (0x0100, _us(0x0020)),
            (0x0110, _us(message_id)),
            (0x0700, _us(0)),
            (0x0800, _us(0x0102)),
        ]
    )
    identifier = b"\x08\x00\x52\x00" + struct.pack("<L", 6) + b"STUDY "  # (0008,0052) QueryRetrieveLevel
    return _p_data(context_id, 0x03, command) + _p_data(context_id, 0x02, identifier)


def _cancel_request(context_id: int, message_id: int) -> bytes:
    command = _command([(0x0100, _us(0x0FFF)), (0x0120, _us(message_id)), (0x0800, _us(0x0101))])
    return _p_data(context_id, 0x03, command)


def _items(body: bytes) -> list[tuple[int, bytes]]:
    """A P-DATA-TF body's PDV items: (message control header, fragment)."""
    items, offset = [], 0
    while offset < len(body):
        length = struct.unpack(">L", body[offset : offset + 4])[0]
        items.append((body[offset + 5], body[offset + 6 : offset + 4 + length]))
        offset += 4 + length
    return items


def _status(command: bytes) -> int:
    """The Status (0000,0900) of a whole Implicit VR Little Endian command set."""
    position = command.find(b"\x00\x00\x00\x09\x02\x00\x00\x00")
    assert position >= 0
    return int(struct.unpack("<H", command[position + 8 : position + 10])[0])


async def _until(condition: Callable[[], bool], tries: int = 1000) -> None:
    """Wait for the facade to settle (an association's end is seen a moment after the socket's)."""
    for _ in range(tries):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the condition never held")


async def test_dicom_tls_admits_a_caller_with_a_trusted_certificate_only(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    settings = DicomFacadeSettings(
        port=1,
        allowed_calling_aes=["WORKSTATION"],
        tls=TlsSettings(cert_file=pki.server_cert, key_file=pki.server_key, ca_file=pki.ca_cert),
    )
    server = DicomFacade(settings.model_copy(update={"port": 0}), FakeAnswerer())
    await server.start()

    def echo(cert: Path | None, key: Path | None) -> int | None:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(pki.ca_cert))
        if cert is not None:
            context.load_cert_chain(str(cert), str(key))
        assoc = _ae().associate("127.0.0.1", server.port, ae_title="PACSFED", tls_args=(context, "localhost"))
        if not assoc.is_established:
            return None
        status = int(assoc.send_c_echo().Status)
        assoc.release()
        return status

    try:
        assert await asyncio.to_thread(echo, pki.client_cert, pki.client_key) == 0x0000
        assert await asyncio.to_thread(echo, pki.untrusted_client_cert, pki.untrusted_client_key) is None
    finally:
        await server.stop()


async def test_a_taken_port_is_a_configuration_error() -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        facade = DicomFacade(
            DicomFacadeSettings(port=port, allowed_calling_aes=["WORKSTATION"]), FakeAnswerer()
        )
        with pytest.raises(ConfigError, match=f"dicom_facade: cannot listen on 127.0.0.1:{port}"):
            await facade.start()


async def test_an_oversized_request_aborts_the_association(facade: tuple[DicomFacade, FakeAnswerer]) -> None:
    server, answerer = facade
    answer = await _raw_associate(server.port, "WORKSTATION", "PACSFED", 16384, keep=True)
    reader, writer = answer.reader, answer.writer  # type: ignore[attr-defined]
    try:
        request = _find_request(context_id=1, message_id=3, max_pdu=16384)
        command = request[: len(request) - len(_p_data(1, 0x02, b"\0" * 14))]  # the command set only
        writer.write(command)
        chunk = _p_data(1, 0x00, b"\0" * 16000)  # data set fragments, never the last one
        with contextlib.suppress(ConnectionError):
            for _ in range(80):  # 1.28 MB: past MAX_REQUEST_BYTES
                writer.write(chunk)
                await writer.drain()
        pdu_type, _ = await asyncio.wait_for(_read_pdu(reader), 10)
        assert pdu_type == 0x07  # A-ABORT
        assert answerer.calls == []
    finally:
        writer.close()
    await _until(lambda: server.gate.open == 0)


async def test_an_association_idle_past_its_limit_is_aborted() -> None:
    settings = DicomFacadeSettings(port=1, allowed_calling_aes=["WORKSTATION"], idle_timeout_s=0.2)
    server = DicomFacade(settings.model_copy(update={"port": 0}), FakeAnswerer())
    await server.start()
    try:
        answer = await _raw_associate(server.port, "WORKSTATION", "PACSFED", 16384, keep=True)
        reader, writer = answer.reader, answer.writer  # type: ignore[attr-defined]
        pdu_type, _ = await asyncio.wait_for(_read_pdu(reader), 10)
        assert pdu_type == 0x07  # A-ABORT after the idle limit
        writer.close()
        await _until(lambda: server.gate.open == 0)
    finally:
        await server.stop()
