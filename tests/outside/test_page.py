"""The physician's page in a real browser (headless Chromium, Playwright) against `pacsfed serve
--insecure-dev` from a clean install, with two real hospitals (Orthanc) and one that never answers.

A search by patient ID (typed, then Enter) shows both hospitals' exams merged on one timeline while
the silent hospital is still awaited, then says in words that it timed out and that the history is
incomplete; the page asks nothing of another origin; the language switch and keyboard-only use
(search, move through the timeline, open a report) work; signed in (the sign-in module's
``window.pacsfedAuth.token()``), the page asks for the emergency reason when only
``history:emergency`` grants the search and creates a share code for the chosen exam; axe-core (npm, evaluated in the page, no
network) finds no serious or critical accessibility violation. Screenshots are kept as artifacts
(``$PACSFED_ARTIFACTS``, else the test's temporary directory).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from fakes import SilentListener, StaticHttpServer
from peers.reportdata import FINDING, PDF_STUDY, PLAIN_STUDY, REPORT_PATIENT, SR_STUDY
from playwright.sync_api import Page, sync_playwright
from report_fixtures import orthanc_reports, report_files

__all__ = ["orthanc_reports", "report_files"]

CHROMIUM = "/usr/bin/chromium"
VIEWER = "https://viewer.hospital-c.test/view?study="
DEADLINE_MS = 10_000  # the silent hospital is given up on after this; the Orthancs answer long before
STATUS = "#sources li[data-source={}] .status"
SETTLED = """() => !document.querySelector("#form-error").hidden || (
  document.querySelectorAll("#sources li").length > 0
  && ![...document.querySelectorAll("#sources li")].some((li) => li.dataset.status === "WAITING"))"""
"""The search is over: refused (an error shown), or every hospital's status is known."""


@pytest.fixture
def silent() -> Iterator[SilentListener]:
    """A DICOMweb hospital that accepts connections and never answers."""
    with SilentListener() as listener:
        yield listener


@pytest.fixture
def served(pacsfed_server: Callable[..., Any], orthanc_a: Any, orthanc_c: Any, silent: SilentListener) -> Any:
    """``pacsfed serve --insecure-dev`` over hospitals A and C (real Orthancs) and a silent one."""
    return pacsfed_server(
        {
            "cache": {"backend": "memory"},
            "auth": {"mode": "none"},
            "query": {"default_deadline_ms": DEADLINE_MS},
            "sources": [
                {"id": "hosp-a", "name": "Hospital A", "kind": "dicomweb", "url": orthanc_a.dicomweb_url},
                {
                    "id": "hosp-c",
                    "name": "Hospital C",
                    "kind": "dicomweb",
                    "url": orthanc_c.dicomweb_url,
                    "viewer_url": VIEWER + "{studyInstanceUid}",
                },
                {
                    "id": "silent",
                    "name": "Silent Hospital",
                    "kind": "dicomweb",
                    "url": f"http://127.0.0.1:{silent.port}/dicom-web",
                },
            ],
        },
        insecure_dev=True,
    )


@pytest.fixture
def artifacts(tmp_path: Path) -> Path:
    """Where screenshots go: ``$PACSFED_ARTIFACTS`` (kept by CI), else the test's temporary directory."""
    folder = Path(os.environ.get("PACSFED_ARTIFACTS") or tmp_path) / "page"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
def browser_page(served: Any) -> Iterator[tuple[Page, list[str]]]:
    """A tablet-sized page (768 px wide) in English, and every URL it requested."""
    requested: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 768, "height": 1024}, locale="en-GB")
            page.on("request", lambda request: requested.append(request.url))
            page.on("websocket", lambda socket: requested.append(socket.url))
            page.goto(served.url + "/")
            yield page, requested
        finally:
            browser.close()


