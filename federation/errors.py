"""The one exception tree of pacsfed.

    PacsfedError
    ├── ConfigError                 bad or missing configuration
    ├── QueryError                  a query the engine cannot run (bad patient input, unknown source)
    ├── Overloaded                  too many queries pending: refused at once (OVERLOADED, HTTP 503)
    ├── SourceBusy                  pacsfed's own slots for one source held until the deadline: not asked (BUSY)
    ├── CacheError                  the exam cache failed (read or write)
    │   └── CacheUnavailable        a CACHE_ONLY query whose cache cannot be read (CACHE_UNAVAILABLE)
    ├── AccessError                 the caller may not do this (403)
    │   └── AuthenticationError     no, expired or invalid credentials (401)
    ├── AuditError                  an audit record could not be kept durably
    │   └── AuditUnavailable        the journal cannot take records now (AUDIT_UNAVAILABLE)
    └── ConnectorError              one source failed; the engine turns it into a source status
        ├── SourceUnreachable       connection refused, DNS failure, association rejected   → UNREACHABLE
        ├── SourceTimeout           the source did not answer in time                      → TIMEOUT
        ├── SourceProtocolError     the peer answered something we cannot use              → ERROR
        │   └── SourceAuthError     the peer refused our credentials                       → ERROR
        └── SourceSkipped           its circuit breaker is open: not asked now             → SKIPPED

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


class Overloaded(PacsfedError):
    """More queries are pending than ``server.max_pending_queries``: refused at once, try again later."""

    code = "OVERLOADED"

    def __init__(self, message: str, retry_after_s: int = 1) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class CacheError(PacsfedError):
    """The exam cache could not be read or written."""


class CacheUnavailable(CacheError):
    """A query that may only use the cache cannot read it; ``code`` is the GraphQL error code."""

    code = "CACHE_UNAVAILABLE"


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


class SourceSkipped(ConnectorError):
    """The source's circuit breaker is open after repeated failures: not asked now (``retry_after_s``)."""

    code = "SOURCE_UNAVAILABLE"

    def __init__(self, message: str, retry_after_s: int = 1) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class SourceBusy(PacsfedError):
    """pacsfed's own slots for a source (``max_concurrency``) stayed taken until the deadline: not asked.

    pacsfed's load, not the source's failure: never counted against the source's breaker.
    """

    code = "BUSY"

    def __init__(self, message: str, retry_after_s: int = 1) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


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


class AuditUnavailable(AuditError):
    """The journal cannot take records now (disk full, I/O error): nothing audited may proceed."""

    code = "AUDIT_UNAVAILABLE"
