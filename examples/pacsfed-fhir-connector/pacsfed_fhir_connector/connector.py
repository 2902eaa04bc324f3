"""The FHIR connector: ``GET [base]/ImagingStudy?patient.identifier=system|value``, paged by the Bundle's ``next`` links.

Written only against pacsfed's public SDK: :mod:`connectors.base` (the contract),
:mod:`connectors.dicom` (names), :mod:`federation.models`, :mod:`federation.errors` and
:mod:`federation.settings`.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import ssl
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import httpx

from connectors.base import Connector, ConnectorContext, SourceAnswer
from federation.errors import (
    ConnectorError,
    SourceAuthError,
    SourceProtocolError,
    SourceTimeout,
    SourceUnreachable,
)
from federation.models import Deadline, StudyQuery, StudyRecord
from pacsfed_fhir_connector.imaging_study import PatientKey, outcome_summary, read_search_page
from pacsfed_fhir_connector.search import demographic_params, matches_demographics, search_token
from pacsfed_fhir_connector.settings import FhirSourceSettings

__all__ = ["FHIR_JSON", "MAX_RESPONSE_BYTES", "FhirConnector"]

# httpx logs every request URL at INFO, and search URLs carry patient identifiers.
logging.getLogger("httpx").setLevel(logging.WARNING)
logging.getLogger("httpcore").setLevel(logging.WARNING)

FHIR_JSON = "application/fhir+json"
MAX_RESPONSE_BYTES = 16 * 1024 * 1024
"""Largest page read; reading stops as soon as a body passes it."""
_PARSE_IN_THREAD_BYTES = 512 * 1024
"""Larger bodies are decoded in a thread, so that the event loop is not held while they are."""
_KEEPALIVE_S = 30.0


def _user_agent() -> str:
    try:
        return f"pacsfed-fhir-connector/{version('pacsfed-fhir-connector')}"
    except PackageNotFoundError:  # run from a source tree, not installed
        return "pacsfed-fhir-connector"


class FhirConnector(Connector):
    """Searches one FHIR R4 server for the ImagingStudy resources of a patient identifier."""

    kind = "fhir"
    settings_model = FhirSourceSettings
    supports_issuer_of_patient_id = True
    """A query's issuer is sent as the identifier's FHIR ``system`` (``issuer_systems``)."""
    supports_demographic_search = True
    """A name pattern and a birth date are searched as chained Patient parameters, then checked here."""
    supports_study_keys = False
    """Not yet: the study keys (StudyInstanceUID, AccessionNumber, dates, modalities) are not sent as
    FHIR search parameters, so pacsfed asks this source by patient only and checks them itself."""
    supports_series_query = False
    """No series listing: an ImagingStudy's ``series`` could give one, but this example does not read it."""
    supports_instance_query = False
    """No instance listing (the facades' instance searches report this source UNSUPPORTED)."""

    settings: FhirSourceSettings

    def __init__(self, settings: FhirSourceSettings, context: ConnectorContext) -> None:
        super().__init__(settings, context)
        self._base = httpx.URL(settings.base_url.rstrip("/") + "/")
        # handling=strict: a server that does not know a search parameter (the chained
        # patient.identifier) must say so, not ignore it and answer with every patient's studies.
        self._headers = {"Accept": FHIR_JSON, "Prefer": "handling=strict", "User-Agent": _user_agent()}
        if settings.auth is not None:
            self._headers["Authorization"] = f"Bearer {settings.auth.token.get_secret_value()}"
        # The process's client is borrowed (never closed here); a source behind a proxy, or one
        # whose TLS is checked otherwise (ca_file, verify_tls), needs a client of its own, closed in aclose.
        self._own_client: httpx.AsyncClient | None = None
        own = settings.proxy is not None or not settings.verify_tls or settings.ca_file is not None
        if own or context.http_client is None:
            self._own_client = httpx.AsyncClient(
                proxy=settings.proxy,
                verify=_ssl_context(settings.verify_tls, settings.ca_file),
                follow_redirects=False,
                limits=httpx.Limits(
                    max_connections=settings.max_concurrency * 2,
                    max_keepalive_connections=settings.max_concurrency,
                    keepalive_expiry=_KEEPALIVE_S,
                ),
            )

    @property
    def _client(self) -> httpx.AsyncClient:
        if self._own_client is not None:
            return self._own_client
        assert self.context.http_client is not None
        return self.context.http_client

    async def find_studies(self, query: StudyQuery, deadline: Deadline) -> SourceAnswer:
        """Every ImagingStudy of the query's identifier (or name and birth date), following ``next`` links."""
        asked = self._search(query)
        if isinstance(asked, str):
            return SourceAnswer(records=(), warnings=(asked,))
        key, params = asked
        demographic = "patient.identifier" not in params
        params["_count"] = str(self.settings.page_size)
        if self.settings.include_patient:
            params["_include"] = "ImagingStudy:subject"
        url: httpx.URL | None = self._base.join("ImagingStudy").copy_merge_params(params)
        records: dict[str, StudyRecord] = {}
        warnings: list[str] = []
        seen: set[httpx.URL] = set()
        truncated = False
        try:
            async with asyncio.timeout(deadline.remaining()):
                while url is not None and url not in seen:
                    seen.add(url)
                    page = read_search_page(await self._get_json(url, deadline), self.id, key)
                    warnings.extend(page.warnings)
                    records.update(
                        (r.study_instance_uid, r)
                        for r in page.records
                        if not demographic or matches_demographics(r, query)
                    )
                    if len(records) >= self.settings.max_results and page.next_url is not None:
                        truncated = True
                        warnings.append(f"stopped after {self.settings.max_results} studies (max_results)")
                        break
                    url = self._next_url(page.next_url)
        except TimeoutError as exc:
            raise SourceTimeout("FHIR search did not finish by the deadline") from exc
        kept = list(records.values())[: self.settings.max_results]
        return SourceAnswer(records=kept, warnings=tuple(dict.fromkeys(warnings)), truncated=truncated)

    async def ping(self, deadline: Deadline) -> None:
        """Read the server's CapabilityStatement (``GET [base]/metadata``)."""
        try:
            async with asyncio.timeout(deadline.remaining()):
                answer = await self._get_json(self._base.join("metadata"), deadline)
        except TimeoutError as exc:
            raise SourceTimeout("FHIR metadata did not arrive by the deadline") from exc
        if not isinstance(answer, dict) or answer.get("resourceType") != "CapabilityStatement":
            raise SourceProtocolError("FHIR metadata is not a CapabilityStatement")

    async def aclose(self) -> None:
        """Close this source's own client, if it has one (the process's shared one is not ours)."""
        client, self._own_client = self._own_client, None
        if client is not None:
            await client.aclose()

    def _search(self, query: StudyQuery) -> tuple[PatientKey, dict[str, str]] | str:
        """Which identifier the answers' PatientID is, and the search parameters; or why not (a warning).

        A national number is searched in its own system, and the answers read with the source's
        PatientIDs (``identifier_system``) and the national number among their OtherPatientIDs.
        """
        systems = self.settings.issuer_systems
        issuers = {system: issuer for issuer, system in systems.items()}
        own = self.settings.identifier_system
        if query.patient_id is not None:
            issuer = query.issuer_of_patient_id
            system = (systems.get(issuer) if issuer is not None else None) or own
            token = search_token(system, query.patient_id)
            return PatientKey(system, query.patient_id, issuers), {"patient.identifier": token}
        if query.other_patient_id is not None:
            issuer = query.other_patient_id_issuer
            system = systems.get(issuer) if issuer is not None else None
            if system is None:
                return "no FHIR identifier system is configured for this issuer (issuer_systems)"
            token = search_token(system, query.other_patient_id)
            return PatientKey(own, None, issuers), {"patient.identifier": token}
        params = demographic_params(query)
        if not params:
            return "nothing to search with: no identifier, name or birth date"
        return PatientKey(own, None, issuers), params

    def _next_url(self, link: str | None) -> httpx.URL | None:
        """The next page's URL; one that leaves the source's origin is refused (our token would follow it)."""
        if link is None:
            return None
        try:
            url = self._base.join(link)
        except httpx.InvalidURL as exc:
            raise SourceProtocolError("FHIR Bundle next link is not a URL") from exc
        if (url.scheme, url.host, url.port) != (self._base.scheme, self._base.host, self._base.port):
            raise SourceProtocolError("FHIR Bundle next link leaves the source's base URL")
        return url

    async def _get_json(self, url: httpx.URL, deadline: Deadline) -> Any:
        """One GET: the decoded JSON answer of a 200, else the connector error it means."""
        timeout = max(min(self.settings.timeout_s, deadline.remaining()), 0.01)
        try:
            async with self._client.stream("GET", url, headers=self._headers, timeout=timeout) as response:
                status = response.status_code
                body = await _read_capped(response)
        except httpx.HTTPError as exc:
            raise _translated(exc) from exc
        if status in (401, 403):
            raise SourceAuthError(f"FHIR server refused our credentials (HTTP {status})")
        if status == 407:
            raise SourceAuthError("the HTTP proxy asked for credentials (HTTP 407)")
        if status in (502, 503, 504):
            raise SourceUnreachable(f"FHIR server or its gateway unavailable (HTTP {status})")
        try:
            answer = await _decoded(body)
        except (ValueError, UnicodeDecodeError) as exc:
            if status != 200:
                raise SourceProtocolError(f"FHIR server answered HTTP {status}") from exc
            raise SourceProtocolError("FHIR answer is not valid JSON") from exc
        if status != 200:
            outcome = (
                answer
                if isinstance(answer, dict) and answer.get("resourceType") == "OperationOutcome"
                else None
            )
            detail = f" ({outcome_summary(outcome)})" if outcome is not None else ""
            raise SourceProtocolError(f"FHIR server answered HTTP {status}{detail}")
        return answer


