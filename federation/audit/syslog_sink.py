"""DICOM audit messages (PS3.15 A.5) sent over syslog (RFC 5424) to an audit repository.

Each journal record becomes one ``AuditMessage`` (the DICOM audit schema, PS3.15 A.5.1):

- patient query → EventID 110112 *Query* (A.5.3.10), action ``E``;
- share-code creation, use and revocation, identity links, cache purges → 110110 *Patient
  Record* (A.5.3.11), action ``C`` / ``R`` / ``D`` / ``U``;
- authentication → 110114 *User Authentication* (A.5.3.12) with EventTypeCode 110122 *Login*;
- reading the audit trail → 110101 *Audit Log Used*.

EventOutcomeIndicator is 0 (success), 4 (denied: minor failure) or 8 (failure: serious). The
message travels as the MSG of an RFC 5424 syslog message (facility 10 authpriv, MSGID
``IHE+RFC-3881``, severity from the outcome) over TLS (RFC 5425) or TCP, both octet-counted
(``LEN SP MSG``), or as one UDP datagram (RFC 5426). Delivery is at least once: what was not
sent is sent again from the journal.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import json
import os
import socket
import ssl
import xml.etree.ElementTree as ET
from collections.abc import Sequence

from federation.audit.records import AuditAction, AuditOutcome, AuditRecord
from federation.audit.sink import AuditSink
from federation.errors import AuditError, ConfigError
from federation.settings_security import SyslogSettings

FACILITY_AUTHPRIV = 10
MSGID = "IHE+RFC-3881"
STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
"""Study Root Query/Retrieve Information Model – FIND: the SOP Class a patient query stands for."""

_OUTCOME_INDICATOR = {AuditOutcome.SUCCESS: "0", AuditOutcome.DENIED: "4", AuditOutcome.FAILURE: "8"}
_SEVERITY = {AuditOutcome.SUCCESS: 5, AuditOutcome.DENIED: 4, AuditOutcome.FAILURE: 3}
"""notice, warning, error."""

_EVENTS: dict[AuditAction, tuple[str, str, str]] = {
    AuditAction.PATIENT_QUERY: ("110112", "Query", "E"),
    AuditAction.REPORT_READ: ("110103", "DICOM Instances Accessed", "R"),
    AuditAction.IMAGE_READ: ("110103", "DICOM Instances Accessed", "R"),
    AuditAction.SHARE_CREATE: ("110110", "Patient Record", "C"),
    AuditAction.SHARE_REDEEM: ("110110", "Patient Record", "R"),
    AuditAction.SHARE_REVOKE: ("110110", "Patient Record", "D"),
    AuditAction.IDENTITY_CHANGE: ("110110", "Patient Record", "U"),
    AuditAction.CACHE_PURGE: ("110110", "Patient Record", "D"),
    AuditAction.AUTHENTICATION: ("110114", "User Authentication", "E"),
    AuditAction.AUDIT_READ: ("110101", "Audit Log Used", "R"),
}


def _code(parent: ET.Element, tag: str, code: str, system: str, text: str) -> ET.Element:
    return ET.SubElement(parent, tag, {"csd-code": code, "codeSystemName": system, "originalText": text})


def _b64(value: str) -> str:
    return base64.b64encode(value.encode()).decode("ascii")


def audit_message(record: AuditRecord, *, audit_source_id: str, host: str) -> ET.Element:
    """The DICOM ``AuditMessage`` (PS3.15 A.5.1) for ``record``."""
    event_id, event_name, action = _EVENTS[record.action]
    message = ET.Element("AuditMessage")
    event = ET.SubElement(
        message,
        "EventIdentification",
        {
            "EventActionCode": action,
            "EventDateTime": record.at.astimezone(dt.UTC).isoformat(timespec="milliseconds"),
            "EventOutcomeIndicator": _OUTCOME_INDICATOR[record.outcome],
        },
    )
    _code(event, "EventID", event_id, "DCM", event_name)
    if record.action is AuditAction.AUTHENTICATION:
        _code(event, "EventTypeCode", "110122", "DCM", "Login")
    description = _description(record)
    if description:
        ET.SubElement(event, "EventOutcomeDescription").text = description
    if record.emergency:
        _code(event, "PurposeOfUse", "ETREAT", "v3-ActReason", "Emergency Treatment")

    requestor = ET.SubElement(
        message,
        "ActiveParticipant",
        {"UserID": record.actor, "UserIsRequestor": "true"},
    )
    if record.client_address:
        requestor.set("NetworkAccessPointID", record.client_address)
        requestor.set("NetworkAccessPointTypeCode", "2")  # IP address
    _code(requestor, "RoleIDCode", "110153", "DCM", "Source Role ID")
    service = ET.SubElement(
        message,
        "ActiveParticipant",
        {
            "UserID": audit_source_id,
            "AlternativeUserID": str(os.getpid()),
            "UserIsRequestor": "false",
            "NetworkAccessPointID": host,
            "NetworkAccessPointTypeCode": "1",  # machine name
        },
    )
    _code(service, "RoleIDCode", "110152", "DCM", "Destination Role ID")

    source = ET.SubElement(message, "AuditSourceIdentification", {"AuditSourceID": audit_source_id})
    _code(source, "AuditSourceTypeCode", "4", "DCM", "Application Server")

    for patient_id in record.patient_ids:
        patient = ET.SubElement(
            message,
            "ParticipantObjectIdentification",
            {
                "ParticipantObjectID": patient_id,
                "ParticipantObjectTypeCode": "1",
                "ParticipantObjectTypeCodeRole": "1",
            },
        )
        _code(patient, "ParticipantObjectIDTypeCode", "2", "RFC-3881", "Patient Number")
    if record.action is AuditAction.PATIENT_QUERY:
        _query_object(message, record)
    return message


def _description(record: AuditRecord) -> str:
    """The detail, plus what the record's lists left out and how many events it summarizes."""
    notes = [record.detail] if record.detail else []
    if record.patient_ids_omitted:
        notes.append(f"{record.patient_ids_omitted} more patient ids not listed")
    if record.sources_omitted:
        notes.append(f"{record.sources_omitted} more sources not listed")
    if record.suppressed:
        notes.append(f"{record.suppressed} events summarized")
    return "; ".join(notes)


