"""One DICOMweb source's HTTP GETs: one request path, one authentication, one error mapping.

Two clients carry the requests, and this module alone chooses between them (the HTTP/2 choice):

- the lean HTTP/1.1 pool (``connectors.http11``) for every ``http://`` source, and for ``https://``
  ones whose server does not choose HTTP/2 by ALPN;
- httpx (one ``AsyncClient`` per source) once the server has chosen HTTP/2 (``http2: true``
  offers it), for the OAuth2 token requests, and for every request of a source reached through
  a ``proxy``: httpx sends absolute-form requests to the proxy for ``http://`` and opens a
  CONNECT tunnel for ``https://``; the lean pool speaks to origins only.

The pool is not put behind ``httpx.AsyncBaseTransport``: measured with ``bench.fanout`` at 50
sources in one session, the same pool behind httpx's client (its request and response models,
auth flow and URL handling, about 0.15 ms to 0.4 ms a request) raised the CPU per query from
13–15 ms to 33–38 ms and p50/L from 1.6–1.7 to 2.2–3.0. Instead both paths read one
:class:`connectors.http_auth.SourceAuth` per source (an ``httpx.Auth`` that also hands the pool
its header) and one translation of their failures (:func:`translated`) into the connector
errors of ``federation.errors``; no message carries a URL (QIDO URLs carry PatientIDs).
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from connectors.http11 import BodyTooLarge, ConnectionBroken, Headers, Http2Selected, Http11Pool
from connectors.http_auth import SourceAuth
from federation.errors import (
    ConnectorError,
    SourceAuthError,
    SourceProtocolError,
    SourceTimeout,
    SourceUnreachable,
)
from federation.models import Deadline
from federation.settings_security import TlsSettings
from federation.tls import client_context, handshake_failure, tls_failure

__all__ = ["HttpAnswer", "HttpSource", "translated"]

# httpx logs every request URL at INFO, and QIDO URLs carry PatientIDs: keep it to warnings.
logging.getLogger("httpx").setLevel(logging.WARNING)
logging.getLogger("httpcore").setLevel(logging.WARNING)
# HTTP/2 header compression logs every header it encodes or decodes at DEBUG: Authorization too.
logging.getLogger("hpack").setLevel(logging.WARNING)

KEEPALIVE_S = 30.0


_URL_CACHE_SIZE = 8
"""Parsed URLs kept per source: the few fixed QIDO paths, never one per study."""


@dataclass(frozen=True, slots=True)
class HttpAnswer:
    """One complete answer: status, headers (case-insensitive lookups by lower-case name) and body."""

    status: int
    headers: Mapping[str, str]
    body: bytes


class HttpSource:
    """GETs below one base URL, over the lean pool or httpx, authenticated and bounded."""

    def __init__(
        self,
        base_url: str,
        *,
        user_agent: str,
        timeout_s: float,
        max_concurrency: int,
        auth: SourceAuth | None = None,
        tls: TlsSettings | None = None,
        verify_tls: bool = True,
        http2: bool = True,
        proxy: str | None = None,
    ) -> None:
        self._base = base_url.rstrip("/")
        url = httpx.URL(self._base)
        self._https = url.scheme == "https"
        self._host, self._port = url.host, url.port or (443 if self._https else 80)
        self._timeout_s = timeout_s
        self._auth = auth
        self._proxied = proxy is not None
        # http2: offered through ALPN on https:// (plain http:// stays HTTP/1.1); the TLS context
        # (CA bundle, client certificate, minimum version) is built now, so bad files fail at start-up.
        alpn = ("h2", "http/1.1") if http2 else ("http/1.1",)
        self.ssl_context = client_context(tls, verify=verify_tls, alpn=alpn)
        self._sni_name = tls.server_hostname if tls is not None else None
        self._sni: dict[str, Any] = {"sni_hostname": self._sni_name} if self._sni_name else {}
        self._pool = Http11Pool(
            self._host,
            self._port,
            ssl_context=self.ssl_context if self._https else None,
            server_hostname=self._sni_name,
            max_connections=max_concurrency * 2,
            max_idle=max_concurrency,
            idle_s=KEEPALIVE_S,
        )
        self._path = url.raw_path.partition(b"?")[0].rstrip(b"/")
        self._urls: dict[str, httpx.URL] = {}
        self._host_header = (b"host", url.netloc)
        self._lean_tail: Headers = [(b"accept-encoding", b"gzip"), (b"user-agent", user_agent.encode())]
        self._httpx_only = self._proxied
        """Set for a proxied source, and once the server chose HTTP/2 by ALPN: from then on httpx asks it."""
        self.protocols: collections.Counter[str] = collections.Counter()
        """Requests sent so far per HTTP version ("HTTP/1.1", "HTTP/2"): for tests and metrics."""
        # One client (one connection pool) per source: httpcore scans every pooled connection on
        # each request, so a single pool shared by 200 sources made the fan-out quadratic.
        limits = httpx.Limits(
            max_connections=max_concurrency * 2,
            max_keepalive_connections=max_concurrency,
            keepalive_expiry=KEEPALIVE_S,
        )
        # retries=1: one new attempt when a connection cannot be made (never a request resent).
        transport = httpx.AsyncHTTPTransport(
            verify=self.ssl_context, http2=http2, limits=limits, retries=1, proxy=proxy
        )
        self.client = httpx.AsyncClient(
            transport=transport, follow_redirects=False, headers={"User-Agent": user_agent}
        )
        """The source's httpx client: HTTP/2, proxied requests, token requests."""

    async def get(
        self, path: str, query: bytes, *, accept: str, deadline: Deadline, max_body: int, what: str
    ) -> HttpAnswer:
        """GET ``base/path?query``; *what* ("QIDO") names the request in error messages."""
        if not self._httpx_only:
            target = b"%s/%s" % (self._path, path.encode("ascii"))
            if query:
                target += b"?" + query
            headers = [self._host_header, (b"accept", accept.encode()), *self._lean_tail]
            try:
                return await self._get_lean(target, headers, deadline, max_body, what)
            except Http2Selected:
                self._httpx_only = True
        url = self._urls.get(path)
        if url is None:
            url = httpx.URL(f"{self._base}/{path}")
            if len(self._urls) < _URL_CACHE_SIZE:  # the QIDO paths; a report's paths name its study
                self._urls[path] = url
        return await self._get_httpx(url.copy_with(query=query), accept, deadline, max_body, what)

    @property
    def base_url(self) -> str:
        """The source's base URL, without a trailing slash."""
        return self._base

    async def open_stream(
        self, path: str, query: bytes, headers: Mapping[str, str], *, first_byte_s: float, stall_s: float
    ) -> httpx.Response:
        """GET ``base/path?query`` through httpx, its status and headers read, its body still to stream.

        With the source's auth and TLS name; the answer must come before *first_byte_s*, and
        every later read within *stall_s* (httpx's read timeout). The caller closes the response.
        Failures are httpx's exceptions or TimeoutError: :func:`translated` makes them connector errors.
        """
        url = httpx.URL(f"{self._base}/{path}", query=query)
        timeout = httpx.Timeout(stall_s, connect=first_byte_s, pool=first_byte_s)
        request = self.client.build_request(
            "GET", url, headers=headers, timeout=timeout, extensions=self._sni
        )
        auth = self._auth if self._auth is not None else httpx.USE_CLIENT_DEFAULT
        async with asyncio.timeout(first_byte_s):
            response = await self.client.send(request, auth=auth, stream=True)
        self.protocols["HTTP/2" if response.http_version == "HTTP/2" else response.http_version] += 1
        return response

    async def aclose(self) -> None:
        """Close this source's connections."""
        await self._pool.aclose()
        await self.client.aclose()

    def _within(self, deadline: Deadline) -> float:
        """One request's time: the source's timeout, within the query's deadline."""
        return max(min(self._timeout_s, deadline.remaining()), 0.01)

    async def _get_lean(
        self, target: bytes, headers: Headers, deadline: Deadline, max_body: int, what: str
    ) -> HttpAnswer:
        """The request over the lean HTTP/1.1 pool; asked once more when the auth can renew a refused value."""
        auth = self._auth
        within_s = self._within(deadline)
        authorization = await self._authorization(auth, within_s, deadline, what) if auth else None
        for attempt in (1, 2):
            sent = headers if authorization is None else [*headers, (b"authorization", authorization)]
            if attempt == 2:
                within_s = self._within(deadline)
            try:
                response = await self._pool.get(target, sent, within_s=within_s, max_body=max_body)
            except ConnectorError as exc:
                error = await self._failure(exc, what, max_body, deadline)
                if error is exc:
                    raise
                raise error from exc
            self.protocols["HTTP/1.1"] += 1
            answer = HttpAnswer(response.status, response.headers, response.body)
            if answer.status != 401 or attempt == 2 or auth is None or authorization is None:
                return answer
            if not auth.refused(authorization):
                return answer  # a static value: the refusal is final
            # Revoked or expired early (OAuth2): one new token, one new attempt.
            authorization = await self._authorization(auth, within_s, deadline, what)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _authorization(self, auth: SourceAuth, within_s: float, deadline: Deadline, what: str) -> bytes:
        """The auth's header value for the lean pool (an OAuth2 token is fetched through httpx)."""
        try:
            return await auth.authorization(self.client, within_s)
        except httpx.HTTPError as exc:
            raise await self._failure(exc, what, 0, deadline) from exc

    async def _get_httpx(
        self, url: httpx.URL, accept: str, deadline: Deadline, max_body: int, what: str
    ) -> HttpAnswer:
        """The request through httpx: HTTP/2 or a proxy, with the same auth as an ``httpx.Auth`` flow."""
        try:
            async with self.client.stream(
                "GET",
                url,
                headers={"Accept": accept},
                auth=self._auth if self._auth is not None else httpx.USE_CLIENT_DEFAULT,
                timeout=self._within(deadline),
                extensions=self._sni,
            ) as response:
                body = await _read_capped(response, deadline, max_body, what)
        except httpx.HTTPError as exc:
            raise await self._failure(exc, what, max_body, deadline) from exc
        self.protocols["HTTP/2" if response.http_version == "HTTP/2" else response.http_version] += 1
        return HttpAnswer(response.status_code, response.headers, bytes(body))

    async def _failure(self, exc: Exception, what: str, max_body: int, deadline: Deadline) -> ConnectorError:
        """A failure of either path as a connector error, with the TLS reason when one is hidden."""
        diagnosis = await self._tls_diagnosis(deadline) if _may_hide_tls_refusal(exc) else None
        return translated(exc, what, max_body=max_body, tls_reason=diagnosis)

    async def _tls_diagnosis(self, deadline: Deadline) -> str | None:
        """Why the TLS session failed, when a read or write broke on a fresh https connection.

        Under TLS 1.3 the server judges our client certificate after our side of the handshake:
        its refusal surfaces as a broken write or read, the alert unread. A second handshake reads
        it (not through a proxy: that handshake would go to the origin directly).
        """
        if not self._https or self._proxied or deadline.expired:
            return None
        hostname = self._sni_name or self._host
        timeout = max(min(self._timeout_s, deadline.remaining()), 0.05)
        reason = await asyncio.to_thread(
            handshake_failure, self._host, self._port, self.ssl_context, hostname, timeout
        )
        return f"TLS handshake failed: {reason}" if reason else None


