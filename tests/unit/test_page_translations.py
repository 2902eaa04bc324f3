"""The physician's page says everything in French, Dutch and English: no key is left untranslated.

The keys come from the page itself (``data-i18n`` in its HTML, ``t("…")`` and ``plural("…")`` in its
JavaScript) and from the API's enums whose values the page names in words (``status.<SourceStatus>``,
``reason.<CandidateReason>``, ``match.<MatchKind>``, ``report.<ReportStatus>``,
``availability.<ReportAvailability>``).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from web.page import ASSETS_DIR

LANGUAGES = ("en", "fr", "nl")
SCHEMA = Path(__file__).parents[2] / "schema.graphql"
"""The published schema (``pacsfed schema`` writes it; a test keeps it current)."""
SEXES = ("M", "F", "O")
"""PatientSex values the page names in words (PS3.3 C.7.1.1); any other is shown as given."""
ENUM_KEYS = {
    "SourceStatus": "status",
    "CandidateReason": "reason",
    "MatchKind": "match",
    "ReportStatus": "report",
    "ReportAvailability": "availability",
}


def dictionaries() -> dict[str, dict[str, str]]:
    """Each language's dictionary, read from i18n.js (one ``"key": "text",`` a line)."""
    source = (ASSETS_DIR / "i18n.js").read_text(encoding="utf-8")
    found = {}
    for language, body in re.findall(r"^  (\w+): \{\n(.*?)^  \},$", source, re.MULTILINE | re.DOTALL):
        found[language] = dict(re.findall(r'^    "([^"]+)": "((?:[^"\\]|\\.)*)",$', body, re.MULTILINE))
    return found


def enum_values(name: str) -> list[str]:
    """The values of one enum of the published schema."""
    match = re.search(rf"^enum {name} \{{\n(.*?)^\}}", SCHEMA.read_text(encoding="utf-8"), re.M | re.S)
    assert match, name
    return match.group(1).split()


def used_keys() -> set[str]:
    """Every key the page asks for."""
    html = (ASSETS_DIR / "index.html").read_text(encoding="utf-8")
    keys = set(re.findall(r'data-i18n="([^"]+)"', html))
    for script in ASSETS_DIR.glob("*.js"):
        text = script.read_text(encoding="utf-8")
        keys |= {key for key in re.findall(r'\bt\("([^"]+)"', text) if not key.endswith(".")}
        for key in re.findall(r'\bplural\("([^"]+)"', text):
            keys |= {f"{key}.one", f"{key}.other"}
    for enum, prefix in ENUM_KEYS.items():
        keys |= {f"{prefix}.{value}" for value in enum_values(enum)}
    keys |= {f"sex.{value}" for value in SEXES}
    return keys


def translated(dictionary: dict[str, str], key: str) -> bool:
    """The key has a text, or (a count, like ``status.OK``) both its plural forms have one."""
    if dictionary.get(key, "").strip():
        return True
    return all(dictionary.get(f"{key}.{form}", "").strip() for form in ("one", "other"))


def test_the_three_languages_are_there() -> None:
    assert set(dictionaries()) == set(LANGUAGES)


@pytest.mark.parametrize("language", LANGUAGES)
def test_every_key_the_page_uses_is_translated(language: str) -> None:
    dictionary = dictionaries()[language]
    missing = sorted(key for key in used_keys() if not translated(dictionary, key))
    assert not missing, f"{language} lacks {missing}"


def test_the_languages_have_the_same_keys_and_placeholders() -> None:
    languages = dictionaries()
    english = languages["en"]
    for language, dictionary in languages.items():
        assert dictionary.keys() == english.keys(), language
        for key, text in dictionary.items():
            assert set(re.findall(r"\{\w+\}", text)) == set(re.findall(r"\{\w+\}", english[key])), (
                language,
                key,
            )


def test_the_page_uses_keys_found_by_this_test() -> None:
    # A guard for the test itself: the patterns above still find the page's keys.
    keys = used_keys()
    assert {
        "search.submit",
        "status.TIMEOUT",
        "status.OK.one",
        "banner.incomplete.one",
        "patient.born",
    } <= keys
