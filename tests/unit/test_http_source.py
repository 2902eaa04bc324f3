"""One translation of the failures of both DICOMweb request paths (lean pool, httpx) into source errors."""

from __future__ import annotations

import httpx
import pytest

from connectors.http11 import BodyTooLarge, ConnectionBroken
from connectors.http_source import translated
from federation.errors import (
    ConnectorError,
    SourceAuthError,
    SourceProtocolError,
    SourceTimeout,
    SourceUnreachable,
)

URL = "http://pacs.example/dicom-web/studies?PatientID=PAT-SECRET-1"
REQUEST = httpx.Request("GET", URL)


@pytest.mark.parametrize(
    ("failure", "kind", "message"),
    [
        (BodyTooLarge("answer larger than the limit"), SourceProtocolError, "QIDO answer larger than 16 MiB"),
        (
            SourceTimeout("request timed out (connecting)"),
            SourceTimeout,
            "QIDO request timed out (connecting)",
        ),
        (httpx.ReadTimeout(URL, request=REQUEST), SourceTimeout, "QIDO request timed out"),
        (
            ConnectionBroken("the connection was closed", fresh=False, answered=True),
            SourceProtocolError,
            "QIDO transport error (the connection was closed)",
        ),
        (SourceUnreachable("connection refused"), SourceUnreachable, "connection refused"),
        (
            httpx.ConnectError(URL, request=REQUEST),
            SourceUnreachable,
            "connection refused or host unreachable",
        ),
        (httpx.ProxyError(URL, request=REQUEST), SourceUnreachable, "the proxy did not open a tunnel"),
        (
            httpx.RemoteProtocolError(URL, request=REQUEST),
            SourceProtocolError,
            "QIDO transport error (RemoteProtocolError)",
        ),
    ],
)
def test_each_failure_becomes_one_source_error_without_the_url(
    failure: Exception, kind: type[ConnectorError], message: str
) -> None:
    error = translated(failure, "QIDO", max_body=16 * 1024 * 1024)
    assert type(error) is kind
    assert str(error).startswith(message)
    assert "PAT-SECRET-1" not in str(error)


def test_a_tls_reason_names_the_refusal_on_either_path() -> None:
    reason = "TLS handshake failed: certificate required"
    broken = ConnectionBroken("closed", fresh=True, answered=False)
    assert str(translated(broken, "QIDO", tls_reason=reason)) == reason
    read_error = httpx.ReadError(URL, request=REQUEST)
    assert str(translated(read_error, "QIDO", tls_reason=reason)) == reason


def test_refused_credentials_pass_as_they_are() -> None:
    refused = SourceAuthError("token endpoint refused the client credentials (HTTP 401)")
    assert translated(refused, "QIDO") is refused