def serious_violations(page: Page, js_clients: Path) -> list[str]:
    """axe-core's serious and critical accessibility violations on the page as it is now.

    axe is evaluated through the DevTools protocol (the page's own policy allows no inline script).
    """
    page.evaluate((js_clients / "node_modules" / "axe-core" / "axe.min.js").read_text(encoding="utf-8"))
    return page.evaluate(
        """async () => (await axe.run(document)).violations
          .filter((v) => v.impact === "serious" || v.impact === "critical")
          .map((v) => `${v.id} (${v.impact}): ${v.nodes.map((n) => n.target.join(" ")).join(", ")}`)"""
    )


def exam_hospitals(page: Page) -> list[str]:
    """The hospital line of every exam on the timeline."""
    return page.locator(".exam .exam-meta").all_inner_texts()


def test_a_search_merges_two_hospitals_and_says_the_silent_one_timed_out(
    served: Any, browser_page: tuple[Page, list[str]], artifacts: Path, js_clients: Path
) -> None:
    page, requested = browser_page
    page.fill("input[name=patientId]", "PA-001")
    page.press("input[name=patientId]", "Enter")
    # Both Orthancs have answered: their exams are shown while the silent hospital is still awaited.
    page.wait_for_function(
        """() => ["hosp-a", "hosp-c"].every((id) =>
          document.querySelector(`#sources li[data-source=${id}] .status`)?.textContent.startsWith("answered"))""",
        timeout=DEADLINE_MS,
    )
    assert page.inner_text(STATUS.format("silent")) == "waiting for an answer"
    assert "Still waiting for 1 hospital" in page.inner_text("#banner")
    page.screenshot(path=str(artifacts / "waiting.png"), full_page=True)
    hospitals_early = exam_hospitals(page)
    # Then the silent one times out, in words; the banner says the history is incomplete.
    page.wait_for_function(
        """() => document.querySelector("#sources li[data-source=silent] .status")?.textContent === "timed out" """,
        timeout=DEADLINE_MS + 30_000,
    )
    page.wait_for_function("() => document.querySelector('#banner').textContent.startsWith('Incomplete')")
    banner = page.inner_text("#banner")
    page.screenshot(path=str(artifacts / "timed-out.png"), full_page=True)
    hospitals = exam_hospitals(page)
    viewer_links = page.locator(".exam a", has_text="Open in viewer (Hospital C)")
    viewer = (viewer_links.count(), viewer_links.first.get_attribute("href"))
    c_exam = page.locator(".exam", has_text="Hospital C").first.get_attribute("data-uid")
    page.select_option("#f-modality", "US")  # the filters: by modality, then by period as well
    only_us = page.locator(".exam .modality").all_inner_texts()
    page.select_option("#f-modality", "")
    page.select_option("#f-period", "1")  # the last 12 months: the 2022-2024 exams are older
    recent = page.locator(".exam").count()
    page.select_option("#f-period", "0")
    first = page.locator(".exam").first
    first.get_by_role("button", name="Copy study UID").click()
    copied = (page.inner_text("#copied"), first.get_attribute("data-uid"))
    first.locator("details summary").click()  # the identifier that matched, on demand
    matched = first.locator("details").inner_text()
    patient = page.inner_text("#patient")
    patient_flagged = page.is_visible("#patient-flag")
    violations = serious_violations(page, js_clients)
    overflow = "() => document.documentElement.scrollWidth - window.innerWidth"
    wide = page.evaluate(overflow)
    page.set_viewport_size({"width": 384, "height": 1024})  # the tablet at 200 % zoom
    zoomed = page.evaluate(overflow)
    page.screenshot(path=str(artifacts / "timed-out-200-percent.png"), full_page=True)

    assert any("Hospital A" in line for line in hospitals_early), hospitals_early
    assert any("Hospital C" in line for line in hospitals_early), hospitals_early
    # PA-001: SHARED-CT and A-MR at A, C-US at C; one timeline, newest first, grouped by year.
    assert len(hospitals) == 3, hospitals
    assert any("Hospital A" in line for line in hospitals) and any("Hospital C" in line for line in hospitals)
    assert "Silent Hospital did not answer" in banner, banner
    assert page.inner_text(STATUS.format("hosp-a")) == "answered with 2 exams"
    assert page.inner_text(STATUS.format("hosp-c")) == "answered with 1 exam"
    years = [int(year) for year in page.locator(".year h4").all_inner_texts()]
    assert years == sorted(years, reverse=True), years
    ours = urlsplit(served.url).netloc
    assert all(urlsplit(url).netloc == ours for url in requested if not url.startswith("data:")), requested
    assert copied[0] == f"Study UID copied: {copied[1]}", copied
    assert "Hospital A: local ID — PA-001" in matched, matched
    # Who the history is of, as both hospitals record them (one version: nothing flagged).
    assert (
        "Müller, Anna · born 12 Apr 1980 · female — at Hospital A (PA-001), Hospital C (PA-001)" in patient
    ), patient
    assert not patient_flagged, patient
    assert only_us == ["US"] and recent == 0, (only_us, recent)
    assert viewer == (1, VIEWER + str(c_exam)), viewer  # only hospital C has a viewer
    assert not violations, violations
    assert wide <= 0 and zoomed <= 0, (wide, zoomed)  # readable without scrolling sideways


