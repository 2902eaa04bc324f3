"""Share codes in Elasticsearch: shared by every instance, single use held under concurrency."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from federation.access.principals import Principal, PrincipalKind
from federation.access.share import ShareCodes
from federation.access.share_elasticsearch import MAPPING, ElasticsearchShareStore
from federation.elasticsearch import make_client
from federation.errors import AccessError, AuthenticationError
from federation.models import PatientQuery
from federation.settings import CacheSettings
from federation.settings_security import ShareSettings

pytestmark = pytest.mark.integration

PATIENT = PatientQuery(patient_id="PA-001", issuer="HOSP_A")


@pytest.fixture
async def store(elasticsearch: Any) -> AsyncIterator[ElasticsearchShareStore]:
    client = make_client(CacheSettings(url=elasticsearch.url))
    store = ElasticsearchShareStore(client, f"pacsfed-test-shares-{uuid.uuid4().hex[:8]}")
    await store.start()
    yield store
    await client.close()


async def test_two_instances_share_codes_and_a_single_use_code_opens_once(
    store: ElasticsearchShareStore,
) -> None:
    first, second = ShareCodes(ShareSettings(), store), ShareCodes(ShareSettings(), store)
    created = await first.create("user:dr", PATIENT, ["1.2.3"], None, single_use=True)
    outcomes = await asyncio.gather(
        *(instance.redeem(created.code, f"10.0.0.{n}") for n, instance in enumerate((first, second) * 3)),
        return_exceptions=True,
    )
    redeemed = [o for o in outcomes if not isinstance(o, BaseException)]
    assert len(redeemed) == 1, outcomes  # optimistic concurrency: exactly one instance wins
    assert all(isinstance(o, AccessError) for o in outcomes if isinstance(o, BaseException))
    principal = await second.principal_for(redeemed[0].token)  # a token from one instance works on the other
    assert principal.share is not None and principal.share.patient == PATIENT
    assert principal.share.studies == {"1.2.3"}


async def test_revocation_reaches_every_instance_and_its_tokens(store: ElasticsearchShareStore) -> None:
    first, second = ShareCodes(ShareSettings(), store), ShareCodes(ShareSettings(), store)
    created = await first.create("user:dr", PATIENT, None, None, single_use=False)
    token = (await second.redeem(created.code, "10.0.0.1")).token
    creator = Principal("user:dr", PrincipalKind.USER, frozenset({"share:create"}))
    revoked = await second.revoke(creator, created.code)
    assert revoked.revoked_at is not None
    with pytest.raises(AccessError):
        await first.redeem(created.code, "10.0.0.2")
    with pytest.raises(AuthenticationError):
        await first.principal_for(token)
    stored = await store.by_code_hash(created.record.code_hash)
    assert stored is not None and created.code not in str(stored)  # only the hash is kept


async def test_a_break_the_glass_share_keeps_its_reason_and_end_in_an_older_index(elasticsearch: Any) -> None:
    client = make_client(
        CacheSettings(url=elasticsearch.url, request_timeout_s=30)
    )  # index creation, loaded CI
    try:
        store = ElasticsearchShareStore(client, f"pacsfed-test-shares-{uuid.uuid4().hex[:8]}")
        older = {k: v for k, v in MAPPING["properties"].items() if k != "emergency_reason"}
        await client.indices.create(index=store.index, mappings={"dynamic": "strict", "properties": older})
        await store.start()  # an index made by an earlier version gets the new field
        first, second = ShareCodes(ShareSettings(), store), ShareCodes(ShareSettings(), store)
        ends = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=10)
        created = await first.create(
            "user:er", PATIENT, None, 86_400, False, not_after=ends, emergency_reason="trauma"
        )
        assert created.record.expires_at == ends
        token = (await second.redeem(created.code, "10.0.0.1")).token
        grant = (await second.principal_for(token)).share
        assert grant is not None and (grant.emergency_reason, grant.expires_at) == ("trauma", ends)
    finally:
        await client.close()
