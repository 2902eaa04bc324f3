"""The floor of the DIMSE fan-out: a raw asyncio C-FIND client, no pacsfed code.

One association per simulated PACS, opened once and kept; a query sends one C-FIND-RQ on each
and reads its pending responses until the final one, decoding each identifier with pydicom
(``pynetdicom.dsutils.decode``) and reading its StudyInstanceUID — the DIMSE counterpart of
``bench/fanout.py``'s bare requests that ``json.loads`` their answer, nothing else. The
association accept is decoded by pynetdicom's PDU codec; the rest is ``bench/_dimse_wire``.
"""

from __future__ import annotations

import asyncio
from io import BytesIO

from pydicom.dataset import Dataset
from pynetdicom.dsutils import decode, encode
from pynetdicom.pdu import A_ASSOCIATE_AC

from bench._dimse_wire import (
    ASSOCIATE_AC,
    ASSOCIATE_RQ,
    DATA_SET_TYPE,
    IMPLICIT_LE,
    NO_DATA_SET,
    P_DATA_TF,
    PENDING,
    RELEASE_RP,
    RELEASE_RQ,
    STATUS,
    STUDY_ROOT_FIND,
    PduReader,
    associate,
    find_request,
    message,
    pdu,
    pdvs,
    requested_context,
    us_fields,
)

_CONTEXT_ID = 1
_RETURN_KEYS = (
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "ModalitiesInStudy",
    "StudyDescription",
    "PatientName",
    "PatientBirthDate",
    "PatientSex",
    "NumberOfStudyRelatedSeries",
    "NumberOfStudyRelatedInstances",
)


def study_identifier(patient_id: str) -> bytes:
    """A STUDY-level C-FIND identifier for one patient, in Implicit VR Little Endian."""
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    ds.PatientID = patient_id
    for keyword in _RETURN_KEYS:
        setattr(ds, keyword, "")
    encoded = encode(ds, True, True)
    assert encoded is not None
    return encoded


class FloorAssociation(asyncio.Protocol):
    """One association to one PACS, kept open, one C-FIND at a time."""

    def __init__(self) -> None:
        self._reader = PduReader()
        self._transport: asyncio.Transport | None = None
        self._accepted: asyncio.Future[bytes] | None = None
        self._done: asyncio.Future[list[str]] | None = None
        self._studies: list[str] = []
        self._command = b""
        self._data = b""
        self._expect_data = False
        self._message_id = 0

    @classmethod
    async def open(cls, host: str, port: int, called_ae: str) -> FloorAssociation:
        """Connect and negotiate Study Root C-FIND in Implicit VR Little Endian."""
        loop = asyncio.get_running_loop()
        _, association = await loop.create_connection(cls, host, port)
        association._accepted = loop.create_future()
        context = requested_context(_CONTEXT_ID, STUDY_ROOT_FIND, [IMPLICIT_LE])
        assert association._transport is not None
        association._transport.write(associate(ASSOCIATE_RQ, called_ae, "FLOOR", [context], 1 << 16))
        accept = A_ASSOCIATE_AC()
        accept.decode(await association._accepted)
        results = [(c.context_id, c.result) for c in accept.presentation_context]
        if results != [(_CONTEXT_ID, 0)]:
            raise RuntimeError(f"the simulated PACS refused the context: {results}")
        return association

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        for kind, body in self._reader.feed(data):
            if kind == P_DATA_TF:
                self._p_data(body)
            elif kind == ASSOCIATE_AC and self._accepted is not None:
                self._accepted.set_result(pdu(kind, body))
            elif kind == RELEASE_RP and self._transport is not None:
                self._transport.close()
            else:
                self._fail(RuntimeError(f"unexpected PDU type {kind}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(ConnectionError("the association was closed"))

    def _fail(self, exc: Exception) -> None:
        for future in (self._accepted, self._done):
            if future is not None and not future.done():
                future.set_exception(exc)

    def _p_data(self, body: bytes) -> None:
        for _, control, payload in pdvs(body):
            if control & 1:
                self._command += payload
                if not control & 2:
                    continue
                fields = us_fields(self._command)
                self._command = b""
                if fields[STATUS] in (PENDING, 0xFF01):
                    self._expect_data = fields.get(DATA_SET_TYPE) != NO_DATA_SET
                elif self._done is not None:
                    self._done.set_result(self._studies)
            elif self._expect_data:
                self._data += payload
                if control & 2:
                    self._expect_data = False
                    identifier, self._data = decode(BytesIO(self._data), True, True), b""
                    self._studies.append(str(identifier.StudyInstanceUID))

    async def find(self, identifier: bytes) -> list[str]:
        """One C-FIND: the StudyInstanceUIDs of its pending responses."""
        assert self._transport is not None
        self._message_id += 1
        self._studies = []
        self._done = asyncio.get_running_loop().create_future()
        self._transport.write(message(_CONTEXT_ID, find_request(self._message_id), identifier))
        return await self._done

    async def release(self) -> None:
        """Release the association (A-RELEASE), and close."""
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(pdu(RELEASE_RQ, bytes(4)))
            await asyncio.sleep(0)
            self._transport.close()
