"""The share page in a real browser (headless Chromium, Playwright) against `pacsfed serve` from a clean
install: the recipient's own form opens the shared exams, and the same form posted from another site's
page is refused without spending the address's failed attempts.

What is checked here is the browser's own behaviour (which ``Origin`` it sends under the page's
referrer policy), which no HTTP-level test can show.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
from playwright.sync_api import sync_playwright

from pacsfed.demo.signer import DemoSigner

CHROMIUM = "/usr/bin/chromium"
CREATE = """mutation { createShareCode(patient: {id: "PA-001"}, ttlSeconds: 3600) { code urlPath } }"""
OTHER_SITE = "http://other-site.test/"


def test_the_recipient_s_form_opens_the_exams_and_another_site_s_copy_is_refused(
    pacsfed_server: Callable[..., Any],
    serve_config: Callable[..., dict[str, Any]],
    signer: DemoSigner,
    orthanc_c: Any,
) -> None:
    server = pacsfed_server(
        serve_config([{"id": "hosp-c", "kind": "dicomweb", "url": orthanc_c.dicomweb_url}])
    )
    headers = {"authorization": f"Bearer {signer.token(scopes=('share:create', 'history:read'))}"}
    answer = httpx.post(server.graphql_url, json={"query": CREATE}, headers=headers, timeout=30).json()
    assert "errors" not in answer, answer
    share = answer["data"]["createShareCode"]
    foreign_form = (
        f'<form method="post" action="{server.url}/s"><input name="code" value="{share["code"]}">'
        '<button type="submit">go</button></form>'
    )
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            # Another site's page, holding a copy of the form (the code leaked, or guessed).
            page.route(OTHER_SITE, lambda route: route.fulfill(content_type="text/html", body=foreign_form))
            page.goto(OTHER_SITE)
            with page.expect_navigation():
                page.click("button")
            refused = page.content()
            # The recipient opens the link they were given and presses the button.
            page.goto(server.url + share["urlPath"])
            with page.expect_navigation():
                page.click("button[type=submit]")
            shown = page.content()
        finally:
            browser.close()
    assert "opens only from this site" in refused, refused
    assert "opens only from this site" not in shown, shown
    assert "hosp-c: OK" in shown and "<table>" in shown, shown  # the shared exams, not an error page