def test_keyboard_only_search_timeline_and_report_and_the_language_switch(
    browser_page: tuple[Page, list[str]], artifacts: Path, js_clients: Path
) -> None:
    page, _ = browser_page
    focused_name = "() => document.activeElement?.name || ''"
    for _ in range(10):  # Tab from the top of the page to the patient-ID field
        page.keyboard.press("Tab")
        if page.evaluate(focused_name) == "patientId":
            break
    assert page.evaluate(focused_name) == "patientId"
    page.keyboard.type("PA-001")
    page.keyboard.press("Enter")
    page.wait_for_function("() => document.querySelectorAll('.exam').length === 3", timeout=60_000)
    focused_exam = "() => document.activeElement?.closest('.exam')?.dataset.uid || ''"
    for _ in range(60):  # Tab on into the timeline
        page.keyboard.press("Tab")
        if page.evaluate("() => document.activeElement?.classList.contains('exam')"):
            break
    first = page.evaluate(focused_exam)
    assert first, "Tab never reached the timeline"
    page.keyboard.press("ArrowDown")
    second = page.evaluate(focused_exam)
    assert second and second != first
    page.keyboard.press("Enter")
    status = page.locator(f'.exam[data-uid="{second}"] .report .report-status')
    status.wait_for(timeout=60_000)
    reported = status.inner_text()
    page.screenshot(path=str(artifacts / "report.png"), full_page=True)
    assert not serious_violations(page, js_clients)  # with a report open
    assert reported in {
        "available — final (verified)",
        "available — preliminary (not verified)",
        "available — final or preliminary: not stated",
        "no report found",
        "these hospitals give no reports",
        "could not be read",
    }

    # The language, switched by keyboard: every label and status follows, and stays for the tab.
    page.focus("#lang")
    page.keyboard.press("End")  # the last language: Nederlands
    page.wait_for_function("() => document.documentElement.lang === 'nl'")
    assert page.inner_text("h1") == "Beeldvormingsgeschiedenis"
    assert page.inner_text("form button[type=submit]") == "Zoeken"
    assert page.inner_text(STATUS.format("hosp-c")) == "antwoordde met 1 onderzoek"
    page.select_option("#lang", "fr")
    assert page.inner_text("h1") == "Historique d'imagerie"
    page.reload()
    assert page.inner_text("h1") == "Historique d'imagerie"
    assert page.inner_text("form button[type=submit]") == "Rechercher"


