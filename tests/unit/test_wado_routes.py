"""The WADO-RS routes: which paths are WADO's, what the service is asked, DICOMweb statuses for failures."""

from __future__ import annotations

import types
from collections.abc import AsyncIterator
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.testclient import TestClient

from federation.access.principals import AccessContext, development_principal
from federation.errors import (
    AccessError,
    AuditUnavailable,
    AuthenticationError,
    Overloaded,
    PacsfedError,
    QueryError,
    SourceBusy,
    SourceSkipped,
    SourceTimeout,
    SourceUnreachable,
)
from federation.retrieve import RetrieveRequest, RetrieveStream
from web.dicomweb.wado import wado_routes

STUDY = "1.2.840.5"
INSTANCE = f"/dicom-web/studies/{STUDY}/series/1.2.6/instances/1.2.7"


class FakeDoors:
    """``services.access`` and ``services.history`` at once: records what it is asked, answers what it is told."""

    def __init__(self) -> None:
        self.asked: list[RetrieveRequest] = []
        self.channels: list[str] = []
        self.failure: PacsfedError | None = None
        self.closed = False

    async def access_for(self, connection: Any, channel: str) -> AccessContext:
        self.channels.append(channel)
        if isinstance(self.failure, AuthenticationError):
            raise self.failure
        return AccessContext(development_principal(), None, "req-1", channel)

    async def retrieve(self, request: RetrieveRequest, access: AccessContext) -> RetrieveStream:
        self.asked.append(request)
        if self.failure is not None:
            raise self.failure
        return RetrieveStream(
            200, "multipart/related; boundary=x", "a", self._body(), {"content-length": "6"}, self._release
        )

    async def _body(self) -> AsyncIterator[bytes]:
        yield b"abc"
        yield b"def"

    async def _release(self) -> None:
        self.closed = True


@pytest.fixture
def doors() -> FakeDoors:
    return FakeDoors()


@pytest.fixture
def client(doors: FakeDoors) -> TestClient:
    app = Starlette(routes=[Mount("/dicom-web", routes=wado_routes())])
    app.state.services = types.SimpleNamespace(access=doors, history=doors)
    return TestClient(app, base_url="https://pacsfed.example:8443")


@pytest.mark.parametrize(
    "path",
    [
        "",
        "/metadata",
        "/rendered",
        "/series/1.2.6",
        "/series/1.2.6/metadata",
        "/series/1.2.6/instances/1.2.7",
        "/series/1.2.6/instances/1.2.7/metadata",
        "/series/1.2.6/instances/1.2.7/frames/1,3",
        "/series/1.2.6/instances/1.2.7/frames/2/rendered",
        "/series/1.2.6/instances/1.2.7/bulk/7fe00010",
        "/series/1.2.6/instances/1.2.7/bulkdata/00091001/1",
    ],
)
def test_every_wado_path_is_forwarded_below_its_study(
    client: TestClient, doors: FakeDoors, path: str
) -> None:
    answer = client.get(f"/dicom-web/studies/{STUDY}{path}?quality=80", headers={"Accept": "image/png"})
    assert answer.status_code == 200 and answer.content == b"abcdef"
    assert answer.headers["content-type"] == "multipart/related; boundary=x"
    assert answer.headers["content-length"] == "6" and doors.closed
    (asked,) = doors.asked
    assert (asked.study_instance_uid, asked.resource, asked.accept) == (STUDY, path.lstrip("/"), "image/png")
    assert asked.base_url == "https://pacsfed.example:8443/dicom-web"
    assert asked.query == (b"quality=80" if path.endswith("rendered") else b"")
    assert doors.channels == ["dicomweb"]


def test_metadata_links_start_with_the_public_url_when_one_is_set(
    client: TestClient, doors: FakeDoors
) -> None:
    client.app.state.public_url = "https://images.example.org/pacsfed/"  # type: ignore[attr-defined]
    assert client.get(f"/dicom-web/studies/{STUDY}/metadata", headers={"host": "10.0.0.7"}).status_code == 200
    assert doors.asked[0].base_url == "https://images.example.org/pacsfed/dicom-web"


@pytest.mark.parametrize(
    "path",
    [
        f"/dicom-web/studies/{STUDY}/series",
        f"/dicom-web/studies/{STUDY}/series/1.2.6/instances",
        "/dicom-web/studies",
    ],
)
def test_qido_paths_are_left_to_qido(client: TestClient, doors: FakeDoors, path: str) -> None:
    assert client.get(path).status_code == 404 and not doors.asked


def test_a_malformed_uid_is_a_400_before_anyone_is_asked(client: TestClient, doors: FakeDoors) -> None:
    assert client.get("/dicom-web/studies/1.2.x/metadata").status_code == 400
    # Dot segments would leave the study (and the caller's authorization) at the origin.
    assert client.get(f"{INSTANCE}/bulk/%2E%2E/%2E%2E/%2E%2E/%2E%2E/instances/x/file").status_code == 400
    assert client.get(f"{INSTANCE}/bulkdata/a/%2E").status_code == 400
    assert client.get(f"/dicom-web/studies/{STUDY}/series/1.2.6/instances/1.2.7/frames/x").status_code == 400
    assert not doors.asked and not doors.channels


@pytest.mark.parametrize(
    ("failure", "status", "header"),
    [
        (AuthenticationError("no credentials"), 401, ("www-authenticate", 'Bearer realm="pacsfed"')),
        (AccessError("not this study"), 403, None),
        (QueryError("no source holds it", code="NOT_FOUND"), 404, None),
        (SourceUnreachable("connection refused"), 502, None),
        (SourceTimeout("no answer within 30 s"), 504, None),
        (Overloaded("too many", retry_after_s=3), 503, ("retry-after", "3")),
        (AuditUnavailable("journal full"), 503, ("retry-after", "5")),
        (SourceSkipped("hosp-a: circuit open", retry_after_s=42), 503, ("retry-after", "42")),
        (SourceBusy("hosp-a: no slot", retry_after_s=1), 503, ("retry-after", "1")),
    ],
)
def test_failures_are_dicomweb_statuses(
    client: TestClient, doors: FakeDoors, failure: PacsfedError, status: int, header: tuple[str, str] | None
) -> None:
    doors.failure = failure
    answer = client.get(INSTANCE)
    assert answer.status_code == status
    if header is not None:
        assert answer.headers[header[0]] == header[1]
    if isinstance(failure, SourceSkipped | SourceBusy):  # not asked now: said apart from a source's failure
        assert answer.json()["error"]["code"] == failure.code
