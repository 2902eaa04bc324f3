"""One C-FIND below the study (SERIES or IMAGE level, PS3.4 C.6.2.1) on an established association.

Read like the study C-FIND (``_dimse_responses``): Pending responses carry one answer each,
Success / Warning / Cancel end it, anything else fails it; a dead or silent peer is an error.
These answers are few (a study's series, a series' instances), so they go through pydicom.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from io import BytesIO
from typing import Generic, TypeVar

from pydicom.dataset import Dataset
from pynetdicom.dimse_messages import C_FIND_RQ
from pynetdicom.dimse_primitives import C_FIND
from pynetdicom.dsutils import encode
from pynetdicom.status import code_to_category

from connectors._dimse_link import AssociationEnded, DimseLink, cut, encode_message
from connectors._dimse_message import COMMAND_FIELD, MESSAGE_ID_BEING_RESPONDED_TO
from connectors._dimse_responses import C_FIND_RSP, CANCEL_AFTER_S, MESSAGE_ID, FindState, send_cancel
from federation.errors import SourceProtocolError, SourceTimeout
from federation.models import Deadline

R = TypeVar("R")


@dataclass
class Found(Generic[R]):
    """The records of one C-FIND, its warnings, and whether it was cut short."""

    records: list[R] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    truncated: bool = False


async def find_below_study(
    link: DimseLink,
    model: str,
    identifier: Dataset,
    deadline: Deadline,
    state: FindState,
    *,
    max_results: int,
    to_record: Callable[[Dataset, list[str]], R | None],
) -> Found[R]:
    """Send one C-FIND and read its answers into records, C-CANCELling it past ``max_results``."""
    context_id, syntax = link.contexts[model]
    charset = link.settings.query_charset
    if charset:
        identifier.SpecificCharacterSet = charset
    encoded = encode(identifier, syntax.is_implicit_VR, syntax.is_little_endian, syntax.is_deflated)
    if encoded is None:
        raise SourceProtocolError("could not encode the C-FIND identifier")
    primitive = C_FIND()
    primitive.MessageID = MESSAGE_ID
    primitive.AffectedSOPClassUID = model
    primitive.Priority = 2
    primitive.Identifier = BytesIO(encoded)
    request = C_FIND_RQ()
    request.primitive_to_message(primitive)
    link.protocol.send(encode_message(request, context_id, link.peer_max_pdu))
    state.model = model
    found: Found[R] = Found()
    dimse_s = link.settings.dimse_timeout_s
    category = "Pending"
    pending = 0
    while True:
        wait_s = min(dimse_s, cut(dimse_s, deadline) + CANCEL_AFTER_S)
        try:
            response = await link.receive(wait_s)
        except TimeoutError as exc:
            raise SourceTimeout(f"no C-FIND response within {wait_s:.1f} s") from exc
        except AssociationEnded as exc:
            raise AssociationEnded(
                "association aborted by the peer during the C-FIND",
                before_any_response=not found.records,
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
            # Responses that add no record are a flood too: bounded like the study C-FIND's.
            if pending > max_results:
                found.truncated = True
                found.warnings.append(f"stopped after {max_results} responses (max_results)")
                break
            if not response.data:
                found.warnings.append("a pending response carried no identifier")
                continue
            try:
                answer = link.decode_dataset(response.data, model)
            except Exception:  # one bad response, not a failed query
                found.warnings.append("a pending response could not be decoded")
                continue
            record = to_record(answer, found.warnings)
            if record is None:
                found.warnings.append("a response without its UIDs was ignored")
                continue
            found.records.append(record)
            if len(found.records) >= max_results:
                found.truncated = True
                found.warnings.append(f"stopped after {max_results} answers (max_results)")
                break
        elif category == "Success":
            break
        elif category == "Cancel":
            found.truncated = True
            found.warnings.append("the peer cancelled the C-FIND")
            break
        elif category == "Warning":
            found.warnings.append(f"C-FIND ended with warning status 0x{code:04X}")
            break
        else:
            raise SourceProtocolError(f"C-FIND failed with status 0x{code:04X}")
    if found.truncated and category == "Pending":
        send_cancel(link, model)
    else:
        state.model = None
    found.warnings = list(dict.fromkeys(found.warnings))
    return found
