"""WADO-RS forwarded by the DICOMweb connector: to a real Orthanc that asks for credentials, and to a gated origin.

The gated origin (a small fake: a real peer cannot be told to hold its answer back) shows the
streaming property structurally: the first chunk reaches pacsfed's reader while the origin has not
finished sending; and the two bounds (first byte, stall) end a silent or stalled origin.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from peers.orthanc import OrthancPeer
from peers.wadodata import WadoStudy
from wado_fixtures import ORTHANC_USER, orthanc_wado, wado_study

from connectors.base import ConnectorContext
from connectors.dicomweb import DicomwebConnector
from connectors.dicomweb_settings import DicomwebSourceSettings
from federation.errors import SourceAuthError, SourceTimeout
from federation.retrieve import RetrieveRequest, RetrieveStream

__all__ = ["orthanc_wado", "wado_study"]

pytestmark = pytest.mark.integration

PACSFED_ROOT = "https://pacsfed.example/dicom-web"
MULTIPART_DICOM = 'multipart/related; type="application/dicom"'


def _connector(url: str, *, auth: bool = True, **settings: Any) -> DicomwebConnector:
    if auth:
        user, password = ORTHANC_USER
        settings["auth"] = {"type": "basic", "username": user, "password": password}
    return DicomwebConnector(
        DicomwebSourceSettings(id="web", kind="dicomweb", url=url, **settings), ConnectorContext()
    )


def parts(content_type: str, body: bytes) -> list[bytes]:
    """The parts of a multipart/related body (RFC 2046 5.1), each without its headers."""
    boundary = next(
        p.split("=", 1)[1].strip('"') for p in content_type.split(";") if p.strip().startswith("boundary=")
    )
    found = []
    for piece in body.split(b"--" + boundary.encode())[1:]:
        if piece.startswith(b"--"):
            break
        _, _, content = piece.partition(b"\r\n\r\n")
        found.append(content.removesuffix(b"\r\n"))
    return found


async def _read(stream: RetrieveStream) -> bytes:
    try:
        return b"".join([chunk async for chunk in stream.chunks])
    finally:
        await stream.aclose()


async def test_an_instance_comes_through_byte_identical_with_the_sources_credentials(
    orthanc_wado: OrthancPeer, wado_study: WadoStudy
) -> None:
    study, series, sop = wado_study.study_uid, wado_study.series_uid, wado_study.sop_uids[0]
    request = RetrieveRequest(study, f"series/{series}/instances/{sop}", accept=MULTIPART_DICOM)
    connector = _connector(orthanc_wado.dicomweb_url)
    anonymous = _connector(orthanc_wado.dicomweb_url, auth=False)
    try:
        stream = await connector.retrieve(request)
        body = await _read(stream)
        with pytest.raises(SourceAuthError):
            await anonymous.retrieve(request)
        missing = await connector.retrieve(RetrieveRequest("1.2.3.404", accept=MULTIPART_DICOM))
        unnamed = await connector.retrieve(RetrieveRequest(study, f"series/{series}/instances/{sop}"))
        unnamed_body = await _read(unnamed)  # no Accept from the caller: the origin's default
        await missing.aclose()
    finally:
        await connector.aclose()
        await anonymous.aclose()
    assert (stream.status, stream.source_id) == (200, "web")
    assert stream.media_type.startswith("multipart/related")
    assert parts(stream.media_type, body) == [wado_study.paths[0].read_bytes()]
    assert missing.status == 404
    assert parts(unnamed.media_type, unnamed_body) == [wado_study.paths[0].read_bytes()]


async def test_metadata_points_at_pacsfed_and_a_frame_is_its_pixels(
    orthanc_wado: OrthancPeer, wado_study: WadoStudy
) -> None:
    study, series, sop = wado_study.study_uid, wado_study.series_uid, wado_study.sop_uids[1]
    instance = f"series/{series}/instances/{sop}"
    connector = _connector(orthanc_wado.dicomweb_url)
    try:
        metadata = await connector.retrieve(RetrieveRequest(study, "metadata", base_url=PACSFED_ROOT))
        items = json.loads(await _read(metadata))
        frame = await connector.retrieve(
            RetrieveRequest(
                study, f"{instance}/frames/2", accept="multipart/related; type=application/octet-stream"
            )
        )
        frame_body = await _read(frame)
        rendered = await connector.retrieve(
            RetrieveRequest(study, f"{instance}/frames/1/rendered", accept="image/png", query=b"quality=90")
        )
        png = await _read(rendered)
    finally:
        await connector.aclose()
    assert metadata.media_type == "application/dicom+json"
    assert {item["00080018"]["Value"][0] for item in items} == set(wado_study.sop_uids)
    bulk = {item["00080018"]["Value"][0]: item["7FE00010"]["BulkDataURI"] for item in items}
    assert bulk[sop].startswith(f"{PACSFED_ROOT}/studies/{study}/series/{series}/instances/{sop}/")
    assert parts(frame.media_type, frame_body) == [wado_study.frame(1, 2)]
    assert (rendered.status, rendered.media_type, png[:8]) == (200, "image/png", b"\x89PNG\r\n\x1a\n")


class GatedOrigin:
    """An HTTP origin that sends a first chunk, then the rest only once ``release`` is set (or never)."""

    FIRST = b"--B\r\nContent-Type: application/dicom\r\n\r\nfirst"
    REST = b"-rest\r\n--B--"

    def __init__(self, *, silent: bool = False) -> None:
        self.silent = silent
        self.release = asyncio.Event()
        self.finished = False
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> str:
        self._server = await asyncio.start_server(self._answer, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/dicom-web"

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        self.release.set()

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            await reader.readuntil(b"\r\n\r\n")
            if self.silent:
                await self.release.wait()
                return
            writer.write(
                b'HTTP/1.1 200 OK\r\nContent-Type: multipart/related; type="application/dicom"; boundary=B\r\n'
                b"Transfer-Encoding: chunked\r\n\r\n" + _chunk(self.FIRST)
            )
            await writer.drain()
            await self.release.wait()
            writer.write(_chunk(self.REST) + b"0\r\n\r\n")
            await writer.drain()
            self.finished = True
        writer.close()


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


REQUEST = RetrieveRequest("1.2.3", "series/1.2.3.1/instances/1.2.3.1.1", accept=MULTIPART_DICOM)


async def _first(chunks: AsyncIterator[bytes]) -> bytes:
    """The first chunk; a reader that waits for the whole body never gets it (the origin holds the rest)."""
    async with asyncio.timeout(20):  # a guard against hanging, not a timing assertion
        return await anext(chunks)


async def test_the_first_chunk_is_passed_on_before_the_origin_has_finished() -> None:
    origin = GatedOrigin()
    async with origin as url:
        connector = _connector(url, auth=False)
        try:
            stream = await connector.retrieve(REQUEST)
            first = await _first(stream.chunks)
            finished_when_first_arrived = origin.finished
            origin.release.set()
            rest = await _read(stream)
        finally:
            await connector.aclose()
    assert (first, finished_when_first_arrived) == (GatedOrigin.FIRST, False)
    assert rest == GatedOrigin.REST and origin.finished


async def test_a_silent_origin_ends_at_the_first_byte_bound_and_a_stalled_one_at_the_stall_bound() -> None:
    async with GatedOrigin(silent=True) as url:
        connector = _connector(url, auth=False, retrieve_first_byte_s=0.3)
        try:
            with pytest.raises(SourceTimeout, match="no answer"):
                await connector.retrieve(REQUEST)
        finally:
            await connector.aclose()
    async with GatedOrigin() as url:
        connector = _connector(url, auth=False, retrieve_stall_s=0.3)
        try:
            stream = await connector.retrieve(REQUEST)
            with pytest.raises(SourceTimeout):
                await _read(stream)
        finally:
            await connector.aclose()
