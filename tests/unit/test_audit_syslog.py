"""DICOM audit messages (PS3.15 A.5) and their delivery over syslog: TLS (RFC 5425), TCP and UDP."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import ssl
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from peers.pki import Pki, make_pki

from federation.audit.journal import AuditJournal
from federation.audit.records import AuditAction, AuditOutcome, AuditRecord
from federation.audit.syslog_sink import SyslogAuditSink, octet_counted, syslog_message
from federation.audit.trail import JournaledAuditTrail
from federation.errors import AuditError, ConfigError
from federation.settings_security import SyslogSettings


def query_record(**changes: object) -> AuditRecord:
    fields: dict[str, object] = {
        "action": AuditAction.PATIENT_QUERY,
        "outcome": AuditOutcome.SUCCESS,
        "actor": "user:alice",
        "client_address": "10.1.2.3",
        "patient_ids": ["PA-001^^^HOSP_A"],
        "sources": ["hosp-a", "hosp-b"],
        "exam_count": 3,
        "reason": "follow-up",
        "request_id": "req-1",
    }
    fields.update(changes)
    return AuditRecord.model_validate(fields)


def split(message: bytes) -> tuple[str, ET.Element]:
    header, bom, xml = message.partition(b" \xef\xbb\xbf")
    assert bom, "the MSG must start with a UTF-8 BOM"
    return header.decode("ascii"), ET.fromstring(xml)


def encode(record: AuditRecord) -> bytes:
    return syslog_message(record, app_name="pacsfed", audit_source_id="pacsfed-test", host="pacsfed-host")


def test_a_patient_query_is_a_dicom_query_event() -> None:
    record = query_record()
    header, root = split(encode(record))
    pri_version, timestamp, host, app, _procid, msgid, sd = header.split(" ")
    assert (pri_version, host, app, msgid, sd) == ("<85>1", "pacsfed-host", "pacsfed", "IHE+RFC-3881", "-")
    assert timestamp.endswith("Z")
    assert root.tag == "AuditMessage"
    assert [child.tag for child in root] == [
        "EventIdentification",
        "ActiveParticipant",
        "ActiveParticipant",
        "AuditSourceIdentification",
        "ParticipantObjectIdentification",
        "ParticipantObjectIdentification",
    ]
    event = root.find("EventIdentification")
    assert event is not None
    assert event.get("EventActionCode") == "E"
    assert event.get("EventOutcomeIndicator") == "0"
    event_id = event.find("EventID")
    assert event_id is not None
    assert (event_id.get("csd-code"), event_id.get("codeSystemName"), event_id.get("originalText")) == (
        "110112",
        "DCM",
        "Query",
    )
    requestor, service = root.findall("ActiveParticipant")
    assert requestor.get("UserID") == "user:alice"
    assert requestor.get("UserIsRequestor") == "true"
    assert requestor.get("NetworkAccessPointID") == "10.1.2.3"
    assert requestor.get("NetworkAccessPointTypeCode") == "2"
    assert service.get("UserIsRequestor") == "false"
    assert service.get("NetworkAccessPointID") == "pacsfed-host"
    source = root.find("AuditSourceIdentification")
    assert source is not None
    assert source.get("AuditSourceID") == "pacsfed-test"
    patient, query = root.findall("ParticipantObjectIdentification")
    assert patient.get("ParticipantObjectID") == "PA-001^^^HOSP_A"
    assert (patient.get("ParticipantObjectTypeCode"), patient.get("ParticipantObjectTypeCodeRole")) == (
        "1",
        "1",
    )
    id_type = patient.find("ParticipantObjectIDTypeCode")
    assert id_type is not None
    assert (id_type.get("csd-code"), id_type.get("originalText")) == ("2", "Patient Number")
    assert (query.get("ParticipantObjectTypeCode"), query.get("ParticipantObjectTypeCodeRole")) == ("2", "3")
    asked = query.findtext("ParticipantObjectQuery")
    assert asked is not None
    assert json.loads(base64.b64decode(asked))["patient_ids"] == ["PA-001^^^HOSP_A"]
    details = {
        d.get("type"): base64.b64decode(d.get("value", "")).decode()
        for d in query.findall("ParticipantObjectDetail")
    }
    assert details["exam_count"] == "3"
    assert details["sources"] == "hosp-a,hosp-b"
    assert details["reason"] == "follow-up"


@pytest.mark.parametrize(
    ("action", "outcome", "code", "verb", "pri"),
    [
        (AuditAction.SHARE_CREATE, AuditOutcome.SUCCESS, "110110", "C", "<85>"),
        (AuditAction.SHARE_REDEEM, AuditOutcome.DENIED, "110110", "R", "<84>"),
        (AuditAction.SHARE_REVOKE, AuditOutcome.FAILURE, "110110", "D", "<83>"),
        (AuditAction.AUTHENTICATION, AuditOutcome.DENIED, "110114", "E", "<84>"),
        (AuditAction.AUDIT_READ, AuditOutcome.SUCCESS, "110101", "R", "<85>"),
    ],
)
def test_event_codes_outcomes_and_severities(
    action: AuditAction, outcome: AuditOutcome, code: str, verb: str, pri: str
) -> None:
    header, root = split(encode(query_record(action=action, outcome=outcome, exam_count=None)))
    assert header.startswith(f"{pri}1 ")
    event = root.find("EventIdentification")
    assert event is not None
    assert event.find("EventID").get("csd-code") == code  # type: ignore[union-attr]
    assert event.get("EventActionCode") == verb
    assert event.get("EventOutcomeIndicator") == {"success": "0", "denied": "4", "failure": "8"}[outcome]
    if action is AuditAction.AUTHENTICATION:
        assert event.find("EventTypeCode").get("csd-code") == "110122"  # type: ignore[union-attr]
    assert len(root.findall("ParticipantObjectIdentification")) == 1  # the patient, no query object


def test_octet_counting_frames_the_byte_length() -> None:
    message = "<85>1 é".encode()
    assert octet_counted(message) == b"8 " + message


# --- delivery -----------------------------------------------------------------------------


class Receiver:
    """A tiny syslog collector: octet-counted frames over TCP or TLS."""

    def __init__(self) -> None:
        self.messages: list[bytes] = []
        self.arrived = asyncio.Event()
        self.peer_certs: list[dict[str, object] | None] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        ssl_object = writer.get_extra_info("ssl_object")
        self.peer_certs.append(ssl_object.getpeercert() if ssl_object else None)
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                length = await reader.readuntil(b" ")
                self.messages.append(await reader.readexactly(int(length[:-1])))
                self.arrived.set()
        writer.close()


@contextlib.asynccontextmanager
async def receiving(context: ssl.SSLContext | None, port: int = 0) -> AsyncIterator[tuple[Receiver, int]]:
    receiver = Receiver()
    server = await asyncio.start_server(receiver.handle, "127.0.0.1", port, ssl=context)
    try:
        yield receiver, server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


def server_context(pki: Pki) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki.ca_cert))
    context.load_cert_chain(str(pki.server_cert), str(pki.server_key))
    context.verify_mode = ssl.CERT_REQUIRED
    return context


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


async def wait_for(receiver: Receiver, count: int) -> None:
    async with asyncio.timeout(10):
        while len(receiver.messages) < count:
            receiver.arrived.clear()
            await receiver.arrived.wait()


async def test_tls_with_client_certificate(pki: Pki) -> None:
    async with receiving(server_context(pki)) as (receiver, port):
        sink = SyslogAuditSink(
            SyslogSettings(
                host="127.0.0.1",
                port=port,
                transport="tls",
                ca_file=pki.ca_cert,
                cert_file=pki.client_cert,
                key_file=pki.client_key,
            )
        )
        records = [query_record(exam_count=n) for n in range(3)]
        await sink.ship(records[:2])
        await sink.ship(records[2:])  # the same connection
        await wait_for(receiver, 3)
        await sink.aclose()
    assert receiver.messages == [sink.encode(r) for r in records]
    assert len(receiver.peer_certs) == 1
    assert receiver.peer_certs[0] is not None


async def test_tls_refuses_an_untrusted_repository(pki: Pki, tmp_path: Path) -> None:
    other = make_pki(tmp_path / "other")
    async with receiving(server_context(pki)) as (_receiver, port):
        sink = SyslogAuditSink(SyslogSettings(host="127.0.0.1", port=port, ca_file=other.ca_cert))
        with pytest.raises(AuditError) as failure:
            await sink.ship([query_record()])
        await sink.aclose()
    assert "PA-001" not in str(failure.value)


def test_missing_tls_files_are_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        SyslogAuditSink(SyslogSettings(host="127.0.0.1", ca_file=tmp_path / "missing.pem"))


async def test_plain_tcp_is_octet_counted_too() -> None:
    async with receiving(None) as (receiver, port):
        sink = SyslogAuditSink(SyslogSettings(host="127.0.0.1", port=port, transport="tcp"))
        record = query_record()
        await sink.ship([record])
        await wait_for(receiver, 1)
        await sink.aclose()
    assert receiver.messages == [sink.encode(record)]


async def test_udp_sends_one_datagram_per_message() -> None:
    loop = asyncio.get_running_loop()
    received: asyncio.Queue[bytes] = asyncio.Queue()

    class Collector(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
            received.put_nowait(data)

    transport, _ = await loop.create_datagram_endpoint(Collector, local_addr=("127.0.0.1", 0))
    try:
        port = transport.get_extra_info("sockname")[1]
        sink = SyslogAuditSink(SyslogSettings(host="127.0.0.1", port=port, transport="udp"))
        records = [query_record(exam_count=n) for n in range(2)]
        await sink.ship(records)
        got = [await asyncio.wait_for(received.get(), 5) for _ in records]
    finally:
        transport.close()
    assert got == [sink.encode(r) for r in records]


async def test_undelivered_messages_are_sent_from_the_journal_when_the_repository_returns(
    pki: Pki, tmp_path: Path
) -> None:
    async with receiving(None) as (_receiver, port):
        pass  # a port nobody listens on any more
    sink = SyslogAuditSink(SyslogSettings(host="127.0.0.1", port=port, transport="tcp"))
    audit = JournaledAuditTrail(
        AuditJournal(tmp_path / "journal"), [sink], ship_interval_s=0.05, backoff_max_s=0.2
    )
    await audit.start()
    try:
        records = [query_record(exam_count=n) for n in range(4)]
        for record in records:
            await audit.record(record)
        assert not await audit.flush(2.0)
        async with receiving(None, port) as (receiver, _):
            assert await audit.flush(5.0)
            await wait_for(receiver, 4)
    finally:
        await audit.aclose()
    assert receiver.messages == [sink.encode(r) for r in records]


def test_what_a_record_left_out_or_summarized_is_said_in_the_message() -> None:
    capped = query_record(patient_ids_omitted=12, sources_omitted=3, detail="DENIED_SOMETHING")
    _, root = split(encode(capped))
    description = root.findtext("EventIdentification/EventOutcomeDescription")
    assert description == "DENIED_SOMETHING; 12 more patient ids not listed; 3 more sources not listed"
    query = next(
        o for o in root.iter("ParticipantObjectIdentification") if o.get("ParticipantObjectTypeCode") == "2"
    )
    asked = json.loads(base64.b64decode(query.findtext("ParticipantObjectQuery") or ""))
    assert (asked["patient_ids_omitted"], asked["sources_omitted"]) == (12, 3)
    summary = query_record(action=AuditAction.AUTHENTICATION, outcome=AuditOutcome.DENIED, suppressed=80)
    _, root = split(encode(summary.model_copy(update={"detail": "summary: BAD_TOKEN"})))
    assert (
        root.findtext("EventIdentification/EventOutcomeDescription")
        == "summary: BAD_TOKEN; 80 events summarized"
    )