def _query_object(message: ET.Element, record: AuditRecord) -> None:
    """The query itself (type 2 system object, role 3 report, A.5.3.10)."""
    query = ET.SubElement(
        message,
        "ParticipantObjectIdentification",
        {
            "ParticipantObjectID": STUDY_ROOT_FIND,
            "ParticipantObjectTypeCode": "2",
            "ParticipantObjectTypeCodeRole": "3",
        },
    )
    _code(query, "ParticipantObjectIDTypeCode", "110181", "DCM", "SOP Class UID")
    asked = {
        "patient_ids": record.patient_ids,
        "patient_ids_omitted": record.patient_ids_omitted,
        "sources": record.sources,
        "sources_omitted": record.sources_omitted,
        "channel": record.channel,
    }
    ET.SubElement(query, "ParticipantObjectQuery").text = _b64(json.dumps(asked, separators=(",", ":")))
    details = {"sources": ",".join(record.sources), "channel": record.channel}
    if record.exam_count is not None:
        details["exam_count"] = str(record.exam_count)
    if record.reason:
        details["reason"] = record.reason
    if record.request_id:
        details["request_id"] = record.request_id
    for key, value in details.items():
        ET.SubElement(query, "ParticipantObjectDetail", {"type": key, "value": _b64(value)})


