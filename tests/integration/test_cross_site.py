"""Another site's page cannot redeem share codes, nor lock a hospital's shared address out (issue 12, item 8).

In-process, with the app's own lock-out (10 failures per address); over real HTTP in tests/outside.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from integration.test_security import AUDIT, CREATE, REDEEM, Api, codes, secured_app

pytestmark = pytest.mark.integration

OWN = "http://pacsfed.test"
FOREIGN = [
    {"origin": "https://evil.example"},
    {"origin": "null"},  # a sandboxed frame, a data: URL, or a page that hides its origin
    {"origin": "http://pacsfed.test.evil.example"},
    {"origin": "http://pacsfed.test:8080"},  # another port is another origin
    {"origin": "https://pacsfed.test"},  # and another scheme
    {},  # no Origin: every browser sends one on a POST, so this is no page of ours
    {"origin": OWN, "sec-fetch-site": "cross-site"},  # the browser knows better than a spoofable header
    {"origin": "garbage"},
]


async def test_the_share_page_refuses_other_sites_before_the_lock_out_counts(tmp_path: Path) -> None:
    async with secured_app(tmp_path) as api:
        code = await _code(api)
        for attempt in range(3):  # 24 wrong codes: more than twice the lock-out's 10
            for headers in FOREIGN:
                refused = await api.client.post("/s", data={"code": f"WRONG-{attempt}"}, headers=headers)
                assert refused.status_code == 403, headers
                assert "own page" in refused.text
        shown = await api.client.post("/s", data={"code": code}, headers={"origin": OWN})
        assert shown.status_code == 200, shown.text  # the address was not locked out
        assert "<table>" in shown.text
        assert shown.headers["referrer-policy"] == "same-origin"  # else browsers send Origin: null
        events = (await api.call(AUDIT, api.token("audit:read")))["data"]["auditEvents"]
        refusals = [e for e in events if e["action"] == "SHARE_REDEEM" and e["outcome"] == "DENIED"]
        assert len(refusals) == 20  # audited, within the flood budget of the address


async def test_anonymous_graphql_redemption_refuses_other_sites_before_the_lock_out_counts(
    tmp_path: Path,
) -> None:
    async with secured_app(tmp_path) as api:
        code = await _code(api)
        body = {"query": REDEEM, "variables": {"code": "AAAA-BBBB-CCCC"}}
        for _ in range(12):
            for headers in ({"origin": "https://evil.example"}, {"sec-fetch-site": "cross-site"}):
                refused = await api.client.post("/graphql", json=body, headers=headers)
                assert refused.status_code == 403
                assert codes(refused.json()) == ["FORBIDDEN"]
        own = await api.client.post(
            "/graphql", json={"query": REDEEM, "variables": {"code": code}}, headers={"origin": OWN}
        )
        assert own.json()["data"]["redeemShareCode"]["token"]
        program = await api.call(REDEEM, None, code=code)  # no Origin: a program, not a page
        assert program["data"]["redeemShareCode"]["token"]


async def _code(api: Api) -> str:
    creator = api.token("history:read", "share:create")
    created = await api.call(CREATE, creator, id="DEMO-001")
    return str(created["data"]["createShareCode"]["code"])
