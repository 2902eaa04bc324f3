"""The page's sign-in in a real browser (headless Chromium, Playwright) against `pacsfed serve` from a
clean install and a real OpenID Connect provider (the certified ``oidc-provider`` npm package, run by
tests/outside/js/oidc.mjs): ``/page/assets/auth.js`` signs in with the code flow and PKCE, the access
token it holds is accepted by pacsfed, it renews with the refresh token, and signing out ends the
provider's session. With a short-lived access token the page renews by itself (its timer, the refresh
token rotating at each use): a search after the first token's expiry succeeds, and signing out works
after renewals. No token reaches the address bar or the browser's storage.

Needs Debian's ``chromium`` (``/usr/bin/chromium``), node and npm.
"""

from __future__ import annotations

import base64
import http.client
import http.server
import json
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from peers import free_port
from peers.ports import LOOPBACK
from playwright.sync_api import Page, sync_playwright

CHROMIUM = "/usr/bin/chromium"
CLIENT_ID = "pacsfed-page"
FRAME_CLIENT_ID = "pacsfed-page-frame"
"""The same client without refresh tokens: the page renews in a hidden iframe (``prompt=none``)."""
PHYSICIAN = "er-physician"
HISTORY = """{ patientHistory(patient: {id: "PA-001"}, deadlineMs: 10000) {
  complete exams { studyInstanceUid } sources { source { id } status } } }"""

_LOAD = "() => import('/page/assets/auth.js').then(() => window.pacsfedAuth.ready).then(() => true)"
_QUERY = """async (query) => {
  const token = await window.pacsfedAuth.token();
  const headers = {'content-type': 'application/json'};
  if (token) headers.authorization = `Bearer ${token}`;
  const response = await fetch('/graphql', {method: 'POST', headers,
    body: JSON.stringify({query})});
  return response.json();
}"""
_STORAGE = """() => JSON.stringify({local: {...localStorage}, session: {...sessionStorage}})"""


