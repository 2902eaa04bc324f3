"""Share codes in Elasticsearch (``<prefix>-shares``), so that every pacsfed instance honours them."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
from collections.abc import Callable
from typing import Any

from elasticsearch import AsyncElasticsearch, ConflictError, NotFoundError

from federation.access.expiry import delete_expired
from federation.access.share import ShareRecord, ShareStore, ShareToken
from federation.elasticsearch import ELASTICSEARCH_ERRORS, IndexSetup, ensure_index, failure
from federation.errors import CacheError
from federation.models import PatientQuery

MAPPING: dict[str, Any] = {
    "dynamic": "strict",
    "properties": {
        "kind": {"type": "keyword"},
        "id": {"type": "keyword"},
        "code_hash": {"type": "keyword"},
        "creator": {"type": "keyword"},
        "patient": {"type": "object", "enabled": False},
        "studies": {"type": "keyword"},
        "created_at": {"type": "date"},
        "expires_at": {"type": "date"},
        "single_use": {"type": "boolean"},
        "redeemed": {"type": "integer"},
        "revoked_at": {"type": "date"},
        "emergency_reason": {"type": "keyword", "index": False, "doc_values": False},
    },
}
_KEEP_EXPIRED = dt.timedelta(days=7)
_RETRIES = 3


def _code_doc(record: ShareRecord) -> dict[str, Any]:
    document: dict[str, Any] = {
        "kind": "code",
        "id": record.id,
        "code_hash": record.code_hash,
        "creator": record.creator,
        "patient": record.patient.model_dump(mode="json", exclude_none=True),
        "studies": list(record.studies) if record.studies is not None else None,
        "created_at": record.created_at.isoformat(),
        "expires_at": record.expires_at.isoformat(),
        "single_use": record.single_use,
        "redeemed": record.redeemed,
        "revoked_at": record.revoked_at.isoformat() if record.revoked_at else None,
    }
    if record.emergency_reason is not None:
        document["emergency_reason"] = record.emergency_reason
    return document


def _record(source: dict[str, Any]) -> ShareRecord:
    studies = source.get("studies")
    revoked = source.get("revoked_at")
    return ShareRecord(
        id=source["id"],
        code_hash=source["code_hash"],
        creator=source["creator"],
        patient=PatientQuery.model_validate(source["patient"]),
        studies=tuple(studies) if studies is not None else None,
        created_at=dt.datetime.fromisoformat(source["created_at"]),
        expires_at=dt.datetime.fromisoformat(source["expires_at"]),
        single_use=bool(source["single_use"]),
        redeemed=int(source.get("redeemed") or 0),
        revoked_at=dt.datetime.fromisoformat(revoked) if revoked else None,
        emergency_reason=source.get("emergency_reason"),
    )


class ElasticsearchShareStore(ShareStore):
    """Codes and tokens keyed by their hashes; single use enforced with optimistic concurrency."""

    def __init__(self, client: AsyncElasticsearch, index_prefix: str) -> None:
        self._client = client
        self.index = f"{index_prefix}-shares"
        self._ready = False

    async def start(self) -> None:
        """Create the index and drop entries expired for a week, if Elasticsearch is up."""
        with contextlib.suppress(CacheError):
            await self.clean_expired()

    async def clean_expired(self) -> int:
        """Delete the entries expired for a week (at start-up, then periodically); CacheError if no index."""
        await self._ensure_index()
        cutoff = (dt.datetime.now(dt.UTC) - _KEEP_EXPIRED).isoformat()
        return await delete_expired(
            self._client, self.index, "expires_at", cutoff
        )  # failures logged, counted

    async def _ensure_index(self) -> None:
        if self._ready:
            return
        setup = IndexSetup(self.index, MAPPING)
        await ensure_index(self._client, setup, CacheError, "share store: cannot prepare the index")
        self._ready = True

    async def _get(self, doc_id: str) -> Any:
        await self._ensure_index()
        try:
            return await self._client.get(index=self.index, id=doc_id)
        except NotFoundError:
            return None
        except ELASTICSEARCH_ERRORS as exc:
            raise failure(exc, CacheError, "share store: read failed") from exc

    async def _put(self, doc_id: str, document: dict[str, Any], **conditions: Any) -> None:
        await self._ensure_index()
        try:
            await self._client.index(
                index=self.index, id=doc_id, document=document, refresh="wait_for", **conditions
            )
        except ConflictError:
            raise
        except ELASTICSEARCH_ERRORS as exc:
            raise failure(exc, CacheError, "share store: write failed") from exc

    async def add(self, record: ShareRecord) -> None:
        await self._put(f"code:{record.code_hash}", _code_doc(record), op_type="create")

    async def by_code_hash(self, code_hash: str) -> ShareRecord | None:
        found = await self._get(f"code:{code_hash}")
        return _record(found["_source"]) if found is not None else None

    async def mark_redeemed(self, record: ShareRecord) -> ShareRecord | None:
        def count(current: ShareRecord) -> ShareRecord | None:
            if current.single_use and current.redeemed > 0:
                return None
            return dataclasses.replace(current, redeemed=current.redeemed + 1)

        return await self._update(record.code_hash, count)

    async def revoke(self, record: ShareRecord, at: dt.datetime) -> ShareRecord:
        revoked = await self._update(
            record.code_hash, lambda current: dataclasses.replace(current, revoked_at=at)
        )
        if revoked is None:
            raise CacheError("share store: the revocation could not be written")
        return revoked

    async def _update(
        self, code_hash: str, change: Callable[[ShareRecord], ShareRecord | None]
    ) -> ShareRecord | None:
        """Apply ``change`` with optimistic concurrency (another instance may write meanwhile)."""
        for _ in range(_RETRIES):
            found = await self._get(f"code:{code_hash}")
            if found is None:
                return None
            updated = change(_record(found["_source"]))
            if updated is None:
                return None
            try:
                await self._put(
                    f"code:{code_hash}",
                    _code_doc(updated),
                    if_seq_no=found["_seq_no"],
                    if_primary_term=found["_primary_term"],
                )
            except ConflictError:
                continue  # written meanwhile: look again
            return updated
        return None

    async def add_token(self, token: ShareToken) -> None:
        document = {
            "kind": "token",
            "id": token.share_id,
            "code_hash": token.code_hash,
            "expires_at": token.expires_at.isoformat(),
        }
        await self._put(f"token:{token.token_hash}", document, op_type="create")

    async def token(self, token_hash: str) -> ShareToken | None:
        found = await self._get(f"token:{token_hash}")
        if found is None:
            return None
        source = found["_source"]
        return ShareToken(
            token_hash, source["id"], source["code_hash"], dt.datetime.fromisoformat(source["expires_at"])
        )
