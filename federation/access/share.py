"""Share codes: at most 24 hours of read-only access to one patient's history or chosen studies.

A code carries 160 random bits, is shown once to its creator and stored only as a SHA-256 hash.
Redeeming it yields a bearer token (also stored hashed) that lives no longer than the code.
Failed redemptions are counted per client address and per code prefix; too many lock both out.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import dataclasses
import datetime as dt
import secrets
import time
import uuid
import weakref
from abc import ABC, abstractmethod

from federation.access.auth import SHARE_TOKEN_PREFIX, hash_secret
from federation.access.principals import Principal, PrincipalKind, ShareGrant
from federation.errors import AccessError, AuthenticationError, QueryError
from federation.models import PatientQuery
from federation.settings_security import ShareSettings

HARD_MAX_TTL_S = 24 * 3600
_CODE_BYTES = 20  # 160 bits
_PREFIX_LENGTH = 4
_MAX_STUDIES = 500
_MAX_SIGNALLED_SHARES = 1000


@dataclasses.dataclass(frozen=True, slots=True)
class ShareRecord:
    """A share code as stored: its hash, never the code."""

    id: str
    code_hash: str
    creator: str
    patient: PatientQuery
    studies: tuple[str, ...] | None
    created_at: dt.datetime
    expires_at: dt.datetime
    single_use: bool
    redeemed: int = 0
    revoked_at: dt.datetime | None = None
    emergency_reason: str | None = None
    """The break-the-glass reason when the creator could read the patient only in an emergency window."""

    def usable(self, now: dt.datetime) -> bool:
        """True while the code may still be redeemed."""
        return (
            self.revoked_at is None and now < self.expires_at and not (self.single_use and self.redeemed > 0)
        )


@dataclasses.dataclass(frozen=True, slots=True)
class ShareToken:
    """A redeemed share code's bearer token, as stored (hashed)."""

    token_hash: str
    share_id: str
    code_hash: str
    expires_at: dt.datetime


@dataclasses.dataclass(frozen=True, slots=True)
class CreatedShare:
    """What the creator is shown, once."""

    code: str
    record: ShareRecord


@dataclasses.dataclass(frozen=True, slots=True)
class RedeemedShare:
    """What redeeming a code yields."""

    token: str
    record: ShareRecord
    expires_at: dt.datetime


class ShareStore(ABC):
    """Where share codes and their tokens are kept (hashed)."""

    @abstractmethod
    async def add(self, record: ShareRecord) -> None:
        """Store a new share code."""

    @abstractmethod
    async def by_code_hash(self, code_hash: str) -> ShareRecord | None:
        """The share with this code hash, if any."""

    @abstractmethod
    async def mark_redeemed(self, record: ShareRecord) -> ShareRecord | None:
        """Count one redemption, atomically; None when a single-use code was taken meanwhile."""

    @abstractmethod
    async def revoke(self, record: ShareRecord, at: dt.datetime) -> ShareRecord:
        """Mark the share revoked."""

    @abstractmethod
    async def add_token(self, token: ShareToken) -> None:
        """Store a redeemed code's token."""

    @abstractmethod
    async def token(self, token_hash: str) -> ShareToken | None:
        """The token with this hash, if any."""

    async def start(self) -> None:
        """Prepare storage (create indices, drop long-expired entries)."""
        return None


class MemoryShareStore(ShareStore):
    """Share codes in this process only (tests, the demo, a single instance)."""

    def __init__(self) -> None:
        self._by_hash: dict[str, ShareRecord] = {}
        self._tokens: dict[str, ShareToken] = {}

    async def add(self, record: ShareRecord) -> None:
        self._by_hash[record.code_hash] = record

    async def by_code_hash(self, code_hash: str) -> ShareRecord | None:
        return self._by_hash.get(code_hash)

    async def mark_redeemed(self, record: ShareRecord) -> ShareRecord | None:
        current = self._by_hash[record.code_hash]
        if current.single_use and current.redeemed > 0:
            return None
        updated = dataclasses.replace(current, redeemed=current.redeemed + 1)
        self._by_hash[record.code_hash] = updated
        return updated

    async def revoke(self, record: ShareRecord, at: dt.datetime) -> ShareRecord:
        updated = dataclasses.replace(self._by_hash[record.code_hash], revoked_at=at)
        self._by_hash[record.code_hash] = updated
        return updated

    async def add_token(self, token: ShareToken) -> None:
        self._tokens[token.token_hash] = token

    async def token(self, token_hash: str) -> ShareToken | None:
        return self._tokens.get(token_hash)


