"""GraphiQL in a real browser (headless Chromium driven by Playwright) against `pacsfed serve` from a
clean install: it loads with nothing from another host and runs a subscription over the WebSocket.

Needs Debian's ``chromium`` (``/usr/bin/chromium``); Playwright's own browser download is not used.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from playwright.sync_api import TimeoutError as PlaywrightTimeout
from playwright.sync_api import sync_playwright

from pacsfed.demo.signer import DemoSigner

CHROMIUM = "/usr/bin/chromium"
SUBSCRIPTION = """subscription {
  patientHistoryUpdates(patient: {id: "PA-001"}, deadlineMs: 10000, freshness: LIVE) {
    phase
    history { complete sources { source { id } status } }
  }
}"""

_SET_EDITORS = """([query, token]) => {
  const editors = [...document.querySelectorAll(".CodeMirror")].map((e) => e.CodeMirror);
  const headers = editors.find((e) => e.getValue().includes("<paste token>"));
  const operation = editors.find((e) => e.getValue().includes("patientHistory("));
  if (!headers || !operation) return false;
  headers.setValue(headers.getValue().replace("<paste token>", token));
  operation.setValue(query);
  return true;
}"""
_PARSED = """() => [...document.querySelectorAll(".CodeMirror")].some((e) =>
  e.CodeMirror.documentAST && e.CodeMirror.documentAST.definitions[0].operation === "subscription")"""
_EDITORS = """() => [...document.querySelectorAll(".CodeMirror")].map((e) => e.CodeMirror.getValue())"""
_RESULT = """() => [...document.querySelectorAll(".CodeMirror")]
  .map((e) => e.CodeMirror.getValue()).find((v) => v.includes('"phase"')) || "" """


def test_graphiql_in_chromium_runs_a_subscription_with_nothing_from_another_host(
    pacsfed_server: Callable[..., Any],
    serve_config: Callable[..., dict[str, Any]],
    signer: DemoSigner,
    orthanc_c: Any,
) -> None:
    server = pacsfed_server(
        serve_config(
            [{"id": "hosp-c", "kind": "dicomweb", "url": orthanc_c.dicomweb_url}],
            server={"mode": "development"},
        )
    )
    ours = urlsplit(server.url).netloc
    requested: list[str] = []
    sockets: list[str] = []
    console: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.on("request", lambda request: requested.append(request.url))
            page.on("websocket", lambda socket: sockets.append(socket.url))
            page.on("console", lambda message: console.append(message.text))
            page.goto(server.graphql_url)
            page.wait_for_selector(".graphiql-container", timeout=30_000)
            page.wait_for_function("() => document.querySelectorAll('.CodeMirror').length >= 2")
            assert page.evaluate(_SET_EDITORS, [SUBSCRIPTION, signer.token()])
            page.wait_for_function(_PARSED)  # GraphiQL reads the operation's kind from its parsed text
            page.click(".graphiql-execute-button")
            try:
                page.wait_for_function(f"() => ({_RESULT})().includes('FINAL')", timeout=60_000)
            except PlaywrightTimeout:
                editors = page.evaluate(_EDITORS)
                raise AssertionError(f"no FINAL event shown: {editors}\nconsole: {console}") from None
            result = page.evaluate(_RESULT)
        finally:
            browser.close()
    assert '"complete": true' in result and '"status": "OK"' in result, result
    assert sockets == [server.ws_url], sockets
    foreign = [url for url in requested if urlsplit(url).netloc != ours and not url.startswith("data:")]
    assert foreign == [], foreign
