"""Every ErrorComment (0000,0902) the DICOM facade sends is whole and at most 64 characters (LO, PS3.5 6.2).

The answerer is the one ``pacsfed serve`` runs (``facade_from_settings``), over a fake service that
fails as the real one can; the last safety net (a longer comment cut at a word) is seen on the wire.
"""

from __future__ import annotations

import ast
import asyncio
from pathlib import Path
from typing import Any, cast

import pytest
from pydicom import config
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind  # type: ignore[attr-defined]

from dicom_facade import DicomFacade, FindAnswer, FindCall, facade_from_settings
from federation.errors import (
    AccessError,
    AuditUnavailable,
    CacheUnavailable,
    ConfigError,
    Overloaded,
    PacsfedError,
    QueryError,
    SourceBusy,
)
from federation.models import SourceInfo, SourceOutcome, SourceStatus
from federation.search import StudySearchResult
from federation.service import HistoryService
from federation.settings import DicomFacadeSettings

STUDY_ROOT = str(StudyRootQueryRetrieveInformationModelFind)
COMMENTS = Path(__file__).resolve().parents[2] / "dicom_facade" / "_comments.py"
LONG = "a message written for GraphQL, where nobody counts: " + "it goes on and on " * 5 + "/var/lib/x"


class FailingService:
    """Raises ``error`` from every search, or answers no study with ``sources``' statuses."""

    def __init__(self) -> None:
        self.error: PacsfedError | None = None
        self.sources: tuple[SourceOutcome, ...] = ()

    async def search_studies(self, *_: Any, **__: Any) -> StudySearchResult:
        if self.error is not None:
            raise self.error
        return StudySearchResult(studies=(), sources=self.sources, complete=not self.sources)


def _answerer(service: FailingService) -> Any:
    settings = DicomFacadeSettings(port=1, ae_title="PACSFED", allowed_calling_aes=["FINDSCU"])
    return facade_from_settings(settings, cast(HistoryService, service)).answer


def _identifier(**keys: str) -> Dataset:
    ds = Dataset()
    with config.disable_value_validation():  # a caller may send what pydicom would not write
        for keyword, value in {"QueryRetrieveLevel": "STUDY", **keys}.items():
            setattr(ds, keyword, value)
    return ds


async def _ask(service: FailingService, calling: str = "FINDSCU", **keys: str) -> FindAnswer:
    answer: FindAnswer = await _answerer(service)(FindCall(_identifier(**keys), STUDY_ROOT, calling, None))
    return answer


def _whole(comment: str | None) -> str:
    assert comment is not None
    assert 0 < len(comment) <= 64, comment
    assert not comment.endswith("..."), f"cut, not written for the facade: {comment!r}"
    return comment


async def test_a_study_search_without_a_patient_says_so_in_one_whole_comment() -> None:
    answer = await _ask(FailingService(), StudyDate="20200101-20251231")
    assert answer.status == 0xC000
    assert _whole(answer.comment) == "a STUDY query needs a PatientID, PatientName, UID or accession"


@pytest.mark.parametrize(
    "keys",
    [
        {"StudyDate": "20200101-"},
        {"PatientName": "*"},
        {"PatientName": "A*"},
        {"PatientID": "P*"},
        {"PatientID": "P1", "IssuerOfPatientID": "A\\B"},
        {"PatientID": "P1", "AccessionNumber": "A?"},
        {"PatientID": "P1", "StudyInstanceUID": "1.2.*"},
        {"PatientID": "P1", "StudyInstanceUID": "1.2.x"},
        {"PatientID": "P1", "StudyDate": "2020"},
        {"QueryRetrieveLevel": "PATIENT", "PatientID": "P1"},
        {"QueryRetrieveLevel": "SERIES", "PatientID": "P1"},
        {"QueryRetrieveLevel": "IMAGE", "StudyInstanceUID": "1.2.3"},
        {"QueryRetrieveLevel": "IMAGE", "StudyInstanceUID": "1.2.3", "SeriesInstanceUID": "1.2.*"},
    ],
)
async def test_each_refused_identifier_gets_a_whole_comment(keys: dict[str, str]) -> None:
    answer = await _ask(FailingService(), **keys)
    assert answer.status == 0xC000
    _whole(answer.comment)


@pytest.mark.parametrize(
    "error",
    [
        QueryError(LONG),
        QueryError(LONG, code="UNKNOWN_SOURCE"),
        AccessError(LONG),
        AuditUnavailable(LONG),
        CacheUnavailable(LONG),
        ConfigError(LONG),
        SourceBusy(LONG),
        Overloaded(LONG),
        PacsfedError(LONG),
    ],
)
async def test_a_failure_of_the_whole_query_is_said_in_the_facade_s_words(error: PacsfedError) -> None:
    service = FailingService()
    service.error = error
    answer = await _ask(service, PatientID="P1")
    assert answer.status in (0xA700, 0xC000)
    assert "/var/lib" not in _whole(answer.comment)


async def test_a_short_service_message_is_kept_as_it_is() -> None:
    service = FailingService()
    service.error = QueryError("unknown source ids: hosp-z", code="UNKNOWN_SOURCE")
    assert (await _ask(service, PatientID="P1")).comment == "unknown source ids: hosp-z"


async def test_a_calling_ae_no_longer_allowed_and_partial_answers_fit() -> None:
    assert _whole((await _ask(FailingService(), calling="GONE", PatientID="P1")).comment)
    service = FailingService()
    service.sources = tuple(
        SourceOutcome(
            source=SourceInfo(id=f"a-hospital-with-a-long-id-{n}", name="H", kind="dimse"),
            status=SourceStatus.UNREACHABLE,
            latency_ms=1,
        )
        for n in range(3)
    )
    answer = await _ask(service, PatientID="P1")
    assert answer.status == 0xB000
    assert _whole(answer.comment) == "partial: 3 of 3 sources did not answer"


def test_every_comment_written_for_the_facade_fits() -> None:
    """The module of comments is read, not imported (another package's private module)."""
    constants = {
        target.id: node.value.value
        for node in ast.parse(COMMENTS.read_text(encoding="utf-8")).body
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
        for target in node.targets
        if isinstance(target, ast.Name) and isinstance(node.value.value, str)
    }
    assert len(constants) >= 10
    assert {name: text for name, text in constants.items() if len(text) > 64} == {}


async def test_a_longer_comment_is_cut_at_a_word_on_the_wire() -> None:
    async def answer(_: FindCall) -> FindAnswer:
        return FindAnswer([], 0xC000, "a comment far too long for ErrorComment, " * 3)

    settings = DicomFacadeSettings(port=1, ae_title="PACSFED", allowed_calling_aes=["FINDSCU"])
    server = DicomFacade(settings.model_copy(update={"port": 0}), answer)

    def scu() -> list[Dataset]:
        ae = AE(ae_title="FINDSCU")
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
        assoc = ae.associate("127.0.0.1", server.port, ae_title="PACSFED")
        statuses = [s for s, _ in assoc.send_c_find(_identifier(PatientID="P1"), STUDY_ROOT)]
        assoc.release()
        return statuses

    await server.start()
    try:
        statuses = await asyncio.to_thread(scu)
    finally:
        await server.stop()
    comment = str(statuses[-1].ErrorComment)
    assert len(comment) <= 64
    assert comment == "a comment far too long for ErrorComment, a comment far too..."
