"""Images through the door: WADO-RS forwarded to a source holding the study, authorized, audited, streamed.

Who may: like a history (``history:read``; ``principal.sources`` limits the sources asked;
``history:emergency`` alone reaches only studies of patients with the caller's break-the-glass
window open, audited as emergency access), and a share code for its own studies only (a code for a whole history: studies of its patient). Where
from: the sources that can retrieve (``supports_retrieve``) and that hold the study, found with
``find_study`` (``search_studies`` by StudyInstanceUID); a source whose search failed is tried too (after those
that answered holding it), since a failed search says nothing. The first holder that answers
before its first-byte deadline serves the request; a holder that fails or answers 404 before
then hands it to the next. Audited as ``IMAGE_READ``: the access (study, sources) durably before
a source is asked, the outcome (source, status, bytes) once the body has been passed on.
"""

from __future__ import annotations

import collections
import contextlib
import time
import weakref
from collections.abc import AsyncIterator, Callable
from typing import Protocol, cast

from connectors.base import Connector
from federation.access.principals import HISTORY_EMERGENCY, HISTORY_READ, AccessContext, patient_key
from federation.audit.records import AuditAction, AuditOutcome
from federation.engine import SourceCall
from federation.engine.resilience import CircuitState
from federation.errors import (
    AccessError,
    ConnectorError,
    PacsfedError,
    QueryError,
    SourceBusy,
    SourceSkipped,
)
from federation.models import SourceStatus
from federation.retrieve import RetrieveRequest, RetrieveStream
from federation.search import StudySearchResult
from federation.service._base import ServiceBase, code_of


class _Searches(Protocol):
    async def find_study(
        self,
        study_instance_uid: str,
        access: AccessContext,
        *,
        source_ids: tuple[str, ...] | None = None,
        deadline_ms: int | None = None,
    ) -> StudySearchResult: ...


HOLDERS_TTL_S = 60.0
"""How long where a study was found is remembered: a viewer asks for a study's series, instances and
frames one request at a time, and one search by StudyInstanceUID serves them all."""
_HOLDERS_KEPT = 4096

_HolderKey = tuple[str, tuple[str, ...], str | None]
"""The study, the sources the caller may ask, and the patient a whole-history share is limited to."""


