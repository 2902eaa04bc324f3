"""DIMSE responses the facade sends (PS3.7 9.3.1, 9.3.5): C-ECHO-RSP and C-FIND-RSP, as P-DATA-TF PDUs.

The messages are pynetdicom's (``pynetdicom.dimse_messages``), cut into PDUs no longer than the
caller's Maximum Length Received by the transport's encoder (``connectors.dimse_protocol``).
"""

from __future__ import annotations

from io import BytesIO

from pydicom.dataset import Dataset
from pydicom.uid import UID
from pynetdicom.dimse_messages import C_ECHO_RSP, C_FIND_RSP
from pynetdicom.dimse_primitives import C_ECHO, C_FIND
from pynetdicom.dsutils import encode

from connectors.dimse_protocol import encode_message
from dicom_facade._comments import fit

C_FIND_RQ = 0x0020
C_ECHO_RQ = 0x0030
C_CANCEL_RQ = 0x0FFF

SUCCESS = 0x0000
PENDING = 0xFF00
CANCEL = 0xFE00
WARNING = 0xB000
"""A warning status (PS3.7 C.3: 0001 or Bxxx), sent as the final C-FIND response when sources failed."""
OUT_OF_RESOURCES = 0xA700
IDENTIFIER_DOES_NOT_MATCH = 0xA900
UNABLE_TO_PROCESS = 0xC000


def echo_response(message_id: int, sop_class: str, context_id: int, max_pdu: int) -> bytes:
    """A successful C-ECHO-RSP (PS3.7 9.3.5.2)."""
    primitive = C_ECHO()
    primitive.MessageIDBeingRespondedTo = message_id
    primitive.AffectedSOPClassUID = UID(sop_class)
    primitive.Status = SUCCESS
    message = C_ECHO_RSP()
    message.primitive_to_message(primitive)
    return encode_message(message, context_id, max_pdu)


def find_response(
    message_id: int,
    sop_class: str,
    context_id: int,
    max_pdu: int,
    status: int,
    *,
    identifier: bytes | None = None,
    comment: str | None = None,
) -> bytes:
    """A C-FIND-RSP (PS3.7 9.3.1.2): pending with an identifier, or final with an optional ErrorComment."""
    primitive = C_FIND()
    primitive.MessageIDBeingRespondedTo = message_id
    primitive.AffectedSOPClassUID = UID(sop_class)
    primitive.Status = status
    if identifier is not None:
        primitive.Identifier = BytesIO(identifier)
    if comment and status not in (SUCCESS, PENDING, CANCEL):
        # ErrorComment goes with warning and failure statuses only (PS3.7 C.4, C.5).
        primitive.ErrorComment = fit(comment)  # type: ignore[assignment]
    message = C_FIND_RSP()
    message.primitive_to_message(primitive)
    return encode_message(message, context_id, max_pdu)


def encode_identifier(dataset: Dataset, implicit: bool) -> bytes:
    """A response identifier in the context's transfer syntax (little endian either way)."""
    encoded = encode(dataset, implicit, True)
    if encoded is None:
        raise ValueError("the identifier could not be encoded")
    return bytes(encoded)