def test_the_demo_s_page_is_signed_in_and_marks_answers_from_the_cache(
    pacsfed_server: Callable[..., Any],
) -> None:
    demo = pacsfed_server(demo=True)
    requested: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(locale="en-GB")
            page.on("request", lambda request: requested.append(request.url))
            page.goto(demo.url + "/")
            page.fill("input[name=patientId]", "DEMO-001")
            page.press("input[name=patientId]", "Enter")
            page.wait_for_function(SETTLED, timeout=60_000)
            statuses = page.locator("#sources .status").all_inner_texts()
            exams = page.locator(".exam").count()
            patient = page.locator("#patient-list .variant").all_inner_texts()
            patient_flagged = page.is_visible("#patient-flag")
            error = page.locator("#form-error")
            refused = error.inner_text() if error.is_visible() else ""
            # The same search again: the answers come from the cache, and the page says so.
            page.press("input[name=patientId]", "Enter")
            page.wait_for_function(
                """() => [...document.querySelectorAll("#sources .status")]
                  .every((s) => s.textContent.includes("from cache"))""",
                timeout=60_000,
            )
            again = page.locator("#sources .status").all_inner_texts()
        finally:
            browser.close()
    assert not refused, refused
    assert exams > 0 and all(status.startswith("answered") for status in statuses), statuses
    assert all(status.endswith("from cache, 0 minutes old") for status in again), again
    # Who DEMO-001 is, as the three demo hospitals record her (they agree: nothing flagged).
    assert [line.split(" — ")[0] for line in patient] == ["Müller, Anna · born 12 Mar 1967 · female"], patient
    assert not patient_flagged, patient
    ours = urlsplit(demo.url).netloc
    assert all(urlsplit(url).netloc == ours for url in requested if not url.startswith("data:")), requested


OPENED_DOCUMENT = """() => ({ type: document.contentType, scheme: location.protocol })"""
"""What the new tab shows: the PDF's media type and its blob: URL (the token is in no URL)."""


def open_report_document(page: Page, exam: Any, screenshot: Path | None = None) -> dict[str, str]:
    """Opens the exam's report, then its document from the report panel: what the new tab shows.

    Chromium's own PDF viewer renders it (the screenshot, kept as an artifact, shows the page).
    """
    exam.locator("button", has_text="Report").click()
    link = exam.locator("a.report-document")
    link.wait_for(timeout=60_000)
    with page.context.expect_page(timeout=30_000) as opened:
        link.click()
    tab = opened.value
    tab.wait_for_function("() => document.contentType === 'application/pdf'", timeout=30_000)
    shown: dict[str, str] = tab.evaluate(OPENED_DOCUMENT)
    if screenshot is not None:
        tab.wait_for_timeout(1_000)  # the viewer draws the first page
        tab.screenshot(path=str(screenshot))
    tab.close()
    return shown