class HolderMemory:
    """Where studies were found lately (source ids, best first, and the patient as audited)."""

    def __init__(
        self,
        ttl_s: float = HOLDERS_TTL_S,
        size: int = _HOLDERS_KEPT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ttl_s, self._size, self._clock = ttl_s, size, clock
        self._found: collections.OrderedDict[_HolderKey, tuple[float, tuple[str, ...], tuple[str, ...]]] = (
            collections.OrderedDict()
        )

    def get(self, key: _HolderKey) -> tuple[tuple[str, ...], tuple[str, ...]] | None:
        """The holders and patient ids found for *key*, unless too old."""
        entry = self._found.get(key)
        if entry is None or self._clock() - entry[0] > self._ttl_s:
            self._found.pop(key, None)
            return None
        return entry[1], entry[2]

    def put(self, key: _HolderKey, holders: tuple[str, ...], patient_ids: tuple[str, ...]) -> None:
        """Remember *holders* for *key* (the oldest entry goes past the size)."""
        self._found[key] = (self._clock(), holders, patient_ids)
        self._found.move_to_end(key)
        while len(self._found) > self._size:
            self._found.popitem(last=False)

    def forget(self, key: _HolderKey) -> None:
        """Drop *key*: its holders failed or no longer hold it."""
        self._found.pop(key, None)


class RetrieveReads(ServiceBase):
    """WADO-RS retrieval from the holding sources, authorized and audited like any image access."""

    holder_memory: HolderMemory | None = None
    """Made at first use: where studies were found lately (:class:`HolderMemory`)."""

    async def retrieve(self, request: RetrieveRequest, access: AccessContext) -> RetrieveStream:
        """The first holding source's answer, its body streamed (audited when it ends).

        Each holder is asked under its circuit breaker, as a history query, and one of its
        retrieval slots (``max_retrievals``, apart from the queries' ``max_concurrency``;
        ``FederationEngine.guarded``); the slot is held until the body ends or breaks off.
        Raises AccessError (audited DENIED), QueryError ``NOT_FOUND`` when no source open to the
        caller holds the study, Overloaded, AuditUnavailable, or when every holder failed before
        its first byte: the last holder's ConnectorError, else SourceBusy (no slot of pacsfed's
        before the query deadline), else SourceSkipped (every holder's circuit open, at once).
        """
        study = request.study_instance_uid
        candidates = await self._retrieving(request, access)
        share = access.principal.share
        limited_to = patient_key(share.patient) if share is not None and share.studies is None else None
        key = (study, tuple(c.id for c in candidates), limited_to)
        memory = self.holder_memory = self.holder_memory or HolderMemory()
        remembered = memory.get(key)
        if remembered is None:
            holders, patient_ids = await self._holders(request, access, candidates)
            if holders:
                memory.put(key, tuple(c.id for c in holders), tuple(patient_ids))
        else:
            by_id = {c.id: c for c in candidates}
            holders, patient_ids = [by_id[i] for i in remembered[0]], list(remembered[1])
        # A holder whose circuit breaker is open (its searches keep failing) is tried last, not first.
        holders.sort(key=lambda c: self.engine.circuit_state(c.id) is CircuitState.OPEN)
        asked = [c.id for c in holders]
        failure: ConnectorError | SourceBusy | None = None
        # Admitted for the opening only (a long body holds no pending-query place); past the
        # limit, OVERLOADED before the access is journaled or a source asked.
        with self.engine.admitted():
            await self._record_image(
                access, AuditOutcome.SUCCESS, patient_ids, asked, f"access; study {study}"
            )
            for connector in holders:
                # Each holder's own wait for a slot (the source has its own bounds): a slow first
                # holder leaves the next one its whole wait, not what the first one left over.
                deadline = self.engine.deadline_for(None)
                call = self.engine.guarded(connector.id, deadline, retrieval=True)
                try:
                    await call.start()
                except (SourceSkipped, SourceBusy) as exc:  # not asked: a real failure tells more
                    failure = _worse(failure, exc)
                    continue
                try:
                    stream = await connector.retrieve(request)
                except BaseException as exc:
                    call.end(exc)
                    if not isinstance(exc, ConnectorError):
                        raise
                    failure = exc
                    continue
                call.answered()  # judged now: a long download that is a probe keeps no query out
                if stream.status == 404:
                    try:
                        await stream.aclose()
                    finally:
                        call.end()  # it answered: the source is up
                    continue
                held = _holding(stream.chunks, call)
                stream.chunks = self._audited(held, stream, access, patient_ids, study)
                return stream
        memory.forget(key)  # asked again next time: a holder may be back, or the study moved
        if failure is not None:
            await self._record_image(
                access,
                AuditOutcome.FAILURE,
                patient_ids,
                asked,
                f"{code_of(failure)}; study {study}",
                soon=True,
            )
            raise failure
        await self._record_image(
            access, AuditOutcome.SUCCESS, patient_ids, asked, f"not held; study {study}", soon=True
        )
        raise QueryError("no source open to this caller holds this study", code="NOT_FOUND")

    async def _retrieving(self, request: RetrieveRequest, access: AccessContext) -> list[Connector]:
        """The retrieving sources open to the caller; AccessError (audited) when it may not read images."""
        principal = access.principal
        try:
            share = principal.share
            if share is not None:
                if share.studies is not None and request.study_instance_uid not in share.studies:
                    raise AccessError("this share code does not grant this study", code="FORBIDDEN")
            elif not principal.has(HISTORY_READ) and not principal.has(HISTORY_EMERGENCY):
                # history:emergency alone: the study search keeps only patients with an open window
                raise AccessError(
                    f"this needs the scope {HISTORY_READ} or {HISTORY_EMERGENCY}", code="FORBIDDEN"
                )
        except AccessError as exc:
            detail = f"{exc.code}; study {request.study_instance_uid}"
            await self._record_image(access, AuditOutcome.DENIED, [], [], detail)
            raise
        allowed = principal.sources
        return [
            c
            for c in self.engine.select(None)
            if c.supports_retrieve and (allowed is None or c.id in allowed)
        ]

    async def _holders(
        self, request: RetrieveRequest, access: AccessContext, candidates: list[Connector]
    ) -> tuple[list[Connector], list[str]]:
        """The candidates holding the study (those whose search failed last), and its patient as audited."""
        if not candidates:
            return [], []
        share = access.principal.share
        result = await cast(_Searches, self).find_study(
            request.study_instance_uid, access, source_ids=tuple(c.id for c in candidates)
        )
        holding: dict[str, None] = {}
        patient_ids: dict[str, None] = {}
        for match in result.studies:
            if match.exam.study_instance_uid != request.study_instance_uid:
                continue
            for location in match.exam.locations:
                holding[location.source.id] = None
                if location.patient_id:
                    patient_ids[f"{location.patient_id}^^^{location.issuer_of_patient_id or ''}"] = None
        unknown = {o.source.id for o in result.sources if o.status is not SourceStatus.OK}
        if share is not None and share.studies is None:
            unknown = set()  # a whole-history share: only where its patient's study was found
        ordered = [c for c in candidates if c.id in holding]
        ordered += [c for c in candidates if c.id in unknown and c.id not in holding]
        return ordered, list(patient_ids)

    async def _audited(
        self,
        body: AsyncIterator[bytes],
        stream: RetrieveStream,
        access: AccessContext,
        patient_ids: list[str],
        study: str,
    ) -> AsyncIterator[bytes]:
        """The source's body, passed on; its outcome journaled once it ended (or broke off)."""
        sent = 0
        outcome, what = AuditOutcome.FAILURE, "broken off"
        try:
            async for chunk in body:
                sent += len(chunk)
                yield chunk
            outcome, what = AuditOutcome.SUCCESS, f"HTTP {stream.status}"
        except PacsfedError as exc:
            what = code_of(exc)
            raise
        finally:
            closing = getattr(body, "aclose", None)
            if closing is not None:
                await closing()  # a caller gone: the source's connection is released now
            with contextlib.suppress(PacsfedError):
                await self._record_image(
                    access,
                    outcome,
                    patient_ids,
                    [stream.source_id],
                    f"{what}, {sent} bytes; study {study}",
                    soon=True,
                )

    async def _record_image(
        self,
        access: AccessContext,
        outcome: AuditOutcome,
        patient_ids: list[str],
        sources: list[str],
        detail: str,
        *,
        soon: bool = False,
    ) -> None:
        principal = access.principal
        share = principal.share
        reason = share.emergency_reason if share is not None else None
        glass = share is None and not principal.has(HISTORY_READ)  # break-the-glass: history:emergency only
        await self._record_parts(
            access,
            AuditAction.IMAGE_READ,
            outcome,
            patient_ids,
            detail,
            sources=sources,
            reason=reason,
            emergency=reason is not None or glass,
            soon=soon,
        )


def _worse(
    failure: ConnectorError | SourceBusy | None, held_back: SourceSkipped | SourceBusy
) -> ConnectorError | SourceBusy:
    """What to raise if no holder serves: a source's own failure, else BUSY, else the open circuit."""
    if failure is None or isinstance(failure, SourceSkipped):
        return held_back
    return failure


def _holding(body: AsyncIterator[bytes], call: SourceCall) -> AsyncIterator[bytes]:
    """The body, the source's slot held until it ends or breaks off; then the breaker judges the call."""
    held = _held(body, call)
    # A body never read (its caller gone before it began) is collected unstarted: its slot comes back then.
    weakref.finalize(held, call.end, GeneratorExit())
    return held


async def _held(body: AsyncIterator[bytes], call: SourceCall) -> AsyncIterator[bytes]:
    error: BaseException | None = None
    try:
        async for chunk in body:
            yield chunk
    except BaseException as exc:
        error = exc
        raise
    finally:
        closing = getattr(body, "aclose", None)
        try:
            if closing is not None:
                await closing()
        finally:
            call.end(error)
