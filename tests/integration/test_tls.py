"""Transport security to the peers: DICOM TLS, mutual TLS and OAuth 2.0 on DICOMweb, HTTP/2.

Every certificate comes from a throw-away CA made here (``peers.pki``).

- DICOM TLS (PS3.15 B.12): a real Orthanc with ``DicomTlsEnabled`` and client certificates
  required. Orthanc 1.10.1 has no minimum-version setting for DICOM TLS and, left alone, accepts
  a TLS 1.1 handshake; it is run here as a hardened PACS would be, under an OpenSSL policy
  (``OPENSSL_CONF`` with ``MinProtocol = TLSv1.2``), and then refuses TLS 1.1. Our own refusal
  of a TLS 1.1 peer is tested against a TLS 1.1-only server.
- HTTPS: Orthanc 1.10.1's HTTPS server (civetweb) was seen to crash (SIGSEGV in a
  civetweb worker) on the first HTTPS request on Debian 12 (OpenSSL 3), so HTTPS is served by
  Hypercorn: a gateway requiring client certificates (mutual TLS) and bearer tokens in front
  of a real Orthanc, whose Lua ``IncomingHttpRequestFilter`` checks the bearer token again;
  the token endpoint (OAuth 2.0 client credentials, RFC 6749 4.4) is a fake on the gateway.
- HTTP/2: the demo's simulated QIDO-RS app served by Hypercorn over TLS (ALPN h2).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import socket
import ssl
import threading
import warnings
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
from hypercorn.asyncio import serve
from hypercorn.config import Config
from peers import OrthancPeer, free_port
from peers.dicomdata import CATALOGUE, ORTHANC_A, files_for_peer
from peers.forward_proxy import ForwardProxy
from peers.pki import Pki, make_pki
from pydicom.dataset import Dataset
from pynetdicom import AE, evt
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind  # type: ignore[attr-defined]
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.types import Receive, Scope, Send

from connectors.base import ConnectorContext
from connectors.dicomweb import DicomwebConnector
from connectors.dicomweb_settings import DicomwebSourceSettings
from connectors.dimse import DimseConnector
from connectors.dimse_settings import DimseSourceSettings
from federation.engine.engine import FederationEngine
from federation.engine.request import HistoryRequest
from federation.errors import (
    ConfigError,
    ConnectorError,
    SourceAuthError,
    SourceUnreachable,
)
from federation.models import Deadline, Freshness, PatientQuery, SourceStatus, StudyQuery
from pacsfed.demo import demo_studies
from pacsfed.demo.qido_peer import create_qido_app

pytestmark = pytest.mark.integration

AET = "HOSPTLS"
CLIENT_ID = "pacsfed-client"
CLIENT_SECRET = "cl1ent-s3cret-value"
PA_001 = CATALOGUE.study_uids(peer=ORTHANC_A, patient_id="PA-001")


# -- peers -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


_BEARER_FILTER = """
function IncomingHttpRequestFilter(method, uri, ip, username, httpHeaders)
  if string.sub(uri, 1, 10) ~= "/dicom-web" then
    return true
  end
  local auth = httpHeaders["authorization"]
  return auth ~= nil and string.sub(auth, 1, 13) == "Bearer token-"
