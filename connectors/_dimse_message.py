"""Incoming DIMSE messages (PS3.7 6.3, PS3.8 E.2): PDV fragments joined into a command set and a data set.

A P-DATA-TF PDU's presentation data value items (PS3.8 9.3.5.1) are cut out here, as
``pynetdicom.pdu.P_DATA_TF`` cuts them but without an object per PDU and per item; the command
set, always Implicit VR Little Endian (PS3.7 6.3.1), is read here for the few US elements a C-FIND
or C-ECHO answer needs. Decoding it with pydicom (``DIMSEMessage.decode_msg``) cost as much CPU as
the identifier and its normalisation together, four times per study-level query to each source.
"""

from __future__ import annotations

import struct

from federation.errors import SourceProtocolError

COMMAND_FIELD = 0x0100
MESSAGE_ID_BEING_RESPONDED_TO = 0x0120
COMMAND_DATA_SET_TYPE = 0x0800
STATUS = 0x0900
NO_DATA_SET = 0x0101
_ELEMENT = struct.Struct("<HHL")
_US = struct.Struct("<H")
_PDV_ITEM = struct.Struct(">LB")
"""A PDV item's length and presentation context ID; its message control header follows."""
_P_DATA_HEADER = 6


class Received:
    """One DIMSE message: its command set's US elements (group 0000), and its data set's bytes."""

    __slots__ = ("command", "data")

    def __init__(self, command: dict[int, int] | None = None, data: bytes | None = None) -> None:
        self.command: dict[int, int] = {} if command is None else command
        self.data = data

    @property
    def status(self) -> int | None:
        return self.command.get(STATUS)


class Assembler:
    """Joins the PDV fragments of one DIMSE message (PS3.8 E.2); ``add_pdu`` says when it is whole.

    A message's command set and data set each come in one fragment from most peers (always from
    DCMTK for a C-FIND answer): such a fragment is kept as it was cut from the PDU, joined into a
    buffer only when a second one follows.
    """

    __slots__ = ("_command", "_data", "_message")

    def __init__(self) -> None:
        self._command: bytes | bytearray = b""
        self._data: bytes | bytearray = b""
        self._message: Received | None = None

    def add_pdu(self, pdu: bytes) -> Received | None:
        """Add a whole P-DATA-TF PDU's items (PS3.8 9.3.5.1); the message once whole.

        Items after the one that completes the message are checked, not read.
        """
        whole = None
        offset = _P_DATA_HEADER
        end = len(pdu)
        while offset < end:
            if end - offset < _PDV_ITEM.size:
                raise SourceProtocolError("a P-DATA-TF PDU could not be decoded")
            length, _ = _PDV_ITEM.unpack_from(pdu, offset)
            header, offset = offset + _PDV_ITEM.size, offset + 4 + length
            if length < 1 or offset > end:
                raise SourceProtocolError("a P-DATA-TF PDU could not be decoded")
            if whole is None:
                if length == 1:
                    raise SourceProtocolError("an empty PDV item")
                whole = self._fragment(pdu[header], pdu[header + 1 : offset])
        return whole

    def _fragment(self, header: int, fragment: bytes) -> Received | None:
        """One PDV's message control header (PS3.8 E.2) and fragment."""
        if header & 0x01:  # command information
            if self._message is not None:
                raise SourceProtocolError("a second command set before the data set")
            if self._command:
                if not isinstance(self._command, bytearray):
                    self._command = bytearray(self._command)
                self._command += fragment
            else:
                self._command = fragment
            if header & 0x02:
                self._message = Received(command_values(bytes(self._command)))
                if self._message.command.get(COMMAND_DATA_SET_TYPE, NO_DATA_SET) == NO_DATA_SET:
                    return self._message
        else:
            if self._message is None:
                raise SourceProtocolError("a data set fragment before its command set")
            if self._data:
                if not isinstance(self._data, bytearray):
                    self._data = bytearray(self._data)
                self._data += fragment
            else:
                self._data = fragment
            if header & 0x02:
                self._message.data = bytes(self._data)
                return self._message
        return None


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
