"""Who is asking and what they may do: principals, scopes, break-the-glass windows."""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import time
from collections.abc import Iterable

from federation.errors import AccessError
from federation.models import PatientQuery
from federation.settings_security import ALL_SCOPES

HISTORY_READ = "history:read"
HISTORY_EMERGENCY = "history:emergency"
SHARE_CREATE = "share:create"
IDENTITY_ADMIN = "identity:admin"
AUDIT_READ = "audit:read"
METRICS_READ = "metrics:read"

MAX_REASON_LENGTH = 500
_MIN_REASON_LENGTH = 4


class PrincipalKind(enum.StrEnum):
    """How the caller was authenticated."""

    USER = "user"
    """An OIDC bearer token."""
    SERVICE = "service"
    """An API key (an EHR integration)."""
    SHARE = "share"
    """A redeemed share code: read-only, one patient's history or chosen studies."""
    DEVELOPMENT = "development"
    """``auth: {mode: none}``: everyone, with every scope (development only)."""
    LOCAL = "local"
    """The command line on the server itself."""
    SYSTEM = "system"
    """pacsfed itself, in records nobody asked for (a clock step seen by the audit journal)."""


@dataclasses.dataclass(frozen=True, slots=True)
class ShareGrant:
    """What a redeemed share code lets its bearer read."""

    share_id: str
    patient: PatientQuery
    studies: frozenset[str] | None
    expires_at: dt.datetime
    emergency_reason: str | None = None
    """Set when the code was created under break-the-glass: every read through it is flagged."""


@dataclasses.dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller."""

    subject: str
    """``user:<sub>``, ``apikey:<id>``, ``share:<share id>``, ``dev``, ``cli:<os user>``."""
    kind: PrincipalKind
    scopes: frozenset[str]
    sources: frozenset[str] | None = None
    """Sources this caller may query; None means all."""
    share: ShareGrant | None = None
    expires_at: dt.datetime | None = None

    def has(self, scope: str) -> bool:
        """True when the caller holds ``scope``."""
        return scope in self.scopes

    def require(self, scope: str) -> None:
        """Raise AccessError unless the caller holds ``scope``."""
        if scope not in self.scopes:
            raise AccessError(f"this needs the scope {scope}", code="FORBIDDEN")


def development_principal() -> Principal:
    """The caller of an unauthenticated development server: every scope."""
    return Principal(subject="dev", kind=PrincipalKind.DEVELOPMENT, scopes=frozenset(ALL_SCOPES))


def local_principal(os_user: str) -> Principal:
    """The operator running the command line on the server."""
    return Principal(subject=f"cli:{os_user}", kind=PrincipalKind.LOCAL, scopes=frozenset(ALL_SCOPES))


def known_scopes(granted: Iterable[str]) -> frozenset[str]:
    """The pacsfed scopes among ``granted`` (others are ignored)."""
    return frozenset(granted) & frozenset(ALL_SCOPES)


@dataclasses.dataclass(frozen=True, slots=True)
class AccessContext:
    """One request's caller and circumstances, passed by every front end to the service."""

    principal: Principal
    client_address: str | None = None
    request_id: str | None = None
    channel: str = "graphql"


def clean_reason(reason: str | None) -> str | None:
    """A break-the-glass reason stripped and bounded, or None when blank."""
    if reason is None:
        return None
    reason = " ".join(reason.split())
    if not reason:
        return None
    if len(reason) < _MIN_REASON_LENGTH:
        raise AccessError("a break-the-glass reason must say why (a few words)", code="REASON_REQUIRED")
    if len(reason) > MAX_REASON_LENGTH:
        raise AccessError(f"a reason is at most {MAX_REASON_LENGTH} characters", code="BAD_REASON")
    return reason


@dataclasses.dataclass(frozen=True, slots=True)
class EmergencyWindow:
    """An open break-the-glass grant: why, and when it closes (wall clock)."""

    reason: str
    closes_at: dt.datetime


class EmergencyWindows:
    """Break-the-glass grants: one subject, one patient, for a limited time after a reason was given.

    This one keeps them in this process only (the memory cache, tests); with several workers they
    live in Elasticsearch (:class:`federation.access.ElasticsearchEmergencyWindows`).
    """

    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        self._open: dict[tuple[str, str], tuple[float, str]] = {}

    async def open(self, subject: str, patient_key: str, reason: str) -> None:
        """Grant ``subject`` emergency access to ``patient_key`` for the window."""
        self.open_here(subject, patient_key, reason)

    async def reason_for(self, subject: str, patient_key: str) -> str | None:
        """The reason of an open window, or None when there is none (or it has closed)."""
        window = await self.window(subject, patient_key)
        return window.reason if window is not None else None

    async def window(self, subject: str, patient_key: str) -> EmergencyWindow | None:
        """The open window of ``subject`` for ``patient_key`` with its end, or None."""
        return self.window_here(subject, patient_key)

    def open_here(self, subject: str, patient_key: str, reason: str) -> None:
        """Open the window in this process's memory."""
        self._prune()
        self._open[(subject, patient_key)] = (time.monotonic() + self.window_s, reason)

    def window_here(self, subject: str, patient_key: str) -> EmergencyWindow | None:
        """The window open in this process's memory, or None."""
        entry = self._open.get((subject, patient_key))
        if entry is None:
            return None
        until, reason = entry
        left = until - time.monotonic()
        if left <= 0:
            del self._open[(subject, patient_key)]
            return None
        return EmergencyWindow(reason, dt.datetime.now(dt.UTC) + dt.timedelta(seconds=left))

    def _prune(self) -> None:
        now = time.monotonic()
        for key in [key for key, (until, _) in self._open.items() if until <= now]:
            del self._open[key]


def patient_key(query: PatientQuery) -> str:
    """A stable key naming the patient a query is about (for windows and share scopes)."""
    key = query.cache_key()
    if key is not None:
        return key
    born = query.birth_date.isoformat() if query.birth_date else ""
    return f"demographics|{query.family_name or ''}|{query.given_name or ''}|{born}|{query.sex or ''}"


def audit_patient_ids(query: PatientQuery, national_issuer: str | None) -> list[str]:
    """The identifiers of a query as audit strings (``ID^^^ISSUER``; names when no ID was given)."""
    if query.patient_id is not None:
        return [f"{query.patient_id}^^^{query.issuer or ''}"]
    if query.national_id is not None:
        return [f"{query.national_id}^^^{national_issuer or ''}"]
    born = query.birth_date.isoformat() if query.birth_date else ""
    return [f"name:{query.family_name or ''}^{query.given_name or ''}|{born}"]
