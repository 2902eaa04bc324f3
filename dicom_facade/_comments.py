"""The ErrorComment (0000,0902) texts the facade sends: each written for it, within 64 characters.

ErrorComment is LO: at most 64 characters (PS3.5 6.2), in the default repertoire (a command set
carries no Specific Character Set, PS3.7 6.3.1). The service's messages are written for GraphQL
and HTTP, where length is free: a failure is said here in the facade's own words for its kind,
the service's message only when it fits whole (``partial: hosp-b UNREACHABLE``, "a UID is at most
64 digits and dots"), and never a message that may carry a path or a foreign reason (audit, cache).
``fit`` is the last safety net of every response (``find_response``): a longer text is cut at a
word and ends with ``...``, so no caller ever reads half a word.
"""

from __future__ import annotations

from federation.errors import AccessError, AuditError, CacheError, Overloaded, PacsfedError, QueryError

ERROR_COMMENT_MAX = 64
"""ErrorComment (0000,0902) is LO: at most 64 characters (PS3.5 6.2)."""

NOT_ALLOWED = "this calling AE is not allowed"
BUSY = "pacsfed is busy: try again shortly"
LEVELS = "only STUDY, SERIES and IMAGE levels are answered"
STUDY_NEEDS_KEY = "a STUDY query needs a PatientID, PatientName, UID or accession"
SERIES_NEEDS_STUDY = "a SERIES query needs the StudyInstanceUID"
IMAGE_NEEDS_SERIES = "an IMAGE query needs the Study and SeriesInstanceUID"
UNDECODABLE = "the identifier could not be decoded"
FAILED = "pacsfed could not answer this query"
QUERY_REFUSED = "pacsfed cannot run this query as asked"
ACCESS_REFUSED = "this calling AE may not run this query"
AUDIT_DOWN = "pacsfed cannot keep its audit trail now: try again later"
CACHE_DOWN = "pacsfed's exam cache cannot be read now: try again later"

FIXED = (
    NOT_ALLOWED,
    BUSY,
    LEVELS,
    STUDY_NEEDS_KEY,
    SERIES_NEEDS_STUDY,
    IMAGE_NEEDS_SERIES,
    UNDECODABLE,
    FAILED,
    QUERY_REFUSED,
    ACCESS_REFUSED,
    AUDIT_DOWN,
    CACHE_DOWN,
)
"""Every comment written for the facade (a test holds each to 64 characters)."""


def exact_key(keyword: str) -> str:
    """A single-value key given a pattern or a list (PS3.4 C.4.1.2.1)."""
    return f"{keyword}: one exact value, no wildcards"


def uid_key(keyword: str) -> str:
    """A UID key given a wildcard (PS3.4 C.2.2.2.2 allows a list, not a pattern)."""
    return f"{keyword}: UIDs only, no wildcards"


def for_error(exc: PacsfedError) -> str:
    """The comment for a query that failed whole: the kind of failure, the service's words if they fit."""
    if isinstance(exc, Overloaded):
        return BUSY
    if isinstance(exc, AuditError):
        return AUDIT_DOWN  # its message may name the journal's directory
    if isinstance(exc, CacheError):
        return CACHE_DOWN
    if isinstance(exc, QueryError | AccessError):
        message = _ascii(str(exc))
        if message and len(message) <= ERROR_COMMENT_MAX:
            return message
        return QUERY_REFUSED if isinstance(exc, QueryError) else ACCESS_REFUSED
    return FAILED


def fit(text: str) -> str:
    """``text`` in the default repertoire within 64 characters: cut at a word, with ``...``, if longer."""
    text = _ascii(text).strip()
    if len(text) <= ERROR_COMMENT_MAX:
        return text
    room = ERROR_COMMENT_MAX - 3
    cut = text[: room + 1].rsplit(" ", 1)[0] if " " in text[: room + 1] else text[:room]
    return cut[:room].rstrip(" ,;:") + "..."


def _ascii(text: str) -> str:
    """ErrorComment is in the default repertoire (command sets carry no character set)."""
    return "".join(c if " " <= c <= "~" and c != "\\" else "?" for c in text)