end
"""


_OPENSSL_POLICY = """\
openssl_conf = openssl_init
[openssl_init]
ssl_conf = ssl_sect
[ssl_sect]
system_default = system_default_sect
[system_default_sect]
MinProtocol = TLSv1.2
CipherString = DEFAULT:@SECLEVEL=2
"""
"""The OpenSSL policy Orthanc runs under: Orthanc 1.10.1 has no DICOM TLS minimum version of its own."""


@pytest.fixture(scope="module")
def orthanc_tls(
    pki: Pki, tmp_path_factory: pytest.TempPathFactory, dicom_files: dict[str, list[Path]]
) -> Iterator[OrthancPeer]:
    """Orthanc with DICOM TLS (client certificate required) and a Lua bearer-token check on /dicom-web."""
    workdir = tmp_path_factory.mktemp("orthanc-tls")
    lua = workdir / "bearer.lua"
    lua.write_text(_BEARER_FILTER, encoding="utf-8")
    openssl_policy = workdir / "openssl.cnf"
    openssl_policy.write_text(_OPENSSL_POLICY, encoding="ascii")
    peer = OrthancPeer(
        AET,
        workdir / "orthanc",
        env={"OPENSSL_CONF": str(openssl_policy)},
        extra_config={
            "DicomTlsEnabled": True,
            "DicomTlsCertificate": str(pki.server_cert),
            "DicomTlsPrivateKey": str(pki.server_key),
            "DicomTlsTrustedCertificates": str(pki.ca_cert),
            "DicomTlsRemoteCertificateRequired": True,
            "LuaScripts": [str(lua)],
        },
    )
    try:
        peer.start()
        peer.upload(files_for_peer(dicom_files, ORTHANC_A))
        yield peer
    finally:
        peer.close()


class TlsAsgiServer:
    """An ASGI app served by Hypercorn over TLS (HTTP/2 through ALPN) on a free loopback port."""

    def __init__(self, app: Any, pki: Pki, *, client_certificate: bool = False) -> None:
        self.port = free_port()
        self.config = Config()
        self.config.bind = [f"127.0.0.1:{self.port}"]
        self.config.certfile = str(pki.server_cert)
        self.config.keyfile = str(pki.server_key)
        self.config.graceful_timeout = 0.2
        self.config.errorlog = None
        if client_certificate:
            self.config.ca_certs = str(pki.ca_cert)
            self.config.verify_mode = ssl.CERT_REQUIRED
        self._app = app
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    async def __aenter__(self) -> TlsAsgiServer:
        self._task = asyncio.create_task(serve(self._app, self.config, shutdown_trigger=self._stop.wait))
        for _ in range(500):
            with contextlib.suppress(OSError):
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
                writer.close()
                return self
            await asyncio.sleep(0.01)
        raise RuntimeError("Hypercorn did not start")

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()
        if self._task is not None:
            await asyncio.wait_for(self._task, 10)


class TokenEndpoint:
    """A fake OAuth 2.0 token endpoint: client credentials grant, tokens ``token-1``, ``token-2``…"""

    def __init__(self, *, expires_in: int = 3600, delay_s: float = 0.0) -> None:
        self.expires_in = expires_in
        self.delay_s = delay_s
        self.issued: list[str] = []
        self.revoked: set[str] = set()
        self.grants: list[dict[str, list[str]]] = []

    def valid(self, authorization: str) -> bool:
        token = authorization.removeprefix("Bearer ")
        return authorization.startswith("Bearer ") and token in self.issued and token not in self.revoked

    async def endpoint(self, request: Request) -> Response:
        expected = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
        form = parse_qs((await request.body()).decode())
        self.grants.append(form)
        if request.headers.get("authorization") != f"Basic {expected}":
            return JSONResponse({"error": "invalid_client", "error_description": "bad secret"}, 401)
        if form.get("grant_type") != ["client_credentials"]:
            return JSONResponse({"error": "unsupported_grant_type"}, 400)
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        token = f"token-{len(self.issued) + 1}"
        self.issued.append(token)
        body = {"access_token": token, "token_type": "Bearer", "expires_in": self.expires_in}
        return JSONResponse(body, headers={"Cache-Control": "no-store"})


def gateway_app(orthanc_url: str, tokens: TokenEndpoint, versions: list[str]) -> Starlette:
    """Mutual-TLS gateway: ``POST /token``, and ``/dicom-web/…`` proxied to Orthanc with a valid bearer token."""

    async def proxy(request: Request) -> Response:
        versions.append(request.scope["http_version"])
        authorization = request.headers.get("authorization", "")
        if not tokens.valid(authorization):
            return JSONResponse(
                {"error": "invalid_token"}, 401, headers={"WWW-Authenticate": 'Bearer error="invalid_token"'}
            )
        async with httpx.AsyncClient() as client:
            upstream = await client.get(
                f"{orthanc_url}{request.url.path}",
                params=list(request.query_params.multi_items()),
                headers={"Authorization": authorization, "Accept": request.headers.get("accept", "*/*")},
            )
        return Response(
            upstream.content, upstream.status_code, media_type=upstream.headers.get("content-type")
        )

    return Starlette(
        routes=[Route("/token", tokens.endpoint, methods=["POST"]), Route("/dicom-web/{rest:path}", proxy)]
    )


# -- connectors ----------------------------------------------------------------------------
def dimse(peer: OrthancPeer, **settings: Any) -> DimseConnector:
    return DimseConnector(
        DimseSourceSettings(
            id="tls", kind="dimse", host=peer.host, port=peer.dicom_port, called_ae=peer.aet, **settings
        ),
        ConnectorContext(),
    )


def dicomweb(url: str, **settings: Any) -> DicomwebConnector:
    return DicomwebConnector(
        DicomwebSourceSettings(id="web", kind="dicomweb", url=url, **settings), ConnectorContext()
    )


def mtls(pki: Pki, **extra: Any) -> dict[str, Any]:
    return {"ca_file": pki.ca_cert, "cert_file": pki.client_cert, "key_file": pki.client_key, **extra}


def oauth2(token_url: str, secret: str = CLIENT_SECRET) -> dict[str, Any]:
    return {
        "type": "oauth2",
        "token_url": token_url,
        "client_id": CLIENT_ID,
        "client_secret": secret,
        "scope": "qido",
    }


def uids(answer: Any) -> set[str]:
    return {r.study_instance_uid for r in answer.records}


# -- DICOM TLS -----------------------------------------------------------------------------
async def test_dimse_over_tls_with_a_client_certificate(orthanc_tls: OrthancPeer, pki: Pki) -> None:
    connector = dimse(orthanc_tls, tls=mtls(pki))
    try:
        for _ in range(3):  # the second and third queries reuse the pooled TLS association
            answer = await connector.find_studies(StudyQuery(patient_id="PA-001"), Deadline.after(10))
            assert uids(answer) == PA_001
        assert len(connector._pool) == 1
        await connector.ping(Deadline.after(5))
    finally:
        await connector.aclose()


async def test_dimse_tls_1_3_only(orthanc_tls: OrthancPeer, pki: Pki) -> None:
    connector = dimse(orthanc_tls, tls=mtls(pki, min_version="1.3"))
    try:
        answer = await connector.find_studies(StudyQuery(patient_id="PA-001"), Deadline.after(10))
    finally:
        await connector.aclose()
    assert uids(answer) == PA_001


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("untrusted client certificate", "the peer refused our client certificate"),
        ("no client certificate", "the peer refused our client certificate"),
        ("unknown server CA", "certificate verify failed"),
        ("wrong server name", "certificate verify failed"),
    ],
)
async def test_dimse_tls_refusals_are_clean_source_errors(
    orthanc_tls: OrthancPeer, pki: Pki, case: str, expected: str
) -> None:
    tls = {
        "untrusted client certificate": mtls(
            pki, cert_file=pki.untrusted_client_cert, key_file=pki.untrusted_client_key
        ),
        "no client certificate": {"ca_file": pki.ca_cert},
        "unknown server CA": mtls(pki, ca_file=pki.untrusted_ca_cert),
        "wrong server name": mtls(pki, server_hostname="pacs.example.org"),
    }[case]
    connector = dimse(orthanc_tls, tls=tls)
    try:
        with pytest.raises(SourceUnreachable, match="TLS handshake failed") as raised:
            await connector.find_studies(StudyQuery(patient_id="PA-001"), Deadline.after(5))
    finally:
        await connector.aclose()
    assert expected in str(raised.value)
    assert "PA-001" not in str(raised.value)


async def test_the_engine_reports_a_refused_certificate_as_unreachable(
    orthanc_tls: OrthancPeer, pki: Pki
) -> None:
    trusted = dimse(orthanc_tls, tls=mtls(pki))
    intruder = DimseConnector(
        DimseSourceSettings(
            id="intruder",
            kind="dimse",
            host=orthanc_tls.host,
            port=orthanc_tls.dicom_port,
            called_ae=AET,
            tls=mtls(pki, cert_file=pki.untrusted_client_cert, key_file=pki.untrusted_client_key),
        ),
        ConnectorContext(),
    )
    engine = FederationEngine([trusted, intruder], None)
    try:
        history = await engine.patient_history(
            PatientQuery(patient_id="PA-001"), HistoryRequest(deadline_ms=5000, freshness=Freshness.LIVE)
        )
    finally:
        await engine.aclose()
    status = {outcome.source.id: outcome for outcome in history.sources}
    assert status["tls"].status is SourceStatus.OK
    assert status["intruder"].status is SourceStatus.UNREACHABLE
    assert "TLS handshake failed" in (status["intruder"].error or "")


def _at_most_tls_1_1(context: ssl.SSLContext) -> None:
    """TLS 1.0 to 1.1 only, with SECLEVEL=0: OpenSSL 3 would not even offer them otherwise."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the point of the test
        context.minimum_version = ssl.TLSVersion.TLSv1
        context.maximum_version = ssl.TLSVersion.TLSv1_1
    context.set_ciphers("DEFAULT:@SECLEVEL=0")