def test_the_demo_s_page_opens_a_pdf_report_document_in_a_new_tab(
    pacsfed_server: Callable[..., Any], artifacts: Path
) -> None:
    # /reports/<id> wants the page's authorization: a plain link opened it without (401).
    demo = pacsfed_server(demo=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(locale="en-GB")
            page.goto(demo.url + "/")
            page.fill("input[name=patientId]", "DEMO-001")
            page.press("input[name=patientId]", "Enter")
            page.wait_for_function(SETTLED, timeout=60_000)
            exam = page.locator(".exam", has_text="Echografie abdomen").first
            shown = open_report_document(page, exam, artifacts / "report-document.png")
            errors = page.locator(".document-error").all_inner_texts()
        finally:
            browser.close()
    assert shown == {"type": "application/pdf", "scheme": "blob:"}, shown
    assert not any(errors), errors


def test_a_name_search_with_possible_matches_says_so_and_a_match_opens_that_patient_s_history(
    pacsfed_server: Callable[..., Any], artifacts: Path
) -> None:
    # The demo's exams are filed under DEMO-001, not under the name: "No exam found" above the
    # exact patient stopped a reader; each possible match now opens its patient's history by ID.
    demo = pacsfed_server(demo=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(locale="en-GB")
            page.goto(demo.url + "/")
            page.fill("input[name=familyName]", "Müller")
            page.fill("input[name=givenName]", "Anna")
            page.fill("input[name=birthDate]", "1967-03-12")
            page.press("input[name=familyName]", "Enter")
            page.wait_for_function(SETTLED, timeout=60_000)
            page.locator("#candidates .candidate").first.wait_for(timeout=30_000)
            empty = page.inner_text("#timeline")
            matches = page.locator("#candidates .candidate").count()
            page.screenshot(path=str(artifacts / "name-search.png"), full_page=True)
            page.select_option("#lang", "fr")
            empty_fr = page.inner_text("#timeline")
            button_fr = set(page.locator("#candidates .open-candidate").all_inner_texts())
            page.select_option("#lang", "en")
            page.locator("#candidates .open-candidate").first.click()
            page.locator(".exam").first.wait_for(timeout=60_000)
            page.wait_for_function(SETTLED, timeout=60_000)
            searched = (page.input_value("input[name=patientId]"), page.input_value("input[name=issuer]"))
            name_left = page.input_value("input[name=familyName]")
            exams = page.locator(".exam").count()
            patient = page.locator("#patient-list .variant").all_inner_texts()
        finally:
            browser.close()
    assert matches == 3, matches
    assert empty == (
        "No exam is filed under these details as such; 3 possible matches below — verify before opening one."
    ), empty
    assert searched == ("DEMO-001", "PACSFED-DEMO") and not name_left, (searched, name_left)
    assert exams == 6, exams  # DEMO-001's exams at the three hospitals
    assert [line.split(" — ")[0] for line in patient] == ["Müller, Anna · born 12 Mar 1967 · female"], patient
    assert empty_fr.startswith("Aucun examen n'est classé tel quel sous ces données ; 3 correspondances"), (
        empty_fr
    )
    assert button_fr == {"Ouvrir l'historique de ce patient"}, button_fr


REDEEM = "mutation($code: String!) { redeemShareCode(code: $code) { studies } }"


def test_with_a_sign_in_the_emergency_reason_is_asked_and_a_share_code_opens_the_chosen_exam(
    pacsfed_server: Callable[..., Any],
    serve_config: Callable[..., dict[str, Any]],
    signer: Any,
    orthanc_a: Any,
    orthanc_c: Any,
    artifacts: Path,
    js_clients: Path,
) -> None:
    server = pacsfed_server(
        serve_config(
            [
                {"id": "hosp-a", "name": "Hospital A", "kind": "dicomweb", "url": orthanc_a.dicomweb_url},
                {"id": "hosp-c", "name": "Hospital C", "kind": "dicomweb", "url": orthanc_c.dicomweb_url},
            ]
        )
    )
    token = signer.token(scopes=("history:emergency", "share:create"))
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 768, "height": 1024}, locale="en-GB")
            page.goto(server.url + "/")
            # Signed in: the sign-in module's one function the page relies on (web/static/page/auth.js,
            # whose own OIDC flow tests/outside/test_page_sign_in_browser.py drives) hands out the token.
            page.evaluate("token => { window.pacsfedAuth.token = async () => token; }", token)
            page.fill("input[name=patientId]", "PA-001")
            page.press("input[name=patientId]", "Enter")
            page.locator("input[name=reason]").wait_for(timeout=60_000)  # shown only when needed
            asked = page.inner_text("#form-error")
            page.fill("input[name=reason]", "unconscious patient in the emergency room")
            page.press("input[name=reason]", "Enter")
            page.wait_for_function(SETTLED, timeout=60_000)
            exams = page.locator(".exam")
            assert exams.count() == 3, page.inner_text("#results")
            chosen = exams.first.get_attribute("data-uid")
            exams.first.locator(".share-pick").check()
            page.select_option("#share-ttl", "86400")
            page.click("#share-create")
            page.locator("#share-result .share-code").wait_for(timeout=30_000)
            code = page.inner_text("#share-result .share-code")
            shown = page.inner_text("#share-result")
            qr = page.locator("#share-result img.qr").get_attribute("src") or ""
            page.screenshot(path=str(artifacts / "share.png"), full_page=True)
            violations = serious_violations(page, js_clients)

            # Possible matches: listed apart, marked, with reasons; never on the timeline.
            page.fill("input[name=patientId]", "A123")
            page.check("input[name=candidates]")
            page.press("input[name=patientId]", "Enter")  # the emergency reason is still given
            page.wait_for_function(SETTLED, timeout=60_000)
            page.locator("#candidates .candidate").first.wait_for(timeout=30_000)
            timeline = page.inner_text("#timeline")
            candidates = page.inner_text("#candidates")
            page.screenshot(path=str(artifacts / "candidates.png"), full_page=True)
            violations += serious_violations(page, js_clients)
        finally:
            browser.close()
    assert asked.startswith("Only emergency access allows this search"), asked
    assert "Valid until" in shown and "never send it by e-mail" in shown.lower(), shown
    assert qr.startswith("data:image/svg+xml")
    assert not violations, violations
    assert "CT ABDOMEN" in timeline and "ECHO THYROIDE" not in timeline, timeline
    assert "possible match — verify" in candidates, candidates
    assert "ECHO THYROIDE" in candidates and "same birth date" in candidates, candidates
    redeemed = httpx.post(server.graphql_url, json={"query": REDEEM, "variables": {"code": code}}, timeout=30)
    assert redeemed.json()["data"]["redeemShareCode"]["studies"] == [chosen], redeemed.text