@functools.cache
def _ssl_context(verify: bool, ca_file: Path | None) -> ssl.SSLContext:
    """One TLS context per process and CA bundle for the sources' own clients (loading one takes ~0.1 s).

    Without it httpx loads the bundle for each client, twice for a client with a proxy (the
    proxy's transport and the direct one).
    """
    if verify and ca_file is not None:
        return ssl.create_default_context(cafile=str(ca_file))
    return httpx.create_ssl_context(verify=verify)


def _translated(exc: httpx.HTTPError) -> ConnectorError:
    """An httpx failure as the connector error the engine reports (never its message: it holds the URL)."""
    if isinstance(exc, httpx.TimeoutException):
        return SourceTimeout("FHIR request timed out")
    if isinstance(exc, httpx.ProxyError):
        return SourceUnreachable("the HTTP proxy refused the request or could not reach the source")
    if isinstance(exc, httpx.ConnectError | httpx.UnsupportedProtocol):
        return SourceUnreachable(_tls_reason(exc) or "connection refused or host unreachable")
    return SourceProtocolError(f"FHIR transport error ({type(exc).__name__})")


def _tls_reason(exc: BaseException) -> str | None:
    """Why the TLS handshake failed, when it did (the certificate check's own words: no URL in them)."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, ssl.SSLCertVerificationError):
            return f"TLS certificate not trusted ({cause.verify_message})"
        if isinstance(cause, ssl.SSLError):
            return f"TLS handshake failed ({cause.reason or 'refused'})"
        cause = cause.__cause__ or cause.__context__
    return None


async def _read_capped(response: httpx.Response) -> bytes:
    """The response body, refused past MAX_RESPONSE_BYTES (announced or read)."""
    announced = response.headers.get("Content-Length", "")
    if announced.isdigit() and int(announced) > MAX_RESPONSE_BYTES:
        raise SourceProtocolError(f"FHIR answer larger than {MAX_RESPONSE_BYTES // (1024 * 1024)} MiB")
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > MAX_RESPONSE_BYTES:
            raise SourceProtocolError(f"FHIR answer larger than {MAX_RESPONSE_BYTES // (1024 * 1024)} MiB")
    return bytes(body)


async def _decoded(body: bytes) -> Any:
    """JSON, decoded in a thread when large (the event loop stays free)."""
    if len(body) > _PARSE_IN_THREAD_BYTES:
        return await asyncio.to_thread(json.loads, body)
    return json.loads(body)