def _tls_1_1_client(pki: Pki) -> ssl.SSLContext:
    """A client that offers TLS 1.1 at most (SECLEVEL=0, or OpenSSL 3 would not even offer it)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    _at_most_tls_1_1(context)
    context.load_cert_chain(pki.client_cert, pki.client_key)
    return context


def test_orthanc_dicom_tls_refuses_a_tls_1_1_client(orthanc_tls: OrthancPeer, pki: Pki) -> None:
    context = _tls_1_1_client(pki)
    with (
        pytest.raises(ssl.SSLError),
        socket.create_connection((orthanc_tls.host, orthanc_tls.dicom_port), timeout=5) as raw,
    ):
        context.wrap_socket(raw).close()


@contextlib.contextmanager
def tls_1_1_only_server(pki: Pki) -> Iterator[int]:
    """A TLS server that speaks TLS 1.1 at most: what an outdated PACS would offer."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    _at_most_tls_1_1(context)
    context.load_cert_chain(pki.server_cert, pki.server_key)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()
    offered: list[str] = []

    def run() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn, contextlib.suppress(OSError):
                conn.settimeout(2)
                with context.wrap_socket(conn, server_side=True) as tls:
                    offered.append(str(tls.version()))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield int(listener.getsockname()[1])
    finally:
        stop.set()
        thread.join(5)
        listener.close()
    assert offered == [], "no handshake may have succeeded"


