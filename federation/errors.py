"""The one exception tree of pacsfed.

    PacsfedError
    ├── ConfigError                 bad or missing configuration
    ├── QueryError                  a query the engine cannot run (bad patient input, unknown source)
    ├── CacheError                  the exam cache failed (read or write)
    ├── AccessError                 the caller may not do this (403)
    │   └── AuthenticationError     no, expired or invalid credentials (401)
    ├── AuditError                  an audit record could not be kept durably
    └── ConnectorError              one source failed; the engine turns it into a source status
        ├── SourceUnreachable       connection refused, DNS failure, association rejected   → UNREACHABLE
        ├── SourceTimeout           the source did not answer in time                      → TIMEOUT
        ├── SourceProtocolError     the peer answered something we cannot use              → ERROR
        └── SourceAuthError         the peer refused our credentials                       → ERROR

Messages never carry patient data: they name the source, the protocol step and the reason only.
Foreign exceptions (pynetdicom, httpx, elasticsearch) are translated at the boundary with
``raise ... from exc`` and never escape a connector or the cache.
"""

from __future__ import annotations


class PacsfedError(Exception):
    """Root of every error pacsfed raises on purpose."""


class ConfigError(PacsfedError):
    """The configuration is missing, unreadable or invalid."""


class QueryError(PacsfedError):
    """The query cannot be run as asked; ``code`` is the GraphQL error code."""

    def __init__(self, message: str, code: str = "BAD_QUERY") -> None:
        super().__init__(message)
        self.code = code


class CacheError(PacsfedError):
    """The exam cache could not be read or written."""


class ConnectorError(PacsfedError):
    """One source failed to answer usefully."""


class SourceUnreachable(ConnectorError):
    """The source could not be reached or refused the association."""


class SourceTimeout(ConnectorError):
    """The source did not answer within the time it was given."""


class SourceProtocolError(ConnectorError):
    """The source answered, but not with anything we can use."""


class SourceAuthError(SourceProtocolError):
    """The source refused our credentials."""


class AccessError(PacsfedError):
    """The caller may not do this; ``code`` is the GraphQL error code, ``status`` the HTTP status."""

    def __init__(self, message: str, code: str = "FORBIDDEN", status: int = 403) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


class AuthenticationError(AccessError):
    """No, expired or invalid credentials."""

    def __init__(self, message: str, code: str = "UNAUTHENTICATED") -> None:
        super().__init__(message, code=code, status=401)


class AuditError(PacsfedError):
    """An audit record could not be written durably: the audited action must not proceed."""
