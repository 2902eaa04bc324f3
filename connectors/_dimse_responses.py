"""One C-FIND on an established association (PS3.7 9.1.2): its responses read into an answer or an error.

Status categories (PS3.4 C.4.1.1.4): Pending responses carry a study, Success / Warning / Cancel
end the answer, anything else fails it. A dead or silent peer is an error, never "no exams".
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from io import BytesIO

from pydicom.dataset import Dataset
from pydicom.uid import UID
from pynetdicom.dimse_messages import C_CANCEL_RQ, C_FIND_RQ
from pynetdicom.dimse_primitives import C_CANCEL, C_FIND
from pynetdicom.dsutils import encode
from pynetdicom.status import code_to_category

from connectors._dimse_fast_reader import Unhandled
from connectors._dimse_find import find_identifier
from connectors._dimse_link import AssociationEnded, DimseLink, cut, encode_message
from connectors._dimse_message import COMMAND_FIELD, MESSAGE_ID_BEING_RESPONDED_TO
from connectors.base import SourceAnswer
from federation.errors import SourceProtocolError, SourceTimeout
from federation.models import Deadline, StudyQuery, StudyRecord

MESSAGE_ID = 1
"""The Message ID of our C-FIND; its C-CANCEL names it (PS3.7 9.3.2.3)."""
C_FIND_RSP = 0x8020
CANCEL_AFTER_S = 0.5
"""The DIMSE wait runs this far past the deadline: the deadline (the engine, or ``find_studies``)
C-CANCELs the query first; the DIMSE timeout is the backstop for when nobody does."""


@dataclass
class FindState:
    """What a C-FIND in progress has sent, so that one given up can be C-CANCELled."""

    model: str | None = None


def send_cancel(link: DimseLink, model: str) -> None:
    """C-CANCEL our C-FIND (PS3.7 9.3.2.3) so the peer stops working on it."""
    primitive = C_CANCEL()
    primitive.MessageIDBeingRespondedTo = MESSAGE_ID
    message = C_CANCEL_RQ()
    message.primitive_to_message(primitive)
    link.send(message, link.contexts[model][0])


@functools.lru_cache(maxsize=32)
def find_request(
    query: StudyQuery, charset: str | None, model: str, syntax: UID, context_id: int, peer_max_pdu: int
) -> bytes:
    """Our C-FIND-RQ (PS3.7 9.3.2.1) as P-DATA-TF PDUs, encoded once for every source it goes to.

    A fan-out sends the same query to every DIMSE source: pydicom's encoding of the identifier
    and of the command set was most of the CPU each source cost.
    """
    primitive = C_FIND()
    primitive.MessageID = MESSAGE_ID
    primitive.AffectedSOPClassUID = model
    primitive.Priority = 2  # LOW, as pynetdicom sends it
    encoded = encode(
        find_identifier(query, charset), syntax.is_implicit_VR, syntax.is_little_endian, syntax.is_deflated
    )
    if encoded is None:
        raise SourceProtocolError("could not encode the C-FIND identifier")
    primitive.Identifier = BytesIO(encoded)
    request = C_FIND_RQ()
    request.primitive_to_message(primitive)
    return encode_message(request, context_id, peer_max_pdu)


@functools.lru_cache(maxsize=16)
def _syntax_flags(syntax: UID) -> tuple[bool, bool]:
    """Whether a transfer syntax is implicit VR, and little endian without deflation (what the fast path reads).

    pydicom works these out from its UID dictionary at every look-up.
    """
    return syntax.is_implicit_VR, syntax.is_little_endian and not syntax.is_deflated


async def collect_studies(
    link: DimseLink,
    model: str,
    query: StudyQuery,
    deadline: Deadline,
    state: FindState,
    *,
    max_results: int,
    calling_ae: str,
    to_record: Callable[[Dataset], StudyRecord | None],
    read_record: Callable[[bytes, bool], StudyRecord | None] | None = None,
) -> SourceAnswer:
    """Send one C-FIND and read its responses into records, C-CANCELling it past ``max_results``.

    ``read_record`` reads an identifier's bytes (implicit VR or not) without pydicom when it can,
    raising ``Unhandled`` when not; ``to_record`` reads the Dataset pydicom decodes otherwise.
    """
    records: dict[str, StudyRecord] = {}
    warnings: list[str] = []
    truncated = False
    context_id, syntax = link.contexts[model]
    implicit_vr, readable = _syntax_flags(syntax)
    if not readable:
        read_record = None
    link.protocol.send(
        find_request(query, link.settings.query_charset, model, syntax, context_id, link.peer_max_pdu)
    )
    state.model = model
    dimse_s = link.settings.dimse_timeout_s
    pending = 0
    while True:
        wait_s = min(dimse_s, cut(dimse_s, deadline) + CANCEL_AFTER_S)
        try:
            response = await link.receive(wait_s)
        except TimeoutError as exc:
            raise SourceTimeout(f"no C-FIND response within {wait_s:.1f} s") from exc
        except AssociationEnded as exc:
            raise AssociationEnded(
                f"association aborted by the peer during the C-FIND (is {calling_ae} registered there?)",
                before_any_response=pending == 0,
            ) from exc
        command = response.command
        if (
            command.get(COMMAND_FIELD) != C_FIND_RSP
            or command.get(MESSAGE_ID_BEING_RESPONDED_TO) != MESSAGE_ID
        ):
            raise SourceProtocolError("a DIMSE message that is not our C-FIND's response")
        code = response.status
        if code is None:
            raise SourceProtocolError("a C-FIND response without a status")
        category = code_to_category(code)
        if category == "Pending":
            pending += 1
            if pending > max_results:  # responses without a new study: a flood
                truncated = True
                warnings.append(f"stopped after {max_results} responses (max_results)")
                break
            data = response.data
            if not data:
                warnings.append("a pending response carried no identifier")
                continue
            try:
                if read_record is None:
                    raise Unhandled("no fast path for this transfer syntax")
                record = read_record(data, implicit_vr)
            except Unhandled:
                try:
                    answer = link.decode_dataset(data, model)
                except Exception:  # an undecodable identifier is one bad response, not a failed query
                    warnings.append("a pending response could not be decoded")
                    continue
                record = to_record(answer)
            if record is None:
                warnings.append("a response without StudyInstanceUID was ignored")
                continue
            warnings.extend(record.warnings)
            records[record.study_instance_uid] = record
            if len(records) >= max_results:
                truncated = True
                warnings.append(f"stopped after {max_results} studies (max_results)")
                break
        elif category == "Success":
            break
        elif category == "Cancel":
            truncated = True
            warnings.append("the peer cancelled the C-FIND")
            break
        elif category == "Warning":
            warnings.append(f"C-FIND ended with warning status 0x{code:04X}")
            break
        else:
            raise SourceProtocolError(f"C-FIND failed with status 0x{code:04X}")
    if truncated and category == "Pending":
        # Stopped by us: the C-FIND goes on at the peer until it is C-CANCELled.
        send_cancel(link, model)
    else:
        state.model = None  # the C-FIND is over: nothing to C-CANCEL
    return SourceAnswer(
        records=list(records.values()),
        warnings=tuple(dict.fromkeys(warnings)),
        truncated=truncated,
    )
