"""Share codes through the door: create, revoke and redeem, every attempt audited."""

from __future__ import annotations

import asyncio

from federation.access.principals import (
    HISTORY_READ,
    SHARE_CREATE,
    AccessContext,
    Principal,
    audit_patient_ids,
    patient_key,
)
from federation.access.share import CreatedShare, RedeemedShare, ShareRecord
from federation.audit.records import AuditAction, AuditOutcome
from federation.errors import AccessError, QueryError
from federation.models import PatientQuery
from federation.service._base import ANONYMOUS, ServiceBase, code_of, refusal


class ShareDoors(ServiceBase):
    """Creating, revoking and redeeming share codes."""

    async def create_share(
        self,
        access: AccessContext,
        patient: PatientQuery,
        studies: list[str] | None,
        ttl_s: int | None,
        single_use: bool,
    ) -> CreatedShare:
        """A share code for a patient the caller may read (shown once)."""
        principal = access.principal
        ids = audit_patient_ids(patient, self._national_issuer)
        try:
            principal.require(SHARE_CREATE)
            if principal.share is not None:
                raise AccessError("a shared scope cannot be shared on", code="FORBIDDEN")
            window = None
            if not principal.has(HISTORY_READ):
                # Break-the-glass: the code ends with the window and carries its reason.
                window = await self._windows.window(principal.subject, patient_key(patient))
                if window is None:
                    raise AccessError("share only what you may read", code="FORBIDDEN")
            created = await self._shares.create(
                principal.subject,
                patient,
                studies,
                ttl_s,
                single_use,
                not_after=window.closes_at if window else None,
                emergency_reason=window.reason if window else None,
            )
        except (AccessError, QueryError) as exc:
            await self.record(
                access, AuditAction.SHARE_CREATE, refusal(exc), patient_ids=ids, detail=code_of(exc)
            )
            raise
        await self.record(
            access,
            AuditAction.SHARE_CREATE,
            AuditOutcome.SUCCESS,
            patient_ids=ids,
            detail=_share_detail(created.record),
            reason=created.record.emergency_reason,
            emergency=created.record.emergency_reason is not None,
        )
        return created

    async def revoke_share(self, access: AccessContext, code: str) -> ShareRecord:
        """Revoke a share code at once (its tokens stop working too)."""
        try:
            access.principal.require(SHARE_CREATE)
            record = await self._shares.revoke(access.principal, code)
        except (AccessError, QueryError) as exc:
            await self.record(access, AuditAction.SHARE_REVOKE, refusal(exc), detail=code_of(exc))
            raise
        ids = audit_patient_ids(record.patient, self._national_issuer)
        await self.record(
            access,
            AuditAction.SHARE_REVOKE,
            AuditOutcome.SUCCESS,
            patient_ids=ids,
            detail=f"share={record.id}",
        )
        return record

    async def redeem_share(
        self, code: str, client_address: str | None, access: AccessContext
    ) -> RedeemedShare:
        """A bearer token reading exactly the code's scope; every attempt is audited.

        An anonymous caller's failures are journaled within a budget per client address (each
        alias and each spelling of a code is one attempt); past it, and for every attempt refused
        by a lock-out, they are counted and journaled as one summary per address a minute.
        """
        address = client_address or "unknown"
        try:
            redeemed = await self._shares.redeem(code, address)
        except AccessError as exc:
            anonymous = access.principal.subject == ANONYMOUS.subject
            kind = AuditAction.SHARE_REDEEM.value
            if anonymous and exc.code == "LOCKED_OUT":
                self._redemptions.count(kind, address, exc.code)
            elif not anonymous or self._redemptions.admit(kind, address, exc.code):
                await self.record(access, AuditAction.SHARE_REDEEM, AuditOutcome.DENIED, detail=exc.code)
            raise
        ids = audit_patient_ids(redeemed.record.patient, self._national_issuer)
        await self.record(
            access,
            AuditAction.SHARE_REDEEM,
            AuditOutcome.SUCCESS,
            patient_ids=ids,
            detail=f"share={redeemed.record.id}",
            reason=redeemed.record.emergency_reason,
            emergency=redeemed.record.emergency_reason is not None,
        )
        return redeemed

    async def share_principal(self, token: str) -> Principal:
        """The principal of a redeemed share token (the authenticator's resolver)."""
        return await self._shares.principal_for(token)

    def revocation_signal(self, share_id: str) -> asyncio.Event:
        """An event set when this process revokes the share (for sockets opened with its token)."""
        return self._shares.revocation_signal(share_id)


def _share_detail(record: ShareRecord) -> str:
    scope = f"studies={len(record.studies)}" if record.studies is not None else "patient"
    return f"share={record.id} {scope} expires={record.expires_at.isoformat()} single_use={record.single_use}"