async def test_our_connectors_refuse_a_tls_1_1_peer(pki: Pki) -> None:
    with tls_1_1_only_server(pki) as port:
        dimse_connector = DimseConnector(
            DimseSourceSettings(
                id="old", kind="dimse", host="127.0.0.1", port=port, called_ae="OLDPACS", tls=mtls(pki)
            ),
            ConnectorContext(),
        )
        web_connector = dicomweb(f"https://127.0.0.1:{port}/dicom-web", tls=mtls(pki))
        try:
            for connector in (dimse_connector, web_connector):
                with pytest.raises(SourceUnreachable, match="TLS handshake failed") as raised:
                    await connector.find_studies(StudyQuery(patient_id="PA-001"), Deadline.after(5))
                assert "version" in str(raised.value) or "protocol" in str(raised.value)
        finally:
            await dimse_connector.aclose()
            await web_connector.aclose()


# -- User Identity over TLS ------------------------------------------------------------------
@contextlib.contextmanager
def identity_checking_scp(pki: Pki, seen: list[tuple[int, bytes, bytes | None]]) -> Iterator[int]:
    """A pynetdicom Study Root FIND SCP over TLS 1.2+ that checks User Identity (PS3.7 D.3.3.7)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(pki.server_cert, pki.server_key)
    context.load_verify_locations(pki.ca_cert)
    context.verify_mode = ssl.CERT_REQUIRED

    def user_id(event: Any) -> tuple[bool, bytes | None]:
        seen.append((event.user_id_type, event.primary_field, event.secondary_field))
        if event.user_id_type == 5:  # a JWT: confirmed with a server response only when it is "jwt-ok"
            return True, (b"welcome" if event.primary_field == b"jwt-ok" else None)
        ok = event.primary_field == b"radiology" and event.secondary_field == b"pw-s3cret"
        return ok, None

    def find(event: Any) -> Iterator[tuple[int, Dataset | None]]:
        answer = Dataset()
        answer.QueryRetrieveLevel = "STUDY"
        answer.PatientID = "ID-1"
        answer.StudyInstanceUID = "1.2.3.4"
        yield 0xFF00, answer

    ae = AE(ae_title="IDPACS")
    ae.add_supported_context(StudyRootQueryRetrieveInformationModelFind)
    port = free_port()
    server = ae.start_server(
        ("127.0.0.1", port),
        block=False,
        ssl_context=context,
        evt_handlers=[(evt.EVT_USER_ID, user_id), (evt.EVT_C_FIND, find)],
    )
    try:
        yield port
    finally:
        server.shutdown()


async def test_user_identity_is_negotiated_over_tls_and_never_logged(
    pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    seen: list[tuple[int, bytes, bytes | None]] = []
    with identity_checking_scp(pki, seen) as port:

        def source(password: str) -> DimseConnector:
            return DimseConnector(
                DimseSourceSettings(
                    id="ident",
                    kind="dimse",
                    host="127.0.0.1",
                    port=port,
                    called_ae="IDPACS",
                    tls=mtls(pki),
                    user_identity={
                        "type": "username_password",
                        "primary": "radiology",
                        "secondary": password,
                        "positive_response": True,
                    },
                ),
                ConnectorContext(),
            )

        def jwt_source(token: str) -> DimseConnector:
            return DimseConnector(
                DimseSourceSettings(
                    id="jwt",
                    kind="dimse",
                    host="127.0.0.1",
                    port=port,
                    called_ae="IDPACS",
                    tls=mtls(pki),
                    user_identity={"type": "jwt", "primary": token, "positive_response": True},
                ),
                ConnectorContext(),
            )

        right, wrong = source("pw-s3cret"), source("pw-wr0ng")
        confirmed, unconfirmed = jwt_source("jwt-ok"), jwt_source("jwt-unknown")
        try:
            answer = await right.find_studies(StudyQuery(patient_id="ID-1"), Deadline.after(5))
            assert uids(answer) == {"1.2.3.4"}
            with pytest.raises(ConnectorError):  # the SCP rejects the association
                await wrong.find_studies(StudyQuery(patient_id="ID-1"), Deadline.after(5))
            answer = await confirmed.find_studies(StudyQuery(patient_id="ID-1"), Deadline.after(5))
            assert uids(answer) == {"1.2.3.4"}
            with pytest.raises(SourceAuthError, match="did not confirm"):
                await unconfirmed.find_studies(StudyQuery(patient_id="ID-1"), Deadline.after(5))
        finally:
            for connector in (right, wrong, confirmed, unconfirmed):
                await connector.aclose()
    assert seen[0] == (2, b"radiology", b"pw-s3cret")
    assert "pw-s3cret" not in caplog.text
    assert "pw-wr0ng" not in caplog.text
    assert "pw-s3cret" not in repr(right.settings)


def test_user_identity_requires_tls() -> None:
    with pytest.raises(ValueError, match="only sent over TLS"):
        DimseSourceSettings(
            id="x",
            kind="dimse",
            host="127.0.0.1",
            port=104,
            called_ae="X",
            user_identity={"type": "username", "primary": "radiology"},
        )


def test_unreadable_tls_files_are_config_errors_without_their_content(pki: Pki, tmp_path: Path) -> None:
    missing = tmp_path / "missing.pem"
    with pytest.raises(ConfigError, match="not found"):
        DimseConnector(
            DimseSourceSettings(
                id="x", kind="dimse", host="h", port=104, called_ae="X", tls={"ca_file": missing}
            ),
            ConnectorContext(),
        )
    # A key that does not belong to the certificate: the error names the file, not the key.
    with pytest.raises(ConfigError) as raised:
        dicomweb("https://127.0.0.1:1", tls=mtls(pki, key_file=pki.untrusted_client_key))
    assert "BEGIN" not in str(raised.value)
    assert str(pki.client_cert) in str(raised.value)


# -- DICOMweb: mutual TLS, OAuth 2.0, HTTP/2 -----------------------------------------------
@contextlib.asynccontextmanager
async def gateway(
    orthanc: OrthancPeer, pki: Pki, tokens: TokenEndpoint, versions: list[str]
) -> AsyncIterator[TlsAsgiServer]:
    app = gateway_app(orthanc.http_url, tokens, versions)
    async with TlsAsgiServer(app, pki, client_certificate=True) as server:
        yield server


@pytest.mark.parametrize(("http2", "version"), [(True, "2"), (False, "1.1")], ids=["HTTP/2", "HTTP/1.1"])
async def test_dicomweb_mutual_tls_and_oauth2_against_orthanc(
    orthanc_tls: OrthancPeer, pki: Pki, caplog: pytest.LogCaptureFixture, http2: bool, version: str
) -> None:
    caplog.set_level(logging.DEBUG)
    tokens, versions = TokenEndpoint(delay_s=0.1), []
    async with gateway(orthanc_tls, pki, tokens, versions) as server:
        connector = dicomweb(
            f"{server.url}/dicom-web", tls=mtls(pki), auth=oauth2(f"{server.url}/token"), http2=http2
        )
        try:
            # Many queries needing a token at once: one token request (single flight).
            answers = await asyncio.gather(
                *(
                    connector.find_studies(StudyQuery(patient_id="PA-001"), Deadline.after(10))
                    for _ in range(8)
                )
            )
            assert all(uids(a) == PA_001 for a in answers)
            assert tokens.issued == ["token-1"]
            assert tokens.grants[0]["scope"] == ["qido"]
            # Revoked early: a 401, one new token, the query succeeds.
            tokens.revoked.add("token-1")
            answer = await connector.find_studies(StudyQuery(patient_id="PA-001"), Deadline.after(10))
            assert uids(answer) == PA_001
            assert tokens.issued == ["token-1", "token-2"]
        finally:
            await connector.aclose()
    # The gateway speaks HTTP/2: our client takes it when offered (ALPN), else the lean HTTP/1.1 one.
    assert set(versions) == {version}
    assert set(connector.protocols) == {f"HTTP/{version}"}
    assert CLIENT_SECRET not in caplog.text
    assert not any(token in caplog.text for token in tokens.issued)
    assert CLIENT_SECRET not in repr(connector.settings)


async def test_orthanc_itself_checks_the_bearer_token(orthanc_tls: OrthancPeer) -> None:
    anonymous = dicomweb(orthanc_tls.dicomweb_url)
    bearer = dicomweb(orthanc_tls.dicomweb_url, auth={"type": "bearer", "token": "forged"})
    try:
        with pytest.raises(SourceAuthError):
            await anonymous.find_studies(StudyQuery(patient_id="PA-001"), Deadline.after(5))
        with pytest.raises(SourceAuthError):
            await bearer.find_studies(StudyQuery(patient_id="PA-001"), Deadline.after(5))
    finally:
        await anonymous.aclose()
        await bearer.aclose()


async def test_oauth2_token_expiry_and_refusal(orthanc_tls: OrthancPeer, pki: Pki) -> None:
    tokens, versions = TokenEndpoint(expires_in=1), []
    async with gateway(orthanc_tls, pki, tokens, versions) as server:
        good = dicomweb(f"{server.url}/dicom-web", tls=mtls(pki), auth=oauth2(f"{server.url}/token"))
        bad = dicomweb(
            f"{server.url}/dicom-web", tls=mtls(pki), auth=oauth2(f"{server.url}/token", "not-the-secret")
        )
        try:
            await good.find_studies(StudyQuery(patient_id="PA-001"), Deadline.after(10))
            await good.find_studies(StudyQuery(patient_id="PA-001"), Deadline.after(10))
            assert tokens.issued == ["token-1"]
            await asyncio.sleep(0.9)  # renewed a quarter of its 1 s lifetime before it runs out
            await good.find_studies(StudyQuery(patient_id="PA-001"), Deadline.after(10))
            assert tokens.issued == ["token-1", "token-2"]
            with pytest.raises(SourceAuthError, match="invalid_client") as raised:
                await bad.find_studies(StudyQuery(patient_id="PA-001"), Deadline.after(10))
            assert "not-the-secret" not in str(raised.value)
            assert "bad secret" not in str(raised.value)  # the server's free text is not repeated
        finally:
            await good.aclose()
            await bad.aclose()


async def test_dicomweb_through_a_proxy_tunnel_with_mutual_tls_and_oauth2(
    orthanc_tls: OrthancPeer, pki: Pki
) -> None:
    """``proxy:`` on an https:// source: a CONNECT tunnel, TLS and the token requests inside it."""
    tokens, versions = TokenEndpoint(), []
    async with gateway(orthanc_tls, pki, tokens, versions) as server:
        with ForwardProxy() as proxy:
            connector = dicomweb(
                f"{server.url}/dicom-web", tls=mtls(pki), auth=oauth2(f"{server.url}/token"), proxy=proxy.url
            )
            try:
                answer = await connector.find_studies(StudyQuery(patient_id="PA-001"), Deadline.after(10))
            finally:
                await connector.aclose()
    assert uids(answer) == PA_001
    assert tokens.issued == ["token-1"]
    assert proxy.seen and {method for method, _ in proxy.seen} == {"CONNECT"}
    assert set(connector.protocols) == {"HTTP/2"}


