"""Incoming DIMSE messages (PS3.7 6.3, PS3.8 E.2): PDV fragments joined into a command set and a data set.

A P-DATA-TF PDU's presentation data value items (PS3.8 9.3.5.1) are cut out here, as
``pynetdicom.pdu.P_DATA_TF`` cuts them but without an object per PDU and per item; the command
set, always Implicit VR Little Endian (PS3.7 6.3.1), is read here for the few US elements a C-FIND
or C-ECHO answer needs. Decoding it with pydicom (``DIMSEMessage.decode_msg``) cost as much CPU as
the identifier and its normalisation together, four times per study-level query to each source.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from federation.errors import SourceProtocolError

COMMAND_FIELD = 0x0100
MESSAGE_ID_BEING_RESPONDED_TO = 0x0120
COMMAND_DATA_SET_TYPE = 0x0800
STATUS = 0x0900
NO_DATA_SET = 0x0101
_ELEMENT = struct.Struct("<HHL")
_US = struct.Struct("<H")
_PDV_ITEM = struct.Struct(">LB")
_P_DATA_HEADER = 6


@dataclass
class Received:
    """One DIMSE message: its command set's US elements (group 0000), and its data set's bytes."""

    command: dict[int, int] = field(default_factory=dict)
    data: bytes | None = None

    @property
    def status(self) -> int | None:
        return self.command.get(STATUS)


@dataclass
class Assembler:
    """Joins the PDV fragments of one DIMSE message (PS3.8 E.2); ``add`` says when it is whole."""

    _command: bytearray = field(default_factory=bytearray)
    _data: bytearray = field(default_factory=bytearray)
    _message: Received | None = None

    def add(self, fragments: list[tuple[int, bytes]]) -> Received | None:
        """Add a P-DATA's ``(context ID, header byte + fragment)`` items; the message once whole."""
        for _, value in fragments:
            if not value:
                raise SourceProtocolError("an empty PDV item")
            header, fragment = value[0], value[1:]
            if header & 0x01:  # command information
                if self._message is not None:
                    raise SourceProtocolError("a second command set before the data set")
                self._command += fragment
                if header & 0x02:
                    self._message = Received(command=command_values(bytes(self._command)))
                    if self._message.command.get(COMMAND_DATA_SET_TYPE, NO_DATA_SET) == NO_DATA_SET:
                        return self._message
            else:
                if self._message is None:
                    raise SourceProtocolError("a data set fragment before its command set")
                self._data += fragment
                if header & 0x02:
                    self._message.data = bytes(self._data)
                    return self._message
        return None


def pdv_items(pdu: bytes) -> list[tuple[int, bytes]]:
    """A whole P-DATA-TF PDU's ``(context ID, header byte + fragment)`` items (PS3.8 9.3.5.1)."""
    items: list[tuple[int, bytes]] = []
    offset = _P_DATA_HEADER
    end = len(pdu)
    while offset < end:
        if end - offset < _PDV_ITEM.size:
            raise SourceProtocolError("a P-DATA-TF PDU could not be decoded")
        length, context_id = _PDV_ITEM.unpack_from(pdu, offset)
        if length < 1 or offset + 4 + length > end:
            raise SourceProtocolError("a P-DATA-TF PDU could not be decoded")
        items.append((context_id, pdu[offset + _PDV_ITEM.size : offset + 4 + length]))
        offset += 4 + length
    return items


def command_values(encoded: bytes) -> dict[int, int]:
    """The two-byte (US) elements of an Implicit VR Little Endian command set, by element number."""
    values: dict[int, int] = {}
    offset = 0
    end = len(encoded)
    while offset + _ELEMENT.size <= end:
        group, element, length = _ELEMENT.unpack_from(encoded, offset)
        offset += _ELEMENT.size
        if group != 0x0000 or offset + length > end:
            raise SourceProtocolError("a malformed DIMSE command set")
        if length == 2:
            (values[element],) = _US.unpack_from(encoded, offset)
        offset += length
    if offset != end or COMMAND_FIELD not in values:
        raise SourceProtocolError("a malformed DIMSE command set")
    return values