AUDITED = """{ auditEvents(first: 100) { action outcome detail } }"""
REPORT_STATES = """() => Object.fromEntries([...document.querySelectorAll(".exam")].map((exam) =>
  [exam.dataset.uid, exam.querySelector(".report-state").dataset.report]))"""
"""Each exam's report status on the timeline, by the data attribute the page sets in any language."""


def test_opening_one_report_reads_and_audits_that_report_only(
    pacsfed_server: Callable[..., Any],
    serve_config: Callable[..., dict[str, Any]],
    signer: Any,
    orthanc_reports: Any,
) -> None:
    server = pacsfed_server(
        serve_config(
            [{"id": "hosp-r", "name": "Hospital R", "kind": "dicomweb", "url": orthanc_reports.dicomweb_url}]
        )
    )
    token = signer.token(subject="dr-page", scopes=("history:read",))
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(locale="en-GB")
            page.goto(server.url + "/")
            page.evaluate("token => { window.pacsfedAuth.token = async () => token; }", token)
            page.fill("input[name=patientId]", REPORT_PATIENT.patient_id)
            page.press("input[name=patientId]", "Enter")
            page.wait_for_function(SETTLED, timeout=60_000)
            # Before any report is read: what the search says, in words (no source asked for a report).
            before = page.evaluate(REPORT_STATES)
            exam = page.locator(f'.exam[data-uid="{SR_STUDY.study_uid}"]')
            plain = page.locator(f'.exam[data-uid="{PLAIN_STUDY.study_uid}"]')
            words_before = (
                exam.locator(".report-state").inner_text(),
                plain.locator(".report-state").inner_text(),
            )
            exam.focus()
            page.keyboard.press("Enter")
            exam.locator(".report pre").wait_for(timeout=60_000)
            text = exam.locator(".report pre").inner_text()
            others = page.locator(".exam .report").count()
            after = page.evaluate(REPORT_STATES)
            words_after = exam.locator(".report-state").inner_text()
            pdf = page.locator(f'.exam[data-uid="{PDF_STUDY.study_uid}"]')
            shown = open_report_document(page, pdf)
            # Signed out since: the document is refused (401) and the page says so, in words.
            page.evaluate("() => { window.pacsfedAuth.token = async () => null; }")
            with page.context.expect_page(timeout=30_000) as blank:
                pdf.locator("a.report-document").click()
            pdf.locator(".document-error").wait_for(timeout=30_000)
            refused = pdf.locator(".document-error").inner_text()
            page.wait_for_timeout(500)
            closed = blank.value.is_closed()  # the tab opened at the click is closed again
            page.select_option("#lang", "fr")
            words_fr = (
                exam.locator(".report-state").inner_text(),
                plain.locator(".report-state").inner_text(),
            )
        finally:
            browser.close()
    assert FINDING in text and others == 1
    assert shown == {"type": "application/pdf", "scheme": "blob:"}, shown
    assert refused.startswith("The report document could not be opened: you are not signed in"), refused
    assert closed
    # The SR and PDF studies list a report series (SR, DOC): likely; the plain CT study: unknown.
    assert before == {
        SR_STUDY.study_uid: "LIKELY",
        PDF_STUDY.study_uid: "LIKELY",
        PLAIN_STUDY.study_uid: "UNKNOWN",
    }, before
    assert words_before == (
        "Report: not opened yet — a report is listed",
        "Report: not opened yet — none listed, open to check",
    ), words_before
    assert after == {**before, SR_STUDY.study_uid: "AVAILABLE"}, after  # opened: its real status
    assert words_after == "Report: available — final (verified)", words_after  # a verified SR
    assert words_fr == (
        "Compte rendu\u00a0: disponible — définitif (validé)",  # French: a no-break space before the colon
        "Compte rendu\u00a0: pas encore ouvert — aucun listé, ouvrir pour vérifier",
    ), words_fr
    auditor = {"authorization": f"Bearer {signer.token(subject='auditor', scopes=('audit:read',))}"}
    events = httpx.post(server.graphql_url, json={"query": AUDITED}, headers=auditor, timeout=30).json()
    read = {
        e["detail"].rpartition("study ")[2]
        for e in events["data"]["auditEvents"]
        if e["action"] == "REPORT_READ"
    }
    # The patient has three exams: the two reports opened were read, the plain CT's was not.
    assert read == {SR_STUDY.study_uid, PDF_STUDY.study_uid}, events