def syslog_message(record: AuditRecord, *, app_name: str, audit_source_id: str, host: str) -> bytes:
    """One RFC 5424 message: header, no structured data, then a BOM and the XML AuditMessage."""
    priority = FACILITY_AUTHPRIV * 8 + _SEVERITY[record.outcome]
    timestamp = record.at.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    header = f"<{priority}>1 {timestamp} {_field(host, 255)} {_field(app_name, 48)} {os.getpid()} {MSGID} -"
    xml: bytes = ET.tostring(
        audit_message(record, audit_source_id=audit_source_id, host=host),
        encoding="utf-8",
        xml_declaration=True,
    )
    return header.encode("ascii") + b" \xef\xbb\xbf" + xml


def _field(value: str, limit: int) -> str:
    """An RFC 5424 header field: printable US-ASCII without spaces, ``-`` when empty."""
    cleaned = "".join(ch for ch in value if 33 <= ord(ch) <= 126)[:limit]
    return cleaned or "-"


def octet_counted(message: bytes) -> bytes:
    """RFC 5425 / RFC 6587 framing: the message length in decimal, a space, the message."""
    return str(len(message)).encode("ascii") + b" " + message


def tls_context(settings: SyslogSettings) -> ssl.SSLContext:
    """A client context trusting ``ca_file`` (or the system store), with our certificate when configured."""
    context = ssl.create_default_context(cafile=str(settings.ca_file) if settings.ca_file else None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if settings.cert_file is not None:
        context.load_cert_chain(
            str(settings.cert_file), str(settings.key_file) if settings.key_file else None
        )
    return context


class SyslogAuditSink(AuditSink):
    """Sends each record as a DICOM audit message to the configured audit repository."""

    name = "syslog"
    durable = True

    def __init__(self, settings: SyslogSettings, *, connect_timeout_s: float = 5.0) -> None:
        self.settings = settings
        self.connect_timeout_s = connect_timeout_s
        self._host = socket.gethostname()
        try:
            self._context = tls_context(settings) if settings.transport == "tls" else None
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"audit.syslog: cannot load the TLS files ({type(exc).__name__})") from exc
        self._writer: asyncio.StreamWriter | None = None
        self._reader: asyncio.StreamReader | None = None

    def encode(self, record: AuditRecord) -> bytes:
        """The RFC 5424 message for ``record``."""
        return syslog_message(
            record,
            app_name=self.settings.app_name,
            audit_source_id=self.settings.audit_source_id,
            host=self._host,
        )

    async def ship(self, records: Sequence[AuditRecord]) -> None:
        """Send ``records`` in order; AuditError (and a new connection next time) on any failure."""
        if not records:
            return
        messages = [self.encode(record) for record in records]
        try:
            if self.settings.transport == "udp":
                await self._send_udp(messages)
            else:
                await self._send_stream(messages)
        except (OSError, ssl.SSLError, TimeoutError) as exc:
            await self._disconnect()
            raise AuditError(f"syslog: delivery failed ({type(exc).__name__})") from exc

    async def _send_stream(self, messages: list[bytes]) -> None:
        writer = self._writer
        if writer is None or writer.is_closing() or (self._reader is not None and self._reader.at_eof()):
            await self._disconnect()
            reader, connected = await asyncio.wait_for(
                asyncio.open_connection(
                    self.settings.host,
                    self.settings.port,
                    ssl=self._context,
                    server_hostname=self.settings.host if self._context else None,
                ),
                self.connect_timeout_s,
            )
            self._reader, self._writer, writer = reader, connected, connected
        writer.write(b"".join(octet_counted(message) for message in messages))
        await asyncio.wait_for(writer.drain(), self.connect_timeout_s)

    async def _send_udp(self, messages: list[bytes]) -> None:
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(self.settings.host, self.settings.port, type=socket.SOCK_DGRAM)
        family, kind, proto, _, address = infos[0]
        with socket.socket(family, kind, proto) as sock:
            sock.setblocking(False)
            for message in messages:
                await loop.sock_sendto(sock, message, address)

    async def _disconnect(self) -> None:
        writer, self._writer, self._reader = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError, ssl.SSLError, TimeoutError):
                await asyncio.wait_for(writer.wait_closed(), 1.0)

    async def aclose(self) -> None:
        """Close the connection to the repository."""
        await self._disconnect()
