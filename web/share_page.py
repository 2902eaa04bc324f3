"""The ``/s/{code}`` page: a share code's recipient sees the shared exams, read-only, without an account.

GET shows a button only (link previewers and prefetchers must not use up a single-use code);
POST redeems the code (rate-limited, audited) and renders the shared history. Nothing is cached
by the browser and no referrer leaves for another site.

A POST is accepted only from this server's own page: its ``Origin`` must be this server's (every
browser sends ``Origin`` on a POST), else 403 before the code is looked at, so another site's page
cannot spend, and lock out, the failed attempts of a hospital's shared address. The page's
referrer policy is ``same-origin``: under ``no-referrer`` browsers send ``Origin: null`` on
the page's own POST (Fetch standard, "append a request Origin header").
"""

from __future__ import annotations

import html
import logging
import re
import unicodedata
import urllib.parse
from collections.abc import Sequence

from starlette.requests import Request
from starlette.responses import HTMLResponse

from federation.access.principals import AccessContext
from federation.errors import AccessError, AuditError, PacsfedError
from federation.models import Exam, PatientHistory
from web.http_access import ANONYMOUS, client_address, cross_site
from web.request_id import current_request_id

log = logging.getLogger(__name__)

_MAX_FORM_BYTES = 4096
_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'",
}
_STYLE = """body{font-family:system-ui,sans-serif;margin:2rem;max-width:60rem}
table{border-collapse:collapse;width:100%}td,th{border-bottom:1px solid #ccc;padding:.3rem;text-align:left}
.warn{color:#a40}.muted{color:#666}button{font-size:1.1rem;padding:.5rem 1rem}"""


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    document = (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f'<meta name="robots" content="noindex"><style>{_STYLE}</style></head><body>{body}</body></html>'
    )
    return HTMLResponse(document, status_code=status, headers=_HEADERS)


def _form(code: str) -> str:
    return (
        '<form method="post" action="/s">'
        f'<p><label>Share code <input name="code" value="{html.escape(code)}" size="45" autocomplete="off"'
        ' required></label></p><p><button type="submit">Open the shared exams</button></p></form>'
    )


async def share_form(request: Request) -> HTMLResponse:
    """GET /s and /s/{code}: a form; nothing is redeemed until the recipient asks."""
    code = request.path_params.get("code", "")
    return _page(
        "pacsfed · shared exams",
        "<h1>Shared imaging exams</h1><p>Someone gave you a code to see a patient's imaging exams"
        " (read-only, for a limited time).</p>" + _form(code),
    )


_SEXES = {"M": "male", "F": "female", "O": "other"}


def _person_name(pn: str | None) -> str:
    """A DICOM PN (``Family^Given^Middle^Prefix^Suffix``) as written, its components comma-joined."""
    return ", ".join(part.strip() for part in (pn or "").split("^") if part.strip())


def _patient_html(exams: Sequence[Exam]) -> str:
    """Who the exams are of, as each hospital records them: every distinct version, and who holds it.

    Each version is shown as written (never merged); they are flagged as disagreeing when a name,
    birth date or sex both record differs beyond case, accents and separators, so that a recipient
    notices a mix-up and is not cried wolf at by "PEETERS" beside "Peeters".
    """
    variants: dict[tuple[str, str, str], dict[tuple[str, str], None]] = {}
    for exam in exams:
        for location in exam.locations:
            birth = location.patient_birth_date.isoformat() if location.patient_birth_date else ""
            key = (_person_name(location.patient_name), birth, (location.patient_sex or "").strip().upper())
            held = ", ".join(v for v in (location.patient_id, location.issuer_of_patient_id) if v)
            variants.setdefault(key, {})[(location.source.name, held)] = None
    if not variants:
        return ""
    items = []
    for (name, birth, sex), holders in variants.items():
        where = ", ".join(f"{source} ({held})" if held else source for source, held in holders)
        items.append(
            f"<li><strong>{html.escape(name or 'no name recorded')}</strong>"
            f" · {html.escape('born ' + birth if birth else 'no birth date recorded')}"
            f" · {html.escape(_SEXES.get(sex, sex) or 'no sex recorded')}"
            f" <span class=muted>— at {html.escape(where)}</span></li>"
        )
    flag = (
        f'<p class="warn"><strong>⚠ The hospitals do not record this patient the same way ({len(variants)}'
        " versions): check the identity before using these exams.</strong></p>"
        if _disagree(list(variants))
        else ""
    )
    return (
        f"<h2>Patient, as the hospitals record them</h2>{flag}<ul>{''.join(items)}</ul>"
        "<p class=muted>Check that this is your patient before using the exams below.</p>"
    )