def _study_json(uid: str, name: str, birth: str, sex: str | None) -> bytes:
    """One study of PA-DIS as a hospital's QIDO-RS answers it (DICOM JSON, PS3.18 F.2)."""
    study: dict[str, Any] = {
        "0020000D": {"vr": "UI", "Value": [uid]},
        "00080020": {"vr": "DA", "Value": ["20240105"]},
        "00080061": {"vr": "CS", "Value": ["CT"]},
        "00081030": {"vr": "LO", "Value": ["CT THORAX"]},
        "00100010": {"vr": "PN", "Value": [{"Alphabetic": name}]},
        "00100020": {"vr": "LO", "Value": ["PA-DIS"]},
        "00100030": {"vr": "DA", "Value": [birth]},
    }
    if sex:
        study["00100040"] = {"vr": "CS", "Value": [sex]}
    return json.dumps([study]).encode()


@pytest.fixture
def disagreeing(pacsfed_server: Callable[..., Any]) -> Iterator[Any]:
    """Two hospitals holding PA-DIS under other spellings and birth dates (one records no sex)."""
    with (
        StaticHttpServer(
            _study_json("1.2.826.0.1.3680043.10.1234.99.1", "Peeters^Jan", "19490605", "M")
        ) as x,
        StaticHttpServer(
            _study_json("1.2.826.0.1.3680043.10.1234.99.2", "PETERS^JAN", "19490506", None)
        ) as y,
    ):
        yield pacsfed_server(
            {
                "cache": {"backend": "memory"},
                "auth": {"mode": "none"},
                "sources": [
                    {
                        "id": "hosp-x",
                        "name": "Hospital X",
                        "kind": "dicomweb",
                        "url": f"http://127.0.0.1:{x.port}/dicom-web",
                    },
                    {
                        "id": "hosp-y",
                        "name": "Hospital Y",
                        "kind": "dicomweb",
                        "url": f"http://127.0.0.1:{y.port}/dicom-web",
                    },
                ],
            },
            insecure_dev=True,
        )