BASIC_USER, BASIC_PASSWORD, STATIC_BEARER = "pacsfed", "bas1c-pässword", "static-bearer-value"


def guarded_qido_app(tokens: TokenEndpoint, versions: list[str]) -> Starlette:
    """The demo QIDO-RS app behind each credential a source may hold: Basic, a static bearer, OAuth2 tokens."""
    qido = create_qido_app(demo_studies("demo-chu-nord"))
    basic = "Basic " + base64.b64encode(f"{BASIC_USER}:{BASIC_PASSWORD}".encode()).decode()

    async def guarded(scope: Scope, receive: Receive, send: Send) -> None:
        authorization = dict(scope["headers"]).get(b"authorization", b"").decode()
        if authorization not in (basic, f"Bearer {STATIC_BEARER}") and not tokens.valid(authorization):
            await JSONResponse({"error": "invalid_token"}, 401)(scope, receive, send)
            return
        versions.append(scope["http_version"])
        await qido(scope, receive, send)

    return Starlette(routes=[Route("/token", tokens.endpoint, methods=["POST"]), Mount("/", app=guarded)])


@pytest.mark.parametrize("http2", [True, False], ids=["HTTP/2", "HTTP/1.1"])
@pytest.mark.parametrize("mode", ["basic", "bearer", "oauth2"])
async def test_each_auth_mode_on_both_request_paths(pki: Pki, mode: str, http2: bool) -> None:
    """One authentication per source, read by httpx (HTTP/2) and by the lean HTTP/1.1 pool alike."""
    tokens, versions = TokenEndpoint(), []
    async with TlsAsgiServer(guarded_qido_app(tokens, versions), pki) as server:
        right, wrong = {
            "basic": (
                {"type": "basic", "username": BASIC_USER, "password": BASIC_PASSWORD},
                {"type": "basic", "username": BASIC_USER, "password": "nope"},
            ),
            "bearer": ({"type": "bearer", "token": STATIC_BEARER}, {"type": "bearer", "token": "forged"}),
            "oauth2": (oauth2(f"{server.url}/token"), oauth2(f"{server.url}/token", "not-the-secret")),
        }[mode]
        tls = {"ca_file": pki.ca_cert}
        accepted = dicomweb(f"{server.url}/dicom-web", tls=tls, auth=right, http2=http2)
        refused = dicomweb(f"{server.url}/dicom-web", tls=tls, auth=wrong, http2=http2)
        try:
            answer = await accepted.find_studies(StudyQuery(patient_id="DEMO-001"), Deadline.after(10))
            with pytest.raises(SourceAuthError):
                await refused.find_studies(StudyQuery(patient_id="DEMO-001"), Deadline.after(10))
        finally:
            await accepted.aclose()
            await refused.aclose()
    assert answer.records
    assert set(versions) == {"2" if http2 else "1.1"}
    assert set(accepted.protocols) == {"HTTP/2" if http2 else "HTTP/1.1"}
    assert tokens.issued == (["token-1"] if mode == "oauth2" else [])


