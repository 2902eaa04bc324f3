"""Reading a C-FIND's responses: status categories (PS3.4 C.4.1.1.4) turned into an answer or an error.

pynetdicom yields an empty status on a DIMSE timeout, an abort or a lost connection, not an
exception: each is told apart here, so a dead PACS never looks like "no exams".
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable

from pydicom.dataset import Dataset
from pynetdicom.association import Association
from pynetdicom.status import code_to_category

from connectors._dimse_association import MESSAGE_ID, AssociationWatch
from connectors._dimse_socket import READ_FAULTS
from connectors.base import SourceAnswer
from federation.errors import SourceProtocolError, SourceTimeout
from federation.models import Deadline, StudyRecord


def collect_studies(
    assoc: Association,
    model: str,
    identifier: Dataset,
    deadline: Deadline,
    watch: AssociationWatch,
    *,
    max_results: int,
    calling_ae: str,
    to_record: Callable[[Dataset], StudyRecord | None],
) -> SourceAnswer:
    """Send one C-FIND and read its responses into records, C-CANCELling it past ``max_results``."""
    records: dict[str, StudyRecord] = {}
    warnings: list[str] = []
    truncated = False
    try:
        responses = assoc.send_c_find(identifier, model, msg_id=MESSAGE_ID)
        watch.find_model = model
    except ValueError as exc:
        raise SourceProtocolError("could not encode the C-FIND identifier") from exc
    except RuntimeError as exc:  # the association ended between its check and its use
        raise SourceProtocolError("association closed by the peer before the C-FIND") from exc
    last_message_at = time.monotonic()
    pending = 0
    for status, answer in responses:
        if watch.cancelled.is_set():
            raise SourceTimeout("query abandoned at the deadline")
        if not status or "Status" not in status:
            fault = READ_FAULTS.get(assoc)
            if fault is not None:
                raise SourceProtocolError(fault)
            # pynetdicom yields an empty status on DIMSE timeout, abort or connection loss;
            # only a timeout comes after the DIMSE timeout has run out.
            waited = time.monotonic() - last_message_at
            if deadline.expired or waited >= (assoc.dimse_timeout or 0.0) * 0.9:
                raise SourceTimeout(f"no C-FIND response within {waited:.1f} s")
            raise SourceProtocolError(
                f"association aborted by the peer during the C-FIND (is {calling_ae} registered there?)"
            )
        last_message_at = time.monotonic()
        code = int(status.Status)
        category = code_to_category(code)
        if category == "Pending":
            pending += 1
            if pending > max_results:  # responses without a new study: a flood
                truncated = True
                warnings.append(f"stopped after {max_results} responses (max_results)")
                with contextlib.suppress(Exception):
                    assoc.send_c_cancel(MESSAGE_ID, query_model=model)
                break
            if answer is None:
                warnings.append("a pending response carried no identifier")
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
                with contextlib.suppress(Exception):
                    assoc.send_c_cancel(MESSAGE_ID, query_model=model)
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
    return SourceAnswer(
        records=list(records.values()),
        warnings=tuple(dict.fromkeys(warnings)),
        truncated=truncated,
    )
