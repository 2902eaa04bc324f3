"""Viewer links: a source's URL template (``viewer_url``) checked at start-up and filled in per location.

A template is an absolute ``http(s)`` URL whose placeholders are ``{studyInstanceUid}``,
``{accessionNumber}`` and ``{patientId}`` only, e.g. ``https://viewer.example/view?study={studyInstanceUid}``
(OHIF, Orthanc Explorer 2 / Stone, a vendor's viewer). Placeholders stand in the path, query or
fragment, never in the scheme or the host, and each value is percent-encoded whole (``/``, ``&``,
``=`` and ``#`` included), so an identifier can never change where the link points.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Mapping

__all__ = ["PLACEHOLDERS", "check_template", "fill_template"]

PLACEHOLDERS = ("studyInstanceUid", "accessionNumber", "patientId")
"""The names a template may use, in braces."""

_FIELD = re.compile(r"\{([^{}]*)\}")


def check_template(template: str) -> str:
    """``template`` if it is a usable viewer URL template; ValueError (no patient data) saying why not."""
    for name in _FIELD.findall(template):
        if name not in PLACEHOLDERS:
            allowed = ", ".join("{" + p + "}" for p in PLACEHOLDERS)
            raise ValueError(f"viewer_url: unknown placeholder {{{name}}} (allowed: {allowed})")
    bare = _FIELD.sub("x", template)
    if "{" in bare or "}" in bare:
        raise ValueError("viewer_url: a brace that opens or closes no placeholder")
    if any(c.isspace() for c in template):
        raise ValueError("viewer_url: no spaces or line breaks")
    parts = urllib.parse.urlsplit(template)
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        raise ValueError("viewer_url: must be an absolute http:// or https:// URL")
    if "{" in parts.netloc:
        raise ValueError("viewer_url: placeholders may not stand in the host")
    return template


def fill_template(template: str, values: Mapping[str, str | None]) -> str | None:
    """The template with each placeholder replaced by its percent-encoded value; None when one is missing."""
    missing = False

    def value_of(match: re.Match[str]) -> str:
        nonlocal missing
        value = values.get(match.group(1))
        if not value:
            missing = True
            return ""
        return urllib.parse.quote(value, safe="")

    filled = _FIELD.sub(value_of, template)
    return None if missing else filled