class RedemptionLimiter:
    """Counts failed redemptions per key within a window; a key with too many is locked out.

    This one counts in this process only (the memory cache, tests); with several workers the
    counts live in Elasticsearch (:class:`federation.access.ElasticsearchRedemptionLimiter`).
    """

    def __init__(self, max_failures: int, window_s: float) -> None:
        self.max_failures = max_failures
        self.window_s = window_s
        self._failures: dict[str, collections.deque[float]] = {}

    async def locked(self, *keys: str) -> bool:
        """True when any of ``keys`` has failed too often lately."""
        return self.locked_here(*keys)

    async def fail(self, *keys: str) -> None:
        """Count one failure against each of ``keys``."""
        self.fail_here(*keys)

    def locked_here(self, *keys: str) -> bool:
        """Whether this process alone has counted too many failures for any of ``keys``."""
        now = time.monotonic()
        return any(self._recent(key, now) >= self.max_failures for key in keys)

    def fail_here(self, *keys: str) -> None:
        """Count one failure against each of ``keys`` in this process's memory."""
        now = time.monotonic()
        for key in keys:
            self._failures.setdefault(key, collections.deque()).append(now)
            self._recent(key, now)
        if len(self._failures) > 100_000:  # bound memory under a spray of distinct keys
            for key in [k for k, v in self._failures.items() if not v]:
                del self._failures[key]

    def _recent(self, key: str, now: float) -> int:
        failures = self._failures.get(key)
        if not failures:
            return 0
        while failures and failures[0] <= now - self.window_s:
            failures.popleft()
        return len(failures)


def normalize_code(code: str) -> str:
    """A code as typed (any case, dashes and spaces) in canonical form."""
    return "".join(code.split()).replace("-", "").upper()