@pytest.mark.parametrize(
    ("case", "tls"),
    [
        ("no client certificate", lambda pki: {"ca_file": pki.ca_cert}),
        (
            "untrusted client certificate",
            lambda pki: mtls(pki, cert_file=pki.untrusted_client_cert, key_file=pki.untrusted_client_key),
        ),
        ("unknown server CA", lambda pki: mtls(pki, ca_file=pki.untrusted_ca_cert)),
    ],
)
async def test_dicomweb_mutual_tls_refusals_are_clean(
    orthanc_tls: OrthancPeer, pki: Pki, case: str, tls: Any
) -> None:
    tokens: TokenEndpoint = TokenEndpoint()
    async with gateway(orthanc_tls, pki, tokens, []) as server:
        connector = dicomweb(f"{server.url}/dicom-web", tls=tls(pki), auth=oauth2(f"{server.url}/token"))
        try:
            with pytest.raises(SourceUnreachable, match="TLS handshake failed"):
                await connector.find_studies(StudyQuery(patient_id="PA-001"), Deadline.after(5))
        finally:
            await connector.aclose()
    assert tokens.issued == []


@pytest.mark.parametrize(("http2", "expected"), [(True, "HTTP/2"), (False, "HTTP/1.1")])
async def test_http2_to_the_simulated_qido_server(pki: Pki, http2: bool, expected: str) -> None:
    app = create_qido_app(demo_studies("demo-chu-nord"))
    async with TlsAsgiServer(app, pki) as server:
        connector = dicomweb(f"{server.url}/dicom-web", tls={"ca_file": pki.ca_cert}, http2=http2)
        try:
            answers = await asyncio.gather(
                *(
                    connector.find_studies(StudyQuery(patient_id="DEMO-001"), Deadline.after(10))
                    for _ in range(6)
                )
            )
            connections = len(connector._http._transport._pool.connections)  # type: ignore[attr-defined]
        finally:
            await connector.aclose()
    assert all(a.records for a in answers)
    assert set(connector.protocols) == {expected}
    if http2:
        assert connections == 1  # six concurrent queries multiplexed on one connection