PLURALS = """async () => {
  const i18n = await import("/page/assets/i18n.js");  // the page's own module instance
  const said = {};
  for (const language of ["en", "fr", "nl"]) {
    i18n.setLanguage(language);
    said[language] = [0, 1, 2].map((n) => i18n.plural("status.cached", n));
  }
  i18n.setLanguage("en");
  return said;
}"""


def test_hospitals_that_record_the_patient_differently_are_each_shown_and_flagged(
    disagreeing: Any, artifacts: Path, js_clients: Path
) -> None:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 768, "height": 1024}, locale="en-GB")
            page.goto(disagreeing.url + "/")
            page.fill("input[name=patientId]", "PA-DIS")
            page.press("input[name=patientId]", "Enter")
            page.wait_for_function(SETTLED, timeout=60_000)
            flag = page.inner_text("#patient-flag") if page.is_visible("#patient-flag") else ""
            versions = page.locator("#patient-list .variant").all_inner_texts()
            page.screenshot(path=str(artifacts / "patient-disagree.png"), full_page=True)
            violations = serious_violations(page, js_clients)
            page.select_option("#lang", "fr")
            flag_fr = page.inner_text("#patient-flag")
            versions_fr = page.locator("#patient-list .variant").all_inner_texts()
            page.select_option("#lang", "nl")
            flag_nl = page.inner_text("#patient-flag")
            page.select_option("#lang", "en")
            plurals = page.evaluate(PLURALS)

            # A search by name gives no sex (the form has no such field) and here no given name:
            # the candidates' reasons say so, and do not blame the hospitals' records.
            page.fill("input[name=patientId]", "")
            page.fill("input[name=familyName]", "Peeters")
            page.fill("input[name=birthDate]", "1949-06-05")
            page.press("input[name=familyName]", "Enter")
            page.wait_for_function(SETTLED, timeout=60_000)
            page.locator("#candidates .candidate").first.wait_for(timeout=30_000)
            candidates = page.inner_text("#candidates")
        finally:
            browser.close()
    assert flag.startswith("The hospitals do not record this patient the same way (2 versions)"), flag
    assert versions == [
        "Peeters, Jan · born 5 Jun 1949 · male — at Hospital X (PA-DIS)",
        "PETERS, JAN · born 6 May 1949 · no sex recorded — at Hospital Y (PA-DIS)",
    ], versions
    assert flag_fr.startswith("Les hôpitaux n'enregistrent pas ce patient de la même façon (2 versions)"), (
        flag_fr
    )
    assert "né(e) le" in versions_fr[0] and "masculin" in versions_fr[0], versions_fr
    assert flag_nl.startswith(
        "De ziekenhuizen registreren deze patiënt niet op dezelfde manier (2 versies)"
    ), flag_nl
    assert not violations, violations
    assert plurals == {
        "en": ["from cache, 0 minutes old", "from cache, 1 minute old", "from cache, 2 minutes old"],
        "fr": [
            "depuis le cache, il y a 0 minute",
            "depuis le cache, il y a 1 minute",
            "depuis le cache, il y a 2 minutes",
        ],
        "nl": ["uit de cache, 0 minuten oud", "uit de cache, 1 minuut oud", "uit de cache, 2 minuten oud"],
    }, plurals
    assert "sex not compared (not in the search)" in candidates, candidates
    assert "given name not compared (not in the search)" in candidates, candidates
    assert "no sex recorded" not in candidates and "no given name" not in candidates, candidates