def _may_hide_tls_refusal(exc: Exception) -> bool:
    """A broken fresh connection (lean pool) or a broken read or write (httpx) without a TLS reason."""
    if isinstance(exc, ConnectionBroken):
        return exc.fresh
    broken = isinstance(exc, httpx.ReadError | httpx.WriteError | httpx.RemoteProtocolError)
    return broken and not tls_failure(exc)


def translated(
    exc: Exception, what: str, *, max_body: int = 0, tls_reason: str | None = None
) -> ConnectorError:
    """A failure of the lean pool or of httpx as the connector error the engine reports.

    Never with the peer's URL or text: QIDO URLs carry PatientIDs. A connector error that needs
    no other words comes back as it is.
    """
    if isinstance(exc, BodyTooLarge):
        return SourceProtocolError(too_large(what, max_body))
    if isinstance(exc, SourceTimeout):
        return SourceTimeout(f"{what} {exc}")
    if isinstance(exc, httpx.TimeoutException):
        return SourceTimeout(f"{what} request timed out")
    if isinstance(exc, ConnectionBroken):
        if tls_reason:
            return SourceUnreachable(tls_reason)
        return SourceProtocolError(f"{what} transport error ({exc})")
    if isinstance(exc, SourceProtocolError) and not isinstance(exc, SourceAuthError):
        return SourceProtocolError(f"{what} transport error ({exc})")
    if isinstance(exc, ConnectorError):
        return exc  # unreachable (with its TLS reason), or refused credentials
    reason = tls_failure(exc) or tls_reason
    if isinstance(exc, httpx.ConnectError | httpx.UnsupportedProtocol):
        return SourceUnreachable(reason or "connection refused or host unreachable")
    if reason:
        return SourceUnreachable(reason)
    if isinstance(exc, httpx.ProxyError):
        return SourceUnreachable("the proxy did not open a tunnel to the source")
    return SourceProtocolError(f"{what} transport error ({type(exc).__name__})")


def too_large(what: str, max_body: int) -> str:
    """The message for an answer larger than *max_body*."""
    return f"{what} answer larger than {max_body // (1024 * 1024)} MiB"


async def _read_capped(response: httpx.Response, deadline: Deadline, max_body: int, what: str) -> bytearray:
    """The response body, refusing bodies larger than *max_body* or still coming at the deadline.

    httpx's read timeout bounds each read, not the body: a server sending a byte at a time
    would keep it reading for ever.
    """
    announced = response.headers.get("Content-Length", "")
    if announced.isdigit() and int(announced) > max_body:
        raise SourceProtocolError(too_large(what, max_body))
    body = bytearray()  # grown in place: no second copy of the body when it is complete
    try:
        async with asyncio.timeout(deadline.remaining()):
            async for chunk in response.aiter_bytes():
                if len(body) + len(chunk) > max_body:
                    raise SourceProtocolError(too_large(what, max_body))
                body += chunk
    except TimeoutError as exc:
        raise SourceTimeout(f"{what} answer still arriving at the deadline") from exc
    return body
