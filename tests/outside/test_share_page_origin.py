"""The share page of a served pacsfed, posted to over real HTTP as browsers do: other sites' pages are refused.

A browser sends ``Origin`` on every POST; a page of another site posting wrong codes to ``/s``
from the hospital's shared address must neither be served nor spend that address's lock-out.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from pacsfed.demo.signer import DemoSigner

CREATE = 'mutation { createShareCode(patient: {id: "PA-001"}) { code } }'


def test_another_site_cannot_lock_the_address_out_of_a_served_share_page(
    pacsfed_server: Callable[..., Any],
    serve_config: Callable[..., dict[str, Any]],
    signer: DemoSigner,
) -> None:
    server = pacsfed_server(serve_config([]))
    headers = {"authorization": f"Bearer {signer.token()}"}
    created = httpx.post(server.graphql_url, json={"query": CREATE}, headers=headers, timeout=30).json()
    code = created["data"]["createShareCode"]["code"]
    own = server.url.rstrip("/")
    with httpx.Client(base_url=own, timeout=30) as browser:
        form = browser.get(f"/s/{code}")
        assert form.headers["referrer-policy"] == "same-origin"
        for attempt in range(15):  # more than the lock-out's 10 failures
            refused = browser.post(
                "/s", data={"code": f"WRONG-{attempt}"}, headers={"origin": "https://evil.example"}
            )
            assert refused.status_code == 403
        redeem = {
            "query": "mutation($c: String!) { redeemShareCode(code: $c) { token } }",
            "variables": {"c": "X"},
        }
        refused = browser.post("/graphql", json=redeem, headers={"origin": "https://evil.example"})
        assert refused.status_code == 403
        shown = browser.post("/s", data={"code": code}, headers={"origin": own})
        assert shown.status_code == 200, shown.text
        assert "Shared imaging exams" in shown.text
    assert "PA-001" not in server.log_text()
