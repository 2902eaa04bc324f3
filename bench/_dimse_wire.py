"""The few DICOM upper-layer and DIMSE pieces the DIMSE benchmarks write and read by hand.

PS3.8 9.3 (PDUs) and PS3.7 E (command sets, always Implicit VR Little Endian): just what the
simulated PACS (``bench/_dimse_server.py``) and the floor client (``bench/_dimse_floor.py``)
need, cheap enough that neither charges its own codec to the figures. The association
request and accept are decoded with pynetdicom's codecs (``pynetdicom.pdu``), so each side's
hand-written PDUs are checked by an independent reader.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

ASSOCIATE_RQ, ASSOCIATE_AC, ASSOCIATE_RJ, P_DATA_TF, RELEASE_RQ, RELEASE_RP, ABORT = range(1, 8)
APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"
IMPLICIT_LE = "1.2.840.10008.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
PATIENT_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.1.1"
VERIFICATION = "1.2.840.10008.1.1"
IMPLEMENTATION_UID = "1.2.826.0.1.3680043.9.7433.1.16"

C_FIND_RQ, C_FIND_RSP, C_ECHO_RQ, C_ECHO_RSP, C_CANCEL_RQ = 0x0020, 0x8020, 0x0030, 0x8030, 0x0FFF
NO_DATA_SET = 0x0101
PENDING, SUCCESS, CANCEL = 0xFF00, 0x0000, 0xFE00

COMMAND_FIELD, MESSAGE_ID, RESPONDED_TO, DATA_SET_TYPE, STATUS = (
    0x00000100,
    0x00000110,
    0x00000120,
    0x00000800,
    0x00000900,
)
_AFFECTED_SOP_CLASS, _PRIORITY = 0x00000002, 0x00000700
_HEADER = struct.Struct(">BxI")


def pdu(kind: int, body: bytes) -> bytes:
    """A whole PDU: type, reserved byte, big-endian length, body."""
    return _HEADER.pack(kind, len(body)) + body


def p_data(context_id: int, *fragments: tuple[int, bytes]) -> bytes:
    """One P-DATA-TF holding each (message control header, payload) as a PDV of the context."""
    items = b"".join(
        struct.pack(">IBB", len(data) + 2, context_id, control) + data for control, data in fragments
    )
    return pdu(P_DATA_TF, items)


def message(context_id: int, command: bytes, data_set: bytes | None = None) -> bytes:
    """A DIMSE message in one P-DATA-TF: the command (and its data set) each as one last fragment."""
    if data_set is None:
        return p_data(context_id, (0x03, command))
    return p_data(context_id, (0x03, command), (0x02, data_set))


def _uid(value: str) -> bytes:
    raw = value.encode("ascii")
    return raw + b"\0" if len(raw) % 2 else raw


def _element(tag: int, value: bytes) -> bytes:
    return struct.pack("<HHI", tag >> 16, tag & 0xFFFF, len(value)) + value


def command_set(sop_class: str, fields: dict[int, int]) -> bytes:
    """A command set (PS3.7 E.1): the affected SOP class and US fields, group length first."""
    body = _element(_AFFECTED_SOP_CLASS, _uid(sop_class))
    body += b"".join(_element(tag, struct.pack("<H", fields[tag])) for tag in sorted(fields))
    return _element(0, struct.pack("<I", len(body))) + body


def find_request(message_id: int, sop_class: str = STUDY_ROOT_FIND) -> bytes:
    """The command set of a C-FIND-RQ at medium priority, a data set following."""
    fields = {COMMAND_FIELD: C_FIND_RQ, MESSAGE_ID: message_id, _PRIORITY: 0, DATA_SET_TYPE: 0}
    return command_set(sop_class, fields)


def response(command_field: int, sop_class: str, responding_to: int, status: int, data_set: bool) -> bytes:
    """The command set of a C-FIND-RSP or C-ECHO-RSP."""
    fields = {
        COMMAND_FIELD: command_field,
        RESPONDED_TO: responding_to,
        DATA_SET_TYPE: 0 if data_set else NO_DATA_SET,
        STATUS: status,
    }
    return command_set(sop_class, fields)


def us_fields(command: bytes) -> dict[int, int]:
    """The US elements of a command set, by tag (other elements skipped)."""
    fields: dict[int, int] = {}
    offset = 0
    while offset + 8 <= len(command):
        group, element, length = struct.unpack_from("<HHI", command, offset)
        offset += 8
        if length == 2:
            fields[(group << 16) | element] = struct.unpack_from("<H", command, offset)[0]
        offset += length
    return fields


def pdvs(body: bytes) -> Iterator[tuple[int, int, bytes]]:
    """The (context id, message control header, payload) of each PDV in a P-DATA-TF's body."""
    offset = 0
    while offset + 6 <= len(body):
        length, context_id, control = struct.unpack_from(">IBB", body, offset)
        yield context_id, control, body[offset + 6 : offset + 4 + length]
        offset += 4 + length


def associate(kind: int, called_ae: str, calling_ae: str, contexts: list[bytes], max_pdu: int) -> bytes:
    """An A-ASSOCIATE-RQ or -AC (PS3.8 9.3.2/9.3.3) with the given presentation context items."""
    head = struct.pack(">HH16s16s32x", 1, 0, called_ae.encode().ljust(16), calling_ae.encode().ljust(16))
    application = _item(0x10, APPLICATION_CONTEXT.encode())
    user = _item(0x50, _item(0x51, struct.pack(">I", max_pdu)) + _item(0x52, IMPLEMENTATION_UID.encode()))
    return pdu(kind, head + application + b"".join(contexts) + user)


def requested_context(context_id: int, abstract_syntax: str, transfer_syntaxes: list[str]) -> bytes:
    """A presentation context item of an A-ASSOCIATE-RQ."""
    syntaxes = b"".join(_item(0x40, ts.encode()) for ts in transfer_syntaxes)
    return _item(0x20, bytes((context_id, 0, 0, 0)) + _item(0x30, abstract_syntax.encode()) + syntaxes)


def accepted_context(context_id: int, result: int, transfer_syntax: str) -> bytes:
    """A presentation context item of an A-ASSOCIATE-AC (result 0: accepted)."""
    return _item(0x21, bytes((context_id, 0, result, 0)) + _item(0x40, transfer_syntax.encode()))


def _item(kind: int, value: bytes) -> bytes:
    return struct.pack(">BxH", kind, len(value)) + value


class PduReader:
    """Splits a byte stream into whole PDUs."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> Iterator[tuple[int, bytes]]:
        """Each (type, body) completed by ``data``."""
        self._buffer += data
        while len(self._buffer) >= 6:
            kind, length = _HEADER.unpack_from(self._buffer)
            if len(self._buffer) < 6 + length:
                return
            body = bytes(self._buffer[6 : 6 + length])
            del self._buffer[: 6 + length]
            yield kind, body