def _disagree(variants: list[tuple[str, str, str]]) -> bool:
    """Whether two versions differ in a field both record (a name beyond case, accents and separators)."""
    compared = [(_compared(name), birth, sex) for name, birth, sex in variants]
    return any(
        any(x and y and x != y for x, y in zip(first, second, strict=True))
        for index, first in enumerate(compared)
        for second in compared[index + 1 :]
    )


def _compared(name: str) -> str:
    """A name as compared for disagreement: accents dropped, case folded, separators one space."""
    decomposed = unicodedata.normalize("NFKD", name)
    letters = "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()
    return " ".join(re.split(r"[\s,.\-_'^]+", letters)).strip()


def _history_html(history: PatientHistory) -> str:
    rows = []
    for exam in history.exams:
        where = ", ".join(html.escape(location.source.name) for location in exam.locations)
        rows.append(
            "<tr>"
            f"<td>{exam.study_date.isoformat() if exam.study_date else '?'}</td>"
            f"<td>{html.escape(', '.join(exam.modalities))}</td>"
            f"<td>{html.escape(exam.description or '')}</td>"
            f"<td>{where}</td>"
            f"<td class=muted>{html.escape(exam.study_instance_uid)}</td>"
            "</tr>"
        )
    sources = "".join(
        f"<li>{html.escape(outcome.source.name)}: {outcome.status.value}</li>" for outcome in history.sources
    )
    partial = (
        ""
        if history.complete
        else '<p class="warn">Not every hospital answered (see below): exams they hold are not shown.</p>'
    )
    table = (
        "<table><tr><th>Date</th><th>Modality</th><th>Description</th><th>Hospital</th><th>Study UID</th></tr>"
        + "".join(rows)
        + "</table>"
        if rows
        else "<p>No exam found.</p>"
    )
    return f"{partial}{_patient_html(history.exams)}{table}<h2>Hospitals</h2><ul>{sources}</ul>"


async def share_view(request: Request) -> HTMLResponse:
    """POST /s: redeem the code and show exactly its scope (sent from this server's own page only)."""
    services = request.app.state.services
    address = client_address(request)
    anonymous = AccessContext(ANONYMOUS, address, current_request_id(), "share-page")
    if cross_site(request, origin_required=True):
        await services.history.cross_site_refused(anonymous)
        return _page(
            "pacsfed · shared exams",
            "<p class=warn>This form opens only from this site's own page.</p>" + _form(""),
            403,
        )
    body = await request.body()
    if len(body) > _MAX_FORM_BYTES:
        return _page("pacsfed · shared exams", "<p>Request too large.</p>", 413)
    code = urllib.parse.parse_qs(body.decode("utf-8", "replace")).get("code", [""])[0]
    try:
        redeemed = await services.history.redeem_share(code, address, anonymous)
        principal = await services.history.share_principal(redeemed.token)
        reader = AccessContext(principal, address, current_request_id(), "share-page")
        history = await services.history.patient_history(redeemed.record.patient, reader)
    except AccessError as exc:
        status = 429 if exc.code == "LOCKED_OUT" else 403
        return _page(
            "pacsfed · shared exams", f"<p class=warn>{html.escape(str(exc))}</p>" + _form(""), status
        )
    except AuditError:
        log.error("share page: the audit journal is unavailable; nothing was shown")
        return _page("pacsfed · shared exams", "<p class=warn>Temporarily unavailable.</p>", 503)
    except PacsfedError as exc:
        log.warning("share page: %s", type(exc).__name__)
        return _page("pacsfed · shared exams", "<p class=warn>The exams could not be listed.</p>", 502)
    expires = redeemed.expires_at.strftime("%Y-%m-%d %H:%M UTC")
    return _page(
        "pacsfed · shared exams",
        f"<h1>Shared imaging exams</h1><p class=muted>Read-only; this access ends {expires}.</p>"
        + _history_html(history),
    )
