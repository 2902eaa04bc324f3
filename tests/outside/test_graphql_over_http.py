"""`pacsfed serve` in production as outside HTTP clients see it: graphql-http's GraphQL-over-HTTP audit, CORS.

The audit is `auditServer` of the npm package graphql-http (tests/outside/js/audit.mjs), every
request carrying a valid token, as a client of a production server would send it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from pacsfed.demo.signer import DemoSigner


def test_the_graphql_over_http_audit_finds_no_error_and_no_warning(
    pacsfed_server: Callable[..., Any],
    serve_config: Callable[..., dict[str, Any]],
    signer: DemoSigner,
    js_clients: Path,
) -> None:
    server = pacsfed_server(serve_config([]))
    node = shutil.which("node")
    assert node is not None
    result = subprocess.run(
        [node, "audit.mjs", server.graphql_url],
        cwd=js_clients,
        env={"PACSFED_TOKEN": signer.token(), "PATH": str(Path(node).parent)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    failures = [f for f in report["failures"] if f["status"] in ("error", "warn")]
    assert failures == [], json.dumps(report, indent=2)
    assert report["counts"]["error"] == report["counts"]["warn"] == 0
    assert report["counts"]["ok"] > 40  # the audit really ran


def test_a_browser_app_on_an_allowed_origin_may_call_the_served_api(
    pacsfed_server: Callable[..., Any],
    serve_config: Callable[..., dict[str, Any]],
    signer: DemoSigner,
) -> None:
    ehr = "https://ehr.example.org"
    server = pacsfed_server(serve_config([], server={"cors_origins": [ehr]}))
    preflight = httpx.options(
        server.graphql_url,
        headers={
            "origin": ehr,
            "access-control-request-method": "POST",
            "access-control-request-headers": "authorization,content-type",
        },
        timeout=10,
    )
    assert preflight.status_code == 200, preflight.text
    assert preflight.headers["access-control-allow-origin"] == ehr
    headers = {"origin": ehr, "authorization": f"Bearer {signer.token()}"}
    answer = httpx.post(server.graphql_url, json={"query": "{ sources { id } }"}, headers=headers, timeout=10)
    assert answer.json() == {"data": {"sources": []}}
    assert answer.headers["access-control-allow-origin"] == ehr
