"""One converter per DICOM value type (PS3.5 6.2), shared by every input: DA, TM, IS, PN and text.

Each converter takes text as decoded (from a pydicom ``Dataset`` or DICOM JSON) and returns the
typed value, or None when the text is not one; the caller turns None into a warning naming the
attribute. Person names are split into their component groups here and nowhere else.
"""

from __future__ import annotations

import datetime as dt
import unicodedata
from collections.abc import Iterable, Sequence

__all__ = [
    "beyond_alphabetic",
    "first_name",
    "nfc",
    "parse_da",
    "parse_is",
    "parse_tm",
    "person_name_groups",
    "unique",
]


def nfc(text: str) -> str:
    """NFC; ASCII text, most of it, is NFC already."""
    return text if text.isascii() else unicodedata.normalize("NFC", text)


def unique(texts: Iterable[str]) -> tuple[str, ...]:
    """The non-empty texts, each once, in order (CS values such as ModalitiesInStudy)."""
    found = dict.fromkeys(texts)
    found.pop("", None)
    return tuple(found)


def parse_da(text: str) -> dt.date | None:
    """A DA value (``YYYYMMDD``, or the ACR-NEMA ``YYYY.MM.DD``) as a date, or None."""
    if len(text) == 8 and text.isascii() and text.isdigit():
        try:  # the usual form, read by the C parser
            return dt.date.fromisoformat(text)
        except ValueError:
            return None
    digits = text.strip().replace(".", "").replace("-", "")
    if len(digits) != 8 or not digits.isdigit():
        return None
    try:
        return dt.date(int(digits[:4]), int(digits[4:6]), int(digits[6:8]))
    except ValueError:
        return None


def parse_tm(text: str) -> dt.time | None:
    """A TM value (``HH[MM[SS[.F{1,6}]]]``, or ``HH:MM:SS``) as a time, or None."""
    if len(text) == 6 and text.isascii() and text.isdigit():
        try:  # the usual form, read by the C parser; a leap second goes the long way
            return dt.time.fromisoformat(text)
        except ValueError:
            pass
    text = text.strip().replace(":", "")
    whole, _, fraction = text.partition(".")
    if not whole.isdigit() or len(whole) not in (2, 4, 6) or (fraction and not fraction.isdigit()):
        return None
    hour, minute, second = int(whole[:2]), int(whole[2:4] or 0), int(whole[4:6] or 0)
    micro = int((fraction + "000000")[:6]) if fraction else 0
    try:
        # PS3.5 allows a leap second (60); clamp it rather than reject the study.
        return dt.time(hour, minute, min(second, 59), micro)
    except ValueError:
        return None


def parse_is(text: str) -> int | None:
    """An IS value (a decimal integer string; a decimal point is tolerated) as an int, or None."""
    try:
        return int(float(text))
    except ValueError:
        return None


def person_name_groups(value: str, spaces: str | None = " ") -> tuple[str, ...]:
    """The component groups of one PN value (Alphabetic=Ideographic=Phonetic, PS3.5 6.2.1.1).

    Each group is stripped of *spaces* (None: any whitespace, as DICOM JSON is read), NFC, and
    of trailing empty components (``Müller^Anna^^`` is ``Müller^Anna``); a group holding nothing
    but delimiters is empty, and trailing empty groups are dropped. All groups are returned: the
    caller keeps at most three.
    """
    if "=" not in value:  # the usual name, Alphabetic only; nfc() inlined
        name = value.strip(spaces)
        name = (name if name.isascii() else unicodedata.normalize("NFC", name)).rstrip("^ ")
        return (name,) if name.strip("^ ") else ()
    groups = [nfc(group.strip(spaces)).rstrip("^ ") for group in value.split("=")]
    groups = [group if group.strip("^ ") else "" for group in groups]
    while groups and not groups[-1]:
        groups.pop()
    return tuple(groups)


def first_name(groups: Sequence[str]) -> str | None:
    """The first non-empty group: Alphabetic, else Ideographic, else Phonetic."""
    return next((group for group in groups if group), None)


def beyond_alphabetic(groups: Sequence[str]) -> tuple[str, str, str] | None:
    """(Alphabetic, Ideographic, Phonetic) when the name has an Ideographic or Phonetic group, else None."""
    if not any(groups[1:3]):
        return None
    padded = (*groups, "", "")
    return padded[0], padded[1], padded[2]