async def test_plain_http_stays_http_1_1_with_http2_on(pki: Pki) -> None:
    from pacsfed.demo.qido_peer import SimulatedQidoServer

    async with SimulatedQidoServer(demo_studies("demo-chu-nord")) as server:
        connector = dicomweb(server.base_url, http2=True)
        try:
            answer = await connector.find_studies(StudyQuery(patient_id="DEMO-001"), Deadline.after(10))
        finally:
            await connector.aclose()
    assert answer.records
    assert set(connector.protocols) == {"HTTP/1.1"}


def test_verify_tls_false_still_turns_checking_off(pki: Pki) -> None:
    connector = dicomweb("https://127.0.0.1:1/dicom-web", verify_tls=False, tls={"ca_file": pki.ca_cert})
    context = connector._ssl_context
    assert context.verify_mode == ssl.CERT_NONE
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    asyncio.run(connector.aclose())


# -- Elasticsearch over mutual TLS ------------------------------------------------------------
async def test_elasticsearch_client_uses_the_tls_settings(pki: Pki) -> None:
    """``cache.tls``: our CA and client certificate reach the node (a stand-in answering ``GET /``)."""
    from elasticsearch import TransportError

    from federation.elasticsearch import make_client
    from federation.settings import CacheSettings

    async def root(request: Request) -> Response:
        seen.append(request.headers.get("authorization", ""))
        body = {"name": "tls-node", "cluster_name": "pacsfed", "version": {"number": "9.3.0"}}
        return JSONResponse(body, headers={"X-Elastic-Product": "Elasticsearch"})

    seen: list[str] = []
    app = Starlette(routes=[Route("/", root)])
    async with TlsAsgiServer(app, pki, client_certificate=True) as server:
        good = make_client(CacheSettings(url=server.url, api_key="es-key-s3cret", tls=mtls(pki)))
        anonymous = make_client(CacheSettings(url=server.url, tls={"ca_file": pki.ca_cert}))
        try:
            info = await good.info()
            assert info["name"] == "tls-node"
            with pytest.raises(TransportError):  # no client certificate: refused
                await anonymous.info()
        finally:
            await good.close()
            await anonymous.close()
    assert seen == ["ApiKey es-key-s3cret"]
    with pytest.raises(ConfigError, match="https"):
        make_client(CacheSettings(url="http://127.0.0.1:9200", tls={"ca_file": pki.ca_cert}))


