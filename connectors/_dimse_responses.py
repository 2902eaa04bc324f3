"""One C-FIND on an established association (PS3.7 9.1.2), at any level: its responses read into records or an error.

Status categories (PS3.4 C.4.1.1.4): Pending responses carry one answer each, Success / Warning /
Cancel end the answer, anything else fails it. A dead or silent peer is an error, never "no exams".
The loop is one for every query level; what differs (the record builder, the record's UID, the
words of the warnings) comes from ``_dimse_levels.Level``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from io import BytesIO
from typing import Generic, TypeVar

from pydicom.dataset import Dataset
from pydicom.uid import UID
from pynetdicom.dimse_messages import C_CANCEL_RQ, C_FIND_RQ
from pynetdicom.dimse_primitives import C_CANCEL, C_FIND
from pynetdicom.dsutils import encode
from pynetdicom.status import code_to_category

from connectors._dimse_fast_reader import Unhandled
from connectors._dimse_find import find_identifier
from connectors._dimse_levels import Level
from connectors._dimse_link import AssociationEnded, DimseLink, cut, encode_message
from connectors._dimse_message import COMMAND_FIELD, MESSAGE_ID_BEING_RESPONDED_TO
from federation.errors import SourceProtocolError, SourceTimeout
from federation.models import Deadline, StudyQuery

R = TypeVar("R")
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


def study_request(link: DimseLink, model: str, query: StudyQuery) -> bytes:
    """The STUDY-level C-FIND-RQ for ``query`` on this association, encoded once per fan-out."""
    context_id, syntax = link.contexts[model]
    return _study_request(query, link.settings.query_charset, model, syntax, context_id, link.peer_max_pdu)


def identifier_request(link: DimseLink, model: str, identifier: Dataset) -> bytes:
    """A C-FIND-RQ carrying ``identifier`` (a level below the study), in the source's query character set."""
    context_id, syntax = link.contexts[model]
    charset = link.settings.query_charset
    if charset:
        identifier.SpecificCharacterSet = charset
    return _encode_request(identifier, model, syntax, context_id, link.peer_max_pdu)


@functools.lru_cache(maxsize=32)
def _study_request(
    query: StudyQuery, charset: str | None, model: str, syntax: UID, context_id: int, peer_max_pdu: int
) -> bytes:
    """Our STUDY-level C-FIND-RQ, cached: a fan-out sends the same query to every DIMSE source.

    pydicom's encoding of the identifier and of the command set was most of the CPU each source cost.
    """
    return _encode_request(find_identifier(query, charset), model, syntax, context_id, peer_max_pdu)


def _encode_request(
    identifier: Dataset, model: str, syntax: UID, context_id: int, peer_max_pdu: int
) -> bytes:
    """A C-FIND-RQ (PS3.7 9.3.2.1) as P-DATA-TF PDUs no longer than the peer accepts."""
    encoded = encode(identifier, syntax.is_implicit_VR, syntax.is_little_endian, syntax.is_deflated)
    if encoded is None:
        raise SourceProtocolError("could not encode the C-FIND identifier")
    primitive = C_FIND()
    primitive.MessageID = MESSAGE_ID
    primitive.AffectedSOPClassUID = model
    primitive.Priority = 2  # LOW, as pynetdicom sends it
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


@dataclass(frozen=True, slots=True)
class Found(Generic[R]):
    """The records of one C-FIND, its warnings (each once, in order), and whether it was cut short."""

    records: list[R]
    warnings: tuple[str, ...]
    truncated: bool


async def read_responses(
    link: DimseLink,
    model: str,
    request: bytes,
    deadline: Deadline,
    state: FindState,
    *,
    max_results: int,
    level: Level[R],
) -> Found[R]:
    """Send one C-FIND and read its responses into records, C-CANCELling it past ``max_results``.

    Both pending responses and distinct records are bounded by ``max_results``: a flood of
    responses that add no record is cut as surely as one of records.
    """
    records: dict[str, R] = {}
    warnings: list[str] = []
    truncated = False
    _, syntax = link.contexts[model]
    implicit_vr, readable = _syntax_flags(syntax)
    from_bytes = level.from_bytes if readable else None
    from_dataset = level.from_dataset
    key = level.key
    link.protocol.send(request)
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
                "association aborted by the peer during the C-FIND"
                f" (is {link.settings.calling_ae} registered there?)",
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
            if pending > max_results:  # responses without a new record: a flood
                truncated = True
                warnings.append(f"stopped after {max_results} responses (max_results)")
                break
            data = response.data
            if not data:
                warnings.append("a pending response carried no identifier")
                continue
            try:
                if from_bytes is None:
                    raise Unhandled("no fast path for this level or transfer syntax")
                record = from_bytes(data, implicit_vr, warnings)
            except Unhandled:
                try:
                    answer = link.decode_dataset(data, model)
                except Exception:  # an undecodable identifier is one bad response, not a failed query
                    warnings.append("a pending response could not be decoded")
                    continue
                record = from_dataset(answer, warnings)
            if record is None:
                warnings.append(level.without_uid)
                continue
            records[key(record)] = record
            if len(records) >= max_results:
                truncated = True
                warnings.append(f"stopped after {max_results} {level.noun} (max_results)")
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
    return Found(list(records.values()), tuple(dict.fromkeys(warnings)), truncated)