def _new_code() -> str:
    raw = base64.b32encode(secrets.token_bytes(_CODE_BYTES)).decode("ascii").rstrip("=")
    return "-".join(raw[i : i + 4] for i in range(0, len(raw), 4))


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class ShareCodes:
    """Creates, revokes and redeems share codes; turns share tokens back into principals."""

    def __init__(
        self, settings: ShareSettings, store: ShareStore, limiter: RedemptionLimiter | None = None
    ) -> None:
        self._settings = settings
        self._store = store
        self._limiter = limiter or RedemptionLimiter(settings.max_failures, settings.lockout_s)
        self._revocation_signals: dict[str, weakref.WeakSet[asyncio.Event]] = {}

    def revocation_signal(self, share_id: str) -> asyncio.Event:
        """An event set when this process revokes the share; held weakly, so dropping it is enough."""
        if len(self._revocation_signals) > _MAX_SIGNALLED_SHARES:
            for stale in [key for key, events in self._revocation_signals.items() if not events]:
                del self._revocation_signals[stale]
        event = asyncio.Event()
        self._revocation_signals.setdefault(share_id, weakref.WeakSet()).add(event)
        return event

    @property
    def max_failures(self) -> int:
        """Failed redemptions per client (and per code prefix) before a lock-out."""
        return self._settings.max_failures

    def ttl_for(self, asked_s: int | None) -> int:
        """The lifetime a code gets: the default when not asked, never more than the cap (≤ 24 h)."""
        cap = min(self._settings.max_ttl_s, HARD_MAX_TTL_S)
        if asked_s is None:
            return min(self._settings.default_ttl_s, cap)
        if asked_s <= 0:
            raise QueryError("ttlSeconds must be positive", code="BAD_TTL")
        return max(60, min(asked_s, cap))

    async def create(
        self,
        creator: str,
        patient: PatientQuery,
        studies: list[str] | None,
        ttl_s: int | None,
        single_use: bool,
        *,
        not_after: dt.datetime | None = None,
        emergency_reason: str | None = None,
    ) -> CreatedShare:
        """A new code for ``patient`` (optionally only ``studies``), shown once, expiring by ``not_after``."""
        if patient.cache_key() is None:
            raise QueryError("a share names a patient by id or national id", code="BAD_SHARE")
        chosen: tuple[str, ...] | None = None
        if studies is not None:
            chosen = tuple(dict.fromkeys(uid.strip() for uid in studies if uid.strip()))
            if not chosen or len(chosen) > _MAX_STUDIES:
                raise QueryError(f"share between 1 and {_MAX_STUDIES} studies", code="BAD_SHARE")
        code = _new_code()
        now = _utcnow()
        expires_at = now + dt.timedelta(seconds=self.ttl_for(ttl_s))
        if not_after is not None:
            expires_at = min(expires_at, not_after)
        record = ShareRecord(
            id=uuid.uuid4().hex,
            code_hash=hash_secret(normalize_code(code)),
            creator=creator,
            patient=patient,
            studies=chosen,
            created_at=now,
            expires_at=expires_at,
            single_use=single_use,
            emergency_reason=emergency_reason,
        )
        await self._store.add(record)
        return CreatedShare(code=code, record=record)

    async def revoke(self, principal: Principal, code: str) -> ShareRecord:
        """Revoke a code its holder created (or any code, for an identity admin)."""
        record = await self._store.by_code_hash(hash_secret(normalize_code(code)))
        if record is None:
            raise QueryError("no such share code", code="SHARE_NOT_FOUND")
        if record.creator != principal.subject and not principal.has("identity:admin"):
            raise AccessError("only its creator may revoke a share code", code="FORBIDDEN")
        if record.revoked_at is not None:
            return record
        revoked = await self._store.revoke(record, _utcnow())
        for event in self._revocation_signals.pop(record.id, ()):
            event.set()
        return revoked

    async def redeem(self, code: str, client: str) -> RedeemedShare:
        """A bearer token for the code's scope; AccessError when wrong, used up, expired or locked out."""
        normalized = normalize_code(code)
        keys = (f"client:{client}", f"prefix:{normalized[:_PREFIX_LENGTH]}")
        if await self._limiter.locked(*keys):
            raise AccessError("too many failed attempts: try again later", code="LOCKED_OUT", status=429)
        record = await self._store.by_code_hash(hash_secret(normalized)) if normalized else None
        now = _utcnow()
        if record is None or not record.usable(now):
            await self._limiter.fail(*keys)
            raise AccessError(
                "this code is not valid (wrong, expired, revoked or used)", code="BAD_SHARE_CODE"
            )
        updated = await self._store.mark_redeemed(record)
        if updated is None:
            await self._limiter.fail(*keys)
            raise AccessError(
                "this code is not valid (wrong, expired, revoked or used)", code="BAD_SHARE_CODE"
            )
        token = f"{SHARE_TOKEN_PREFIX}{secrets.token_urlsafe(32)}"
        await self._store.add_token(
            ShareToken(hash_secret(token), record.id, record.code_hash, record.expires_at)
        )
        return RedeemedShare(token=token, record=updated, expires_at=record.expires_at)

    async def principal_for(self, token: str) -> Principal:
        """The read-only principal of a redeemed share token."""
        stored = await self._store.token(hash_secret(token))
        now = _utcnow()
        if stored is None or now >= stored.expires_at:
            raise AuthenticationError("the share token is unknown or expired", code="BAD_TOKEN")
        record = await self._store.by_code_hash(stored.code_hash)
        if record is None or record.revoked_at is not None or now >= record.expires_at:
            raise AuthenticationError("the share has been revoked or has expired", code="BAD_TOKEN")
        grant = ShareGrant(
            share_id=record.id,
            patient=record.patient,
            studies=frozenset(record.studies) if record.studies is not None else None,
            expires_at=record.expires_at,
            emergency_reason=record.emergency_reason,
        )
        return Principal(
            subject=f"share:{record.id}",
            kind=PrincipalKind.SHARE,
            scopes=frozenset({"history:read"}),
            share=grant,
            expires_at=record.expires_at,
        )
