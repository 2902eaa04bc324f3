"""Incoming requests (PS3.8 9.3.5.1, E.2): the PDV items of P-DATA-TF PDUs joined into DIMSE messages.

The command set's US elements are read by the transport's reader (``command_values``); the data
set is kept as bytes, decoded later under its presentation context's transfer syntax. Each
message remembers its presentation context, which says the SOP class asked (PS3.8 9.3.5.1).
"""

from __future__ import annotations

import dataclasses
import struct

from connectors.dimse_protocol import COMMAND_DATA_SET_TYPE, NO_DATA_SET, command_values

_ITEM = struct.Struct(">LB")
"""A PDV item's length and presentation context ID; its message control header follows."""
_P_DATA_HEADER = 6


class MalformedMessage(Exception):
    """A P-DATA-TF PDU or a command set that breaks the protocol."""


@dataclasses.dataclass(frozen=True, slots=True)
class Message:
    """One whole DIMSE request: its presentation context, its command set's US elements, its data set."""

    context_id: int
    command: dict[int, int]
    data: bytes | None


class MessageAssembler:
    """Joins PDV fragments into messages; ``add_pdu`` returns the messages a PDU completed."""

    def __init__(self) -> None:
        self._context_id: int | None = None
        self._command = bytearray()
        self._data = bytearray()
        self._values: dict[int, int] | None = None

    @property
    def pending_bytes(self) -> int:
        """Bytes of the message in progress (bounded by the caller)."""
        return len(self._command) + len(self._data)

    def add_pdu(self, pdu: bytes) -> list[Message]:
        """Add a whole P-DATA-TF PDU (header included); MalformedMessage when it breaks the protocol."""
        done: list[Message] = []
        offset, end = _P_DATA_HEADER, len(pdu)
        while offset < end:
            if end - offset < _ITEM.size + 1:
                raise MalformedMessage("a truncated PDV item")
            length, context_id = _ITEM.unpack_from(pdu, offset)
            start, offset = offset + _ITEM.size, offset + 4 + length
            if length < 2 or offset > end:
                raise MalformedMessage("a PDV item of a wrong length")
            message = self._fragment(context_id, pdu[start], pdu[start + 1 : offset])
            if message is not None:
                done.append(message)
        return done

    def _fragment(self, context_id: int, header: int, fragment: bytes) -> Message | None:
        if self._context_id is None:
            self._context_id = context_id
        elif context_id != self._context_id:
            raise MalformedMessage("fragments of one message under two presentation contexts")
        if header & 0x01:  # command information (PS3.8 E.2)
            if self._values is not None:
                raise MalformedMessage("a second command set before the data set")
            self._command += fragment
            if not header & 0x02:
                return None
            try:
                self._values = command_values(bytes(self._command))
            except Exception as exc:
                raise MalformedMessage("a malformed command set") from exc
            if self._values.get(COMMAND_DATA_SET_TYPE, NO_DATA_SET) == NO_DATA_SET:
                return self._done(None)
            return None
        if self._values is None:
            raise MalformedMessage("a data set fragment before its command set")
        self._data += fragment
        return self._done(bytes(self._data)) if header & 0x02 else None

    def _done(self, data: bytes | None) -> Message:
        assert self._context_id is not None
        assert self._values is not None
        message = Message(self._context_id, self._values, data)
        self._context_id, self._values = None, None
        self._command, self._data = bytearray(), bytearray()
        return message
