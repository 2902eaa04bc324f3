"""Client-side TLS contexts for the peers: DICOM TLS (PS3.15 B.12), HTTPS, Elasticsearch.

One :class:`ssl.SSLContext` per setting: TLS 1.2 at least (1.3 when asked), the configured CA
bundle or the system store, our certificate for mutual TLS, hostname checking unless
``verify`` is off. Contexts are cached per settings value, since loading a CA bundle costs tens
of milliseconds (so a renewed certificate file is read at the next start). A file that cannot be read or used is a ConfigError naming the setting and
the file, never the file's content (a private key) or a passphrase.
"""

from __future__ import annotations

import contextlib
import functools
import socket
import ssl
from collections.abc import Callable
from pathlib import Path

from federation.errors import ConfigError
from federation.settings_security import TlsSettings

_ALERT_WAIT_S = 0.5
_CLOSED_AFTER_HANDSHAKE = (
    "the peer closed the connection right after the handshake"
    " (is our client certificate missing or not trusted there?)"
)
_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}


def client_context(
    tls: TlsSettings | None, *, verify: bool = True, alpn: tuple[str, ...] = ()
) -> ssl.SSLContext:
    """The client TLS context for *tls* (system CAs, TLS 1.2+ when None).

    ``verify=False`` (a source's ``verify_tls: false``) turns certificate checking off whatever
    *tls* says. *alpn* lists the protocols offered (``("h2", "http/1.1")`` for HTTP/2).
    """
    if tls is None:
        return _cached(None, None, None, "1.2", verify, alpn)
    return _cached(tls.ca_file, tls.cert_file, tls.key_file, tls.min_version, tls.verify and verify, alpn)


def server_context(tls: TlsSettings) -> ssl.SSLContext:
    """A server TLS context (DICOM TLS for the facade): our certificate; callers' too when ``ca_file`` is set."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = _VERSIONS[tls.min_version]
    if tls.cert_file is not None and tls.key_file is not None:
        cert_file, key_file = tls.cert_file, tls.key_file
        _load(
            lambda: context.load_cert_chain(certfile=str(cert_file), keyfile=str(key_file)),
            "cert_file/key_file",
            cert_file,
        )
    if tls.ca_file is not None and tls.verify:
        ca_file = tls.ca_file
        _load(lambda: context.load_verify_locations(cafile=str(ca_file)), "ca_file", ca_file)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def server_hostname(tls: TlsSettings | None, host: str) -> str:
    """The name the peer's certificate must carry: ``server_hostname`` or the host connected to."""
    return tls.server_hostname if tls is not None and tls.server_hostname else host


@functools.lru_cache(maxsize=64)
def _cached(
    ca_file: Path | None,
    cert_file: Path | None,
    key_file: Path | None,
    min_version: str,
    verify: bool,
    alpn: tuple[str, ...],
) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = _VERSIONS[min_version]
    if verify:
        context.check_hostname = True
        context.verify_mode = ssl.CERT_REQUIRED
        if ca_file is not None:
            _load(lambda: context.load_verify_locations(cafile=str(ca_file)), "ca_file", ca_file)
        else:
            context.load_default_certs(ssl.Purpose.SERVER_AUTH)
    else:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if cert_file is not None and key_file is not None:
        _load(
            lambda: context.load_cert_chain(certfile=str(cert_file), keyfile=str(key_file)),
            "cert_file/key_file",
            cert_file,
        )
    if alpn:
        context.set_alpn_protocols(list(alpn))
    return context


def _load(action: Callable[[], None], setting: str, path: Path) -> None:
    """Run a file-loading step; a failure is a ConfigError naming the setting and file only."""
    try:
        action()
    except FileNotFoundError as exc:
        raise ConfigError(f"tls.{setting}: {path} not found") from exc
    except PermissionError as exc:
        raise ConfigError(f"tls.{setting}: {path} cannot be read (permission denied)") from exc
    except ssl.SSLError as exc:
        reason = exc.reason or "not usable"
        raise ConfigError(f"tls.{setting}: {path} is not a usable PEM file ({reason})") from exc
    except (OSError, ValueError) as exc:
        raise ConfigError(f"tls.{setting}: {path} cannot be loaded ({type(exc).__name__})") from exc


def handshake_failure(
    host: str, port: int, context: ssl.SSLContext, hostname: str, timeout: float
) -> str | None:
    """Why a TLS handshake with ``host:port`` fails, or None when it succeeds or TCP itself fails.

    Used after a DICOM association could not be set up: pynetdicom reports a failed handshake
    as a plain connection failure. Under TLS 1.3 the server judges our certificate after the
    client side of the handshake is done, so its refusal (an alert) arrives on the first read:
    one read waits briefly for it; a peer that closes at once without an alert is reported as
    probably refusing our certificate. The reason names the TLS failure only.
    """
    try:
        with (
            socket.create_connection((host, port), timeout=timeout) as raw,
            context.wrap_socket(raw, server_hostname=hostname) as tls,
        ):
            tls.settimeout(min(timeout, _ALERT_WAIT_S))
            with contextlib.suppress(TimeoutError, ConnectionError):
                if tls.recv(1) == b"":
                    # Some servers (Python's asyncio among them) close without an alert.
                    return _CLOSED_AFTER_HANDSHAKE
    except ssl.SSLCertVerificationError as exc:
        detail = f" ({exc.verify_message})" if exc.verify_message else ""
        return f"certificate verify failed{detail}"
    except ssl.SSLError as exc:
        return _readable(exc.reason) if exc.reason else "the peer ended the TLS handshake"
    except OSError:
        return None
    return None


def _readable(reason: str) -> str:
    """OpenSSL's ``TLSV1_ALERT_UNKNOWN_CA`` as ``tlsv1 alert unknown ca``, with a hint when it is about us."""
    text = reason.lower().replace("_", " ")
    words = set(text.split())
    if "alert" in words and words & {"ca", "certificate", "bad"}:
        return f"{text} (the peer refused our client certificate)"
    if "version" in text:
        return f"{text} (no TLS version both sides accept)"
    return text


def tls_failure(exc: BaseException) -> str | None:
    """``TLS handshake failed: …`` when an ssl.SSLError is behind a transport error, else None."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ssl.SSLCertVerificationError):
            detail = f" ({cause.verify_message})" if cause.verify_message else ""
            return f"TLS handshake failed: certificate verify failed{detail}"
        if isinstance(cause, ssl.SSLError):
            reason = (cause.reason or "the peer ended the TLS session").lower().replace("_", " ")
            return f"TLS handshake failed: {reason}"
        cause = cause.__cause__ or cause.__context__
    return None