@pytest.fixture
def oidc_provider(js_clients: Path) -> Iterator[Callable[..., str]]:
    """Starts the provider for a page origin (and an access-token lifetime); gives its issuer."""
    started: list[subprocess.Popen[str]] = []

    def start(page_origin: str, port: int, access_ttl_s: int = 600) -> str:
        process = subprocess.Popen(
            ["node", "oidc.mjs", str(port), page_origin, str(access_ttl_s)],
            cwd=js_clients,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        started.append(process)
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line.startswith("ready "):
            pytest.fail(f"the OIDC provider did not start (exit {process.poll()})", pytrace=False)
        return line.split()[1]

    yield start  # type: ignore[misc]
    for process in started:
        process.terminate()
        process.wait(timeout=10)


def _page_auth(issuer: str, client_id: str = CLIENT_ID, **more: Any) -> dict[str, Any]:
    """pacsfed's ``auth`` taking the provider's tokens, its page signing in as ``client_id``."""
    return {
        "mode": "jwt",
        "issuer": issuer,
        "audience": "pacsfed",
        "jwks_url": f"{issuer}/jwks",
        "algorithms": ["RS256"],
        **more,
        "page": {"client_id": client_id, "scope": "openid profile history:read"},
    }


def _sign_in_at_provider(page: Page, issuer: str) -> None:
    page.wait_for_url(f"{issuer}/interaction/**", timeout=30_000)
    page.fill("input[name=login]", PHYSICIAN)
    page.fill("input[name=password]", "any password")
    page.click("button[type=submit]")


def test_the_page_signs_in_with_the_provider_and_pacsfed_accepts_its_token(
    pacsfed_server: Callable[..., Any],
    serve_config: Callable[..., dict[str, Any]],
    oidc_provider: Callable[..., str],
    orthanc_c: Any,
) -> None:
    op_port = free_port()
    issuer = f"http://127.0.0.1:{op_port}"
    config = serve_config([{"id": "hosp-c", "kind": "dicomweb", "url": orthanc_c.dicomweb_url}])
    config["auth"] = _page_auth(issuer)
    server = pacsfed_server(config)
    assert oidc_provider(server.url, op_port) == issuer
    hosts = {urlsplit(server.url).netloc, urlsplit(issuer).netloc}
    ours = urlsplit(server.url).netloc
    requested: list[tuple[str, str]] = []  # (the requesting document, the URL)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.on("request", lambda request: requested.append((request.frame.url, request.url)))
            page.goto(f"{server.url}/page/config.json")
            assert page.evaluate(_LOAD)
            assert page.evaluate("() => window.pacsfedAuth.required()") is True
            assert page.evaluate("() => window.pacsfedAuth.token()") is None
            unauthenticated = page.evaluate(_QUERY, HISTORY)
            assert unauthenticated["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"

            page.evaluate("() => { window.pacsfedAuth.signIn(); }")
            _sign_in_at_provider(page, issuer)
            page.wait_for_url(f"{server.url}/?**", timeout=30_000)  # back with the code and state
            assert page.evaluate(_LOAD)  # the page's module reads the answer (the page at / will load it)
            assert page.url == f"{server.url}/", page.url  # the code and state left the address bar
            user = page.evaluate("() => window.pacsfedAuth.user()")
            assert user is not None and user["sub"] == PHYSICIAN, user
            token = page.evaluate("() => window.pacsfedAuth.token()")
            assert isinstance(token, str) and token.count(".") == 2
            answer = page.evaluate(_QUERY, HISTORY)
            assert "errors" not in answer, answer
            assert answer["data"]["patientHistory"]["sources"] == [
                {"source": {"id": "hosp-c"}, "status": "OK"}
            ]
            assert answer["data"]["patientHistory"]["exams"]
            storage = page.evaluate(_STORAGE)
            assert token not in storage and "pacsfed.auth" not in storage, storage

            # Renewal: the refresh token gives a new access token that pacsfed accepts too.
            page.evaluate("() => window.pacsfedAuth.renew()")
            renewed = page.evaluate("() => window.pacsfedAuth.token()")
            assert isinstance(renewed, str) and renewed != token
            assert "errors" not in page.evaluate(_QUERY, HISTORY)

            page.evaluate("() => { window.pacsfedAuth.signOut(); }")
            page.wait_for_url(f"{issuer}/session/end**", timeout=30_000)
            page.click("button[name=logout]")
            page.wait_for_url(f"{server.url}/", timeout=30_000)
            assert page.evaluate(_LOAD)
            assert page.evaluate("() => window.pacsfedAuth.token()") is None
        finally:
            browser.close()
    assert all(token not in url and renewed not in url for _, url in requested)
    # pacsfed's documents talk to their origin and the provider only (the provider's own pages are its own).
    foreign = [
        url
        for document, url in requested
        if urlsplit(document).netloc == ours and urlsplit(url).netloc not in hosts
    ]
    assert foreign == [], foreign


def test_the_page_s_own_sign_in_button_signs_in_and_its_search_shows_the_exams(
    pacsfed_server: Callable[..., Any],
    serve_config: Callable[..., dict[str, Any]],
    oidc_provider: Callable[..., str],
    orthanc_c: Any,
) -> None:
    """What a physician does: open the page, press Sign in, sign in at the provider, search, sign out."""
    op_port = free_port()
    issuer = f"http://127.0.0.1:{op_port}"
    config = serve_config(
        [{"id": "hosp-c", "name": "Hospital C", "kind": "dicomweb", "url": orthanc_c.dicomweb_url}]
    )
    config["auth"] = _page_auth(issuer)
    server = pacsfed_server(config)
    assert oidc_provider(server.url, op_port) == issuer
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(locale="en-GB")
            page.goto(f"{server.url}/")
            page.locator("#sign-in").wait_for(state="visible", timeout=30_000)
            assert page.locator("#sign-out").is_hidden()
            page.click("#sign-in")
            _sign_in_at_provider(page, issuer)
            page.wait_for_url(f"{server.url}/", timeout=30_000)  # back, the code and state gone
            page.locator("#sign-out").wait_for(state="visible", timeout=30_000)
            assert page.locator("#sign-in").is_hidden()
            page.fill("input[name=patientId]", "PA-001")
            page.press("input[name=patientId]", "Enter")
            page.locator(".exam").first.wait_for(timeout=30_000)
            assert "Hospital C" in page.inner_text("#results")
            page.click("#sign-out")
            page.wait_for_url(f"{issuer}/session/end**", timeout=30_000)
        finally:
            browser.close()


SHORT_TTL_S = 16
"""The access token's lifetime in the renewal test: renewed by the page a quarter of it (4 s) early."""


def _expiry(jwt: str) -> float:
    """The ``exp`` claim of a JWT (read, not verified: the test's own provider signed it)."""
    payload = jwt.split(".")[1]
    return float(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["exp"])


@pytest.mark.parametrize("client_id", [CLIENT_ID, FRAME_CLIENT_ID])
def test_the_page_renews_a_short_lived_token_by_itself_searches_after_its_expiry_and_signs_out(
    pacsfed_server: Callable[..., Any],
    serve_config: Callable[..., dict[str, Any]],
    oidc_provider: Callable[..., str],
    orthanc_c: Any,
    client_id: str,
) -> None:
    """Signed in once, the physician leaves the page open past the token's lifetime: nothing to do.

    With refresh tokens (rotating at each use), or without (``prompt=none`` in a hidden iframe, under
    the page's policy: the provider framed, the answer landing on the page framed by itself).
    """
    op_port = free_port()
    issuer = f"http://127.0.0.1:{op_port}"
    config = serve_config(
        [{"id": "hosp-c", "name": "Hospital C", "kind": "dicomweb", "url": orthanc_c.dicomweb_url}]
    )
    # clock_skew_s 0: an expired token is refused at once, so only a renewed one can search.
    config["auth"] = _page_auth(issuer, client_id, clock_skew_s=0)
    server = pacsfed_server(config)
    assert oidc_provider(server.url, op_port, SHORT_TTL_S) == issuer
    requested: list[str] = []
    refreshes: list[str] = []  # the refresh tokens the page sent (or its silent re-authorizations), in order
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(locale="en-GB")
            page.on("request", lambda request: requested.append(request.url))

            def sent(request: Any) -> None:
                if "prompt=none" in request.url:
                    refreshes.append(request.url)
                    return
                form = dict(
                    pair.split("=", 1) for pair in (request.post_data or "").split("&") if "=" in pair
                )
                if form.get("grant_type") == "refresh_token":
                    refreshes.append(form["refresh_token"])

            page.on("request", sent)
            page.goto(f"{server.url}/")
            page.locator("#sign-in").wait_for(state="visible", timeout=30_000)
            page.click("#sign-in")
            _sign_in_at_provider(page, issuer)
            page.wait_for_url(f"{server.url}/", timeout=30_000)
            page.locator("#sign-out").wait_for(state="visible", timeout=30_000)
            first = page.evaluate("() => window.pacsfedAuth.token()")
            expires = _expiry(first)
            # Nobody touches the page: its timer renews twice (the second time with the rotated token).
            deadline = time.monotonic() + 3 * SHORT_TTL_S
            while len(refreshes) < 2 and time.monotonic() < deadline:
                page.wait_for_timeout(500)
            renewed_by_itself = len(refreshes)
            renewal_error = page.evaluate("() => window.pacsfedAuth.error()")
            assert renewal_error is None and renewed_by_itself == 2, (
                renewal_error,
                refreshes,
            )  # when due, not in a loop
            time.sleep(max(0.0, expires + 1 - time.time()))  # the first token has expired
            refused = httpx.post(
                server.graphql_url,
                json={"query": HISTORY},
                headers={"authorization": f"Bearer {first}"},
                timeout=30,
            ).json()
            page.fill("input[name=patientId]", "PA-001")
            page.press("input[name=patientId]", "Enter")
            page.wait_for_function(
                "() => document.querySelector('#sources li[data-source=hosp-c]')?.dataset.status === 'OK'"
                " || !document.querySelector('#form-error').hidden",
                timeout=60_000,
            )
            error = page.locator("#form-error")
            search_error = error.inner_text() if error.is_visible() else ""
            exams = page.locator(".exam").count()
            current = page.evaluate("() => window.pacsfedAuth.token()")
            storage = page.evaluate(_STORAGE)
            page.click("#sign-out")
            page.wait_for_url(f"{issuer}/session/end**", timeout=30_000)
            page.click("button[name=logout]")
            page.wait_for_url(f"{server.url}/", timeout=30_000)
            page.locator("#sign-in").wait_for(state="visible", timeout=30_000)
            signed_out = page.evaluate("() => window.pacsfedAuth.token()")
        finally:
            browser.close()
    assert refreshes[0] != refreshes[1], "the refresh token rotates at each use"
    assert all(("prompt=none" in r) is (client_id == FRAME_CLIENT_ID) for r in refreshes), refreshes
    assert refused["errors"][0]["extensions"]["code"] == "TOKEN_EXPIRED", refused
    assert not search_error and exams > 0, search_error
    assert current != first and _expiry(current) > expires
    assert first not in storage and current not in storage, storage
    assert not any(refresh in storage for refresh in refreshes), storage  # refresh tokens: memory only
    assert all(first not in url and current not in url for url in requested)
    assert signed_out is None


def test_the_demo_page_is_signed_in_as_the_demo_physician_without_a_form(
    pacsfed_server: Callable[..., Any],
) -> None:
    demo = pacsfed_server(demo=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.goto(f"{demo.url}/page/config.json")
            assert page.evaluate(_LOAD)
            assert page.evaluate("() => window.pacsfedAuth.required()") is False
            user = page.evaluate("() => window.pacsfedAuth.user()")
            answer = page.evaluate(
                _QUERY, '{ patientHistory(patient: {id: "DEMO-001"}) { exams { modalities } } }'
            )
        finally:
            browser.close()
    assert user["sub"] == "demo-physician", user
    assert "errors" not in answer and answer["data"]["patientHistory"]["exams"], answer


class _PathProxy(http.server.ThreadingHTTPServer):
    """A reverse proxy as a hospital runs one: ``/pacsfed/…`` here is ``/…`` on pacsfed (HTTP only)."""

    def __init__(self, port: int, upstream: int) -> None:
        self.upstream = upstream
        self.proxied: list[str] = []
        super().__init__((LOOPBACK, port), _PathProxyHandler)


class _PathProxyHandler(http.server.BaseHTTPRequestHandler):
    server: _PathProxy

    def _forward(self) -> None:
        if not self.path.startswith("/pacsfed/"):
            self.send_error(404)
            return
        self.server.proxied.append(self.path.split("?", 1)[0])
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("connection", "content-length")}
        upstream = http.client.HTTPConnection(LOOPBACK, self.server.upstream, timeout=30)
        try:
            upstream.request(self.command, self.path.removeprefix("/pacsfed"), body or None, headers)
            answer = upstream.getresponse()
            content = answer.read()
            self.send_response(answer.status)
            for key, value in answer.getheaders():
                if key.lower() not in ("connection", "transfer-encoding", "content-length"):
                    self.send_header(key, value)
            self.send_header("content-length", str(len(content)))
            self.end_headers()
            self.wfile.write(content)
        finally:
            upstream.close()

    do_GET = do_POST = _forward

    def log_message(self, format: str, *args: Any) -> None:
        return


def test_behind_a_proxy_under_a_path_the_sign_in_returns_to_the_page_under_that_path(
    pacsfed_server: Callable[..., Any],
    serve_config: Callable[..., dict[str, Any]],
    oidc_provider: Callable[..., str],
    orthanc_c: Any,
) -> None:
    """``server.public_url`` ``…/pacsfed/``: a reverse proxy in front strips the path, as hospitals run pacsfed."""
    port, upstream, op_port = free_port(), free_port(), free_port()
    public, issuer = f"http://127.0.0.1:{port}/pacsfed", f"http://127.0.0.1:{op_port}"
    config = serve_config(
        [{"id": "hosp-c", "name": "Hospital C", "kind": "dicomweb", "url": orthanc_c.dicomweb_url}],
        server={"public_url": f"{public}/"},
    )
    config["auth"] = _page_auth(issuer)
    pacsfed_server(config, port=upstream)
    assert oidc_provider(public, op_port) == issuer  # the page's redirect URI: {public}/ only
    proxy = _PathProxy(port, upstream)
    serving = threading.Thread(target=proxy.serve_forever, daemon=True)
    serving.start()
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            try:
                page = browser.new_page(locale="en-GB")
                page.goto(f"{public}/")
                page.locator("#sign-in").wait_for(state="visible", timeout=30_000)
                page.click("#sign-in")
                _sign_in_at_provider(page, issuer)
                page.wait_for_url(f"{public}/", timeout=30_000)  # back on the page under the path, code gone
                page.locator("#sign-out").wait_for(state="visible", timeout=30_000)
                answer = page.evaluate(_QUERY.replace("fetch('/graphql'", "fetch('graphql'"), HISTORY)
                assert "errors" not in answer, answer
                assert answer["data"]["patientHistory"]["sources"] == [
                    {"source": {"id": "hosp-c"}, "status": "OK"}
                ]
            finally:
                browser.close()
    finally:
        proxy.shutdown()
        proxy.server_close()
        serving.join(timeout=10)
    proxied = proxy.proxied
    assert {"/pacsfed/page/config.json", "/pacsfed/page/assets/auth.js", "/pacsfed/graphql"} <= set(proxied)
