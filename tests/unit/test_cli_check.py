"""``pacsfed check`` says what it checked, why a source failed, and the cache's state once, without maintaining it.

Real peers on loopback: a pynetdicom Verification SCP, an HTTP server given as a DIMSE source's
port (a common mistake: the PACS's web port), and an Elasticsearch URL where nothing listens.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from fakes import closed_port
from pynetdicom import AE, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    PatientRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelFind,
    Verification,
)

from connectors.base import ConnectorContext
from connectors.dimse import DimseConnector
from connectors.dimse_settings import DimseSourceSettings
from federation.errors import SourceProtocolError
from federation.models import Deadline, SourceInfo, SourceOutcome, SourceStatus
from pacsfed.check_command import source_line
from pacsfed.cli import main


@pytest.fixture
def http_port() -> Iterator[int]:
    """An HTTP server as web servers answer a request they cannot parse: ``HTTP/1.1 400``, then closed."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            with client:
                client.recv(65536)
                client.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join()
        listener.close()


@pytest.fixture
def echo_port() -> Iterator[int]:
    """A peer that echoes but takes no query (Orthanc with ``AllowFind: false`` answers so)."""
    ae = AE(ae_title="ECHOSCP")
    ae.add_supported_context(Verification)
    server = ae.start_server(("127.0.0.1", 0), block=False)
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()


@pytest.fixture
def find_port() -> Iterator[int]:
    """A peer that echoes and answers a C-FIND (with no study: the check's patient is nobody)."""
    ae = AE(ae_title="ECHOSCP")
    for context in (
        Verification,
        StudyRootQueryRetrieveInformationModelFind,
        PatientRootQueryRetrieveInformationModelFind,
    ):
        ae.add_supported_context(context)

    def nothing(event: Any) -> Iterator[tuple[int, None]]:
        yield 0x0000, None

    server = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_FIND, nothing)])
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()


def _dimse(source_id: str, port: int) -> dict[str, object]:
    return {"id": source_id, "kind": "dimse", "host": "127.0.0.1", "port": port, "called_ae": "ECHOSCP"}


async def test_a_dimse_source_at_an_http_port_is_said_not_to_speak_dicom(http_port: int) -> None:
    connector = DimseConnector(
        DimseSourceSettings.model_validate(_dimse("web-port", http_port)), ConnectorContext()
    )
    try:
        with pytest.raises(
            SourceProtocolError, match="does not speak DICOM: it answered like an HTTP server"
        ):
            await connector.ping(Deadline.after(5))
    finally:
        await connector.aclose()


def test_check_says_what_each_ping_was_and_the_cache_once(
    tmp_path: Path,
    echo_port: int,
    find_port: int,
    http_port: int,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    config = {
        "cache": {"backend": "elasticsearch", "url": f"http://127.0.0.1:{closed_port()}"},
        "sources": [
            _dimse("querying", find_port),
            _dimse("echo-only", echo_port),
            _dimse("web-port", http_port),
        ],
    }
    path = tmp_path / "pacsfed.yaml"
    path.write_text(yaml.safe_dump(config))
    caplog.set_level(logging.DEBUG)

    assert main(["check", "--config", str(path)]) == 1

    lines = dict(line.split(maxsplit=1) for line in capsys.readouterr().out.splitlines())
    assert lines["querying"].startswith("OK")
    assert lines["querying"].endswith("ms  C-ECHO and C-FIND answered")
    assert "exams" not in lines["querying"]
    assert lines["echo-only"].startswith("ERROR")  # it would refuse every physician's query
    assert "C-ECHO answered, but the C-FIND failed" in lines["echo-only"]
    assert lines["web-port"].startswith("ERROR")
    assert "does not speak DICOM: it answered like an HTTP server" in lines["web-port"]
    cache = [text for name, text in lines.items() if name == "cache"]
    assert len(cache) == 1
    assert cache[0].startswith("(elasticsearch) UNAVAILABLE")
    assert "did not answer" in cache[0]
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [r for r in warnings if r.name.startswith("elastic")] == []  # one retry, one raw warning
    assert [
        r.getMessage() for r in warnings if "clean" in r.getMessage() or "expired" in r.getMessage()
    ] == []
    assert logging.getLogger("elastic_transport").level != logging.ERROR  # held back for the check only


def test_a_pinged_source_of_another_kind_says_only_that_it_answered() -> None:
    outcome = SourceOutcome(
        source=SourceInfo(id="fhir-a", name="A", kind="fhir"), status=SourceStatus.OK, latency_ms=7
    )
    assert source_line(outcome).split() == ["fhir-a", "OK", "7", "ms", "answered", "its", "ping"]
