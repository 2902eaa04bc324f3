"""A PatientName matching key (PS3.4 C.2.2.2.4 wild card matching) checked by pacsfed on names it holds.

Used where the sources were asked by patient id and the caller also gave a name pattern: the id
may be reused at one hospital for another person, so the name narrows what is answered. Both
sides are folded as name search folds them (:func:`federation.identity.names.fold`: case,
accents, ``^`` and other separators), spaces then removed, so ``MULLER^ANNA`` matches
``Müller^Anna`` and ``Van den*`` matches ``VANDENBOSSCHE^JAN``. ``*`` stands for any run of
characters, ``?`` for one. Each component group of the pattern (``=``, PS3.5 6.2.1.1) may meet
any group of the name. An unknown name matches no pattern: it cannot be shown to be this patient's.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from federation.identity.names import fold

__all__ = ["matches_name_pattern"]


def matches_name_pattern(pattern: str, names: Iterable[str | None]) -> bool:
    """Whether any of ``names`` (PN values, groups separated by ``=``) matches the PN pattern."""
    wanted = [_regex(group) for group in _groups(pattern)]
    if not wanted:
        return True  # only wildcards and delimiters: universal matching
    held = [_folded(group) for name in names if name for group in _groups(name)]
    return any(regex.fullmatch(group) for regex in wanted for group in held)


def _groups(pn: str) -> list[str]:
    """The non-empty component groups of a PN's first value."""
    first = pn.split("\\", 1)[0]
    return [group for group in first.split("=")[:3] if group.strip(" ^*")]


def _folded(text: str) -> str:
    return fold(text).replace(" ", "")


def _regex(group: str) -> re.Pattern[str]:
    parts = re.split(r"([*?])", group)
    translated = {"*": ".*", "?": "."}
    return re.compile("".join(translated.get(part) or re.escape(_folded(part)) for part in parts))
