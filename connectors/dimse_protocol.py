"""The DICOM Upper Layer and DIMSE message pieces of the asyncio transport, for a server as for a client.

A public door onto the DIMSE connector's private wire modules, so a DICOM front end (the
``dicom_facade`` C-FIND SCP) speaks with the same bounded PDU reader (PS3.8 9.3), the same
command-set reader and the same P-DATA-TF fragmentation (PS3.8 E.2) as the connector, without
importing them directly.
"""

from __future__ import annotations

from connectors._dimse_find import encodable
from connectors._dimse_link import encode_message
from connectors._dimse_message import (
    COMMAND_DATA_SET_TYPE,
    COMMAND_FIELD,
    MESSAGE_ID_BEING_RESPONDED_TO,
    NO_DATA_SET,
    command_values,
)
from connectors._dimse_wire import (
    A_ABORT,
    A_ASSOCIATE_AC,
    A_ASSOCIATE_RJ,
    A_ASSOCIATE_RQ,
    A_RELEASE_RP,
    A_RELEASE_RQ,
    MAX_PDU_BYTES,
    P_DATA_TF,
    DulProtocol,
    PeerGone,
)

MESSAGE_ID = 0x0110
"""(0000,0110) Message ID, a US element of every request's command set (PS3.7 E.1)."""
PRIORITY = 0x0700
"""(0000,0700) Priority."""

__all__ = [  # noqa: RUF022 - plain sorted() order, the order tests/unit/test_exported_members.py checks
    "A_ABORT",
    "A_ASSOCIATE_AC",
    "A_ASSOCIATE_RJ",
    "A_ASSOCIATE_RQ",
    "A_RELEASE_RP",
    "A_RELEASE_RQ",
    "COMMAND_DATA_SET_TYPE",
    "COMMAND_FIELD",
    "DulProtocol",
    "MAX_PDU_BYTES",
    "MESSAGE_ID",
    "MESSAGE_ID_BEING_RESPONDED_TO",
    "NO_DATA_SET",
    "PRIORITY",
    "P_DATA_TF",
    "PeerGone",
    "command_values",
    "encodable",
    "encode_message",
]
