"""Association acceptance (PS3.8 7.1, 9.3.2-9.3.4): an A-ASSOCIATE-RQ read, answered AC or RJ.

The facade accepts Verification and the Study Root and Patient Root FIND models (PS3.4 C.6.1.1.2,
C.6.2.1.1) in Implicit or Explicit VR Little Endian; every other context is refused in the AC
with its reason (PS3.8 9.3.3.2), so a caller that also proposes C-MOVE learns it is not offered.
"""

from __future__ import annotations

import dataclasses
import enum

from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID, pdu
from pynetdicom.pdu_primitives import (
    A_ASSOCIATE,
    ImplementationClassUIDNotification,
    ImplementationVersionNameNotification,
    MaximumLengthNotification,
)
from pynetdicom.presentation import PresentationContext

APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"
VERIFICATION = "1.2.840.10008.1.1"
PATIENT_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.1.1"
STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
SUPPORTED = frozenset({VERIFICATION, PATIENT_ROOT_FIND, STUDY_ROOT_FIND})
TRANSFER_SYNTAXES = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
"""Preferred first: Explicit VR carries each value's VR, which workstations display better."""
OUR_MAX_PDU = 16384
"""The largest PDU we accept (PS3.8 D.1), announced in our A-ASSOCIATE-AC."""
IMPLEMENTATION_VERSION = "PACSFED_FACADE"


class Rejection(enum.Enum):
    """A-ASSOCIATE-RJ (result, source, reason), PS3.8 Table 9-21."""

    CALLING_AE_NOT_RECOGNIZED = (1, 1, 3)
    CALLED_AE_NOT_RECOGNIZED = (1, 1, 7)
    APPLICATION_CONTEXT_NOT_SUPPORTED = (1, 1, 2)
    NO_REASON = (1, 1, 1)
    LOCAL_LIMIT_EXCEEDED = (2, 3, 2)

    def encode(self) -> bytes:
        """The A-ASSOCIATE-RJ PDU (PS3.8 9.3.4)."""
        result, source, reason = self.value
        return bytes([0x03, 0, 0, 0, 0, 4, 0, result, source, reason])


@dataclasses.dataclass(frozen=True, slots=True)
class Request:
    """What an A-ASSOCIATE-RQ asked: who calls whom, which contexts, the caller's largest PDU."""

    calling_ae: str
    called_ae: str
    application_context: str
    contexts: tuple[tuple[int, str, tuple[str, ...]], ...]
    """(context ID, abstract syntax, transfer syntaxes) in the caller's order."""
    max_pdu: int
    """The caller's Maximum Length Received; 0 means no limit (PS3.8 D.1)."""


@dataclasses.dataclass(frozen=True, slots=True)
class Accepted:
    """The A-ASSOCIATE-AC to send, and the contexts it accepted: context ID -> (abstract, transfer syntax)."""

    pdu: bytes
    contexts: dict[int, tuple[str, UID]]


class MalformedRequest(Exception):
    """The A-ASSOCIATE-RQ could not be decoded."""


def read_request(data: bytes) -> Request:
    """The A-ASSOCIATE-RQ PDU's content; MalformedRequest when pynetdicom cannot decode it."""
    try:
        request = pdu.A_ASSOCIATE_RQ()
        request.decode(data)
        primitive = request.to_primitive()
        contexts = tuple(
            (
                int(cx.context_id or 0),
                str(cx.abstract_syntax or ""),
                tuple(str(ts) for ts in cx.transfer_syntax),
            )
            for cx in primitive.presentation_context_definition_list
        )
        return Request(
            calling_ae=str(primitive.calling_ae_title or "").strip(),
            called_ae=str(primitive.called_ae_title or "").strip(),
            application_context=str(primitive.application_context_name or ""),
            contexts=contexts,
            max_pdu=int(primitive.maximum_length_received or 0),
        )
    except Exception as exc:  # pynetdicom's decoders raise anything on garbage
        raise MalformedRequest("the A-ASSOCIATE-RQ could not be decoded") from exc


def accept(request: Request) -> Accepted:
    """The A-ASSOCIATE-AC: each supported context in its first offered transfer syntax we speak."""
    results: list[PresentationContext] = []
    accepted: dict[int, tuple[str, UID]] = {}
    for context_id, abstract, offered in request.contexts:
        result = PresentationContext()
        result.context_id = context_id
        result.abstract_syntax = UID(abstract) if abstract else None
        chosen = next((ts for ts in TRANSFER_SYNTAXES if ts in offered), None)
        if abstract not in SUPPORTED:
            result.result = 0x03  # abstract syntax not supported (provider rejection)
            result.add_transfer_syntax(ImplicitVRLittleEndian)
        elif chosen is None:
            result.result = 0x04  # transfer syntaxes not supported (provider rejection)
            result.add_transfer_syntax(ImplicitVRLittleEndian)
        else:
            result.result = 0x00
            result.add_transfer_syntax(chosen)
            accepted[context_id] = (abstract, chosen)
        results.append(result)
    primitive = A_ASSOCIATE()
    primitive.application_context_name = UID(APPLICATION_CONTEXT)
    primitive.calling_ae_title = request.calling_ae or "UNKNOWN"
    primitive.called_ae_title = request.called_ae or "UNKNOWN"
    primitive.presentation_context_definition_results_list = results
    max_length = MaximumLengthNotification()
    max_length.maximum_length_received = OUR_MAX_PDU
    implementation = ImplementationClassUIDNotification()
    implementation.implementation_class_uid = PYNETDICOM_IMPLEMENTATION_UID
    version = ImplementationVersionNameNotification()
    version.implementation_version_name = IMPLEMENTATION_VERSION
    primitive.user_information = [max_length, implementation, version]
    answer = pdu.A_ASSOCIATE_AC()
    answer.from_primitive(primitive)
    return Accepted(answer.encode(), accepted)