async def test_dimse_an_unregistered_calling_ae_over_tls_is_not_blamed_on_tls(
    orthanc_tls: OrthancPeer, pki: Pki
) -> None:
    connector = dimse(orthanc_tls, tls=mtls(pki), calling_ae="STRANGER")
    try:
        with pytest.raises(ConnectorError) as raised:
            await connector.find_studies(StudyQuery(patient_id="PA-001"), Deadline.after(5))
    finally:
        await connector.aclose()
    assert "TLS" not in str(raised.value)
    assert "STRANGER" in str(raised.value)


async def test_dicomweb_server_hostname_is_the_name_checked(pki: Pki) -> None:
    app = create_qido_app(demo_studies("demo-chu-nord"))
    async with TlsAsgiServer(app, pki) as server:
        url = f"{server.url}/dicom-web"
        right = dicomweb(url, tls={"ca_file": pki.ca_cert, "server_hostname": "localhost"})
        wrong = dicomweb(url, tls={"ca_file": pki.ca_cert, "server_hostname": "pacs.example.org"})
        try:
            answer = await right.find_studies(StudyQuery(patient_id="DEMO-001"), Deadline.after(10))
            assert answer.records
            with pytest.raises(SourceUnreachable, match="certificate verify failed.*pacs.example.org"):
                await wrong.find_studies(StudyQuery(patient_id="DEMO-001"), Deadline.after(10))
        finally:
            await right.aclose()
            await wrong.aclose()
