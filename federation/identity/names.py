"""Patient-name folding and deterministic demographic scoring of candidate patients.

A patient has another PatientID at every hospital, and the name is written differently from one
system to the next. :func:`fold` makes two spellings of one name compare equal; :func:`score` says
how strongly two sets of demographics look like one person, with machine-friendly reasons. A score
is evidence shown next to a *candidate*; it never merges anything.

Weights (points out of 1000, so sums are exact integers; the score is ``points / 1000``):

===========================  ======  =====================================================
evidence                     points  note
===========================  ======  =====================================================
birth date equal                400  strongest single identifier
family name equal               300
given name equal                200
sex equal                       100
name: spelling variant         x0.95  Müller/Mueller, Østergård/Oestergaard
name: prefix of the other      x0.7   x0.4 if the shorter is under 3 letters (an initial)
name: similar (Levenshtein)    x0.8s  s = 1 - distance / longer length, only when s >= 0.75
names swapped (family↔given)   x0.9   of the mean family/given weight per matching part
name tokens equal, reordered   x0.85  of family + given; whole names in another split/order
birth date near miss            200  day/month transposed or one digit off; score capped 700
birth date mismatch               0  score capped at 500: never reaches MERGE_THRESHOLD
sex mismatch                   -200  both known (M, F or O) and different, O vs M included
unknown field                     0  missing information lowers confidence, never matches
===========================  ======  =====================================================

Unknown is unknown on either side, and earns nothing either way: a search that gives no sex reaches
at most 900 (exactly :data:`MERGE_THRESHOLD` with everything else equal), one that gives no given
name at most 700, since family name and birth date alone are what twins share. No cap comes from an
unknown field: only two known and different birth dates cap. :func:`score` says ``*_missing`` for
a field either side lacks; :func:`score_record`, which knows which side is the search, says
``sex_not_compared`` and ``given_name_not_compared`` for what the search did not give, and keeps
``*_missing`` for what the record lacks (the points are the same).

Rationale: the order follows the discriminating power of each field in Fellegi-Sunter record
linkage (I. P. Fellegi and A. B. Sunter, "A Theory for Record Linkage", JASA 64(328), 1969), where
agreement weighs log(m/u) and u is the chance that two different people agree: about 1/25,000 for a
birth date, roughly 1/1,000 for a family name, 1/200 for a given name and 1/2 for sex. Those give
about 14.5 : 10 : 7.6 : 1 bits; the points above keep that order, rounded by hand (not fitted to
data), with sex raised to 100 so that everything equal is exactly 1.0 and name + birth date equal
with an unknown sex is exactly :data:`MERGE_THRESHOLD`. Both sides' birth dates known and different
cap the score strictly below the threshold, whatever else matches: a namesake born another day is
the classic wrong merge. Names are compared folded, spaces removed, so ``Van den Bossche`` equals
``VANDENBOSSCHE``. Levenshtein distance: V. I. Levenshtein, Soviet Physics Doklady 10(8), 1966.

Names in several scripts (PS3.5 6.2.1.1: ``Yamada^Tarou=山田^太郎=やまだ^たろう``): each side's
component groups are candidate names, every pair is compared and the best one counts (ties go to
the earlier groups, then to the reasons), so a search written in kanji, hanzi or hangul meets the
group written in that script, and extra groups can only raise a score.

Scores are deterministic and symmetric: ``score(a, b) == score(b, a)``, reasons included. Reasons
come in a fixed order (birth date, sex, family name, given name, whole name) and never hold a name.
"""

from __future__ import annotations

import datetime
import re
import unicodedata
from dataclasses import dataclass
from itertools import product

__all__ = [
    "MERGE_THRESHOLD",
    "Demographics",
    "MatchScore",
    "NameParts",
    "family_prefix_pattern",
    "fold",
    "folded_name",
    "group_parts",
    "name_parts",
    "score",
    "score_record",
]

MERGE_THRESHOLD: float = 0.9

# --- folding -------------------------------------------------------------------------------------

# Only the generic combining-diacritic blocks are dropped (accents, Greek tonos, Cyrillic breve):
# the Japanese voicing marks (U+3099, U+309A) and the vowel signs of Indic scripts are letters of
# the name, not accents, and stay (they are recomposed by the final NFC).
_DIACRITICS = re.compile("[\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f]")

# Letters that carry their mark in the glyph and so have no Unicode decomposition (lower case: the
# table applies after casefold). U+00B7 is the Catalan middle dot of "l·l", written or not; the
# invisible characters that copy and paste leave inside names go too.
_TRANSLITERATION = str.maketrans(
    {
        "ø": "o",
        "æ": "ae",
        "œ": "oe",
        "ß": "ss",
        "đ": "d",
        "ð": "d",
        "ł": "l",
        "þ": "th",
        "ı": "i",
        "ħ": "h",
        "ŧ": "t",
        "ŋ": "ng",
        "ĸ": "k",
        "ƒ": "f",
        "ə": "e",
        "ɛ": "e",
        "ɔ": "o",
        "ɨ": "i",
        "ʉ": "u",
        "ɓ": "b",
        "ɗ": "d",
        "ɖ": "d",
        "ƙ": "k",
        "ƴ": "y",
        "ȷ": "j",
        "·": "",
        "\u00ad": "",  # soft hyphen
        "\u200b": "",  # zero-width space
        "\u2060": "",  # word joiner
        "\ufeff": "",  # zero-width no-break space (a stray byte-order mark)
    }
)

# Katakana to hiragana (U+30A1-U+30F6 and the iteration marks U+30FD-U+30FE are U+0060 above their
# hiragana): one reading written in either kana, as Japanese phonetic groups are. Half-width
# katakana (ﾔﾏﾀﾞ) became full-width in NFKD first; the prolonged sound mark ー stays.
_KANA = {code: code - 0x60 for code in (*range(0x30A1, 0x30F7), 0x30FD, 0x30FE)}

# Whitespace, the ASCII separators people type, their typographic look-alikes (apostrophes,
# hyphens, dashes) and '^', the PN component delimiter (PS3.5 6.2.1).
_SEPARATORS = re.compile(r"[\s\-_.,'^\u2018\u2019\u02bc\u02bb\u2010\u2011\u2012\u2013\u2014\u2015]+")


def _strip_diacritics(text: str) -> str:
    return _DIACRITICS.sub("", unicodedata.normalize("NFKD", text))


def fold(text: str) -> str:
    """Fold for matching: NFKD, drop combining marks, casefold, transliterate letters that do not decompose (ø→o, æ→ae, œ→oe, ß→ss, đ→d, ł→l, þ→th, ð→d, ı→i ...), katakana to hiragana, unify separators (whitespace, '-', '_', '.', ',', ''' and '^') to one single space, strip. Non-Latin scripts (Greek, CJK, Cyrillic) stay as folded letters (casefold + accent removal, e.g. Greek tonos removed) — never dropped."""
    # Marks go before casefold (U+0345 would casefold to a letter) and after it (casefold can
    # produce decomposable letters); the final NFC recomposes kana voicing marks and Hangul.
    folded = (
        _strip_diacritics(_strip_diacritics(text).casefold()).translate(_TRANSLITERATION).translate(_KANA)
    )
    return unicodedata.normalize("NFC", _SEPARATORS.sub(" ", folded)).strip()


# --- DICOM person names --------------------------------------------------------------------------


@dataclass(frozen=True)
class NameParts:
    """The five components of one PN component group (PS3.5 6.2.1), stripped, possibly empty."""

    family: str
    given: str
    middle: str
    prefix: str
    suffix: str


def name_parts(pn: str) -> NameParts:
    """The components of a PN's first non-empty group (Alphabetic=Ideographic=Phonetic), first value only."""
    return next(iter(group_parts(pn)), _NO_PARTS)


def group_parts(pn: str) -> tuple[NameParts, ...]:
    """The components of each non-empty group of a PN's first value, in group order (at most three)."""
    first_value = next((value for value in pn.split("\\") if value.strip(" =^")), "")
    return tuple(_parts(group) for group in first_value.split("=")[:3] if group.strip(" ^"))


def _parts(group: str) -> NameParts:
    components = [unicodedata.normalize("NFC", c).strip() for c in group.split("^")]
    components += [""] * (5 - len(components))
    # A non-conformant sixth component is kept in the suffix rather than lost.
    suffix = " ".join(c for c in components[4:] if c)
    return NameParts(components[0], components[1], components[2], components[3], suffix)


_NO_PARTS = NameParts("", "", "", "", "")


def folded_name(pn: str) -> str:
    """The folded family, given and middle names of a PN, for indexing and search."""
    parts = name_parts(pn)
    return fold(f"{parts.family} {parts.given} {parts.middle}")


def family_prefix_pattern(family: str) -> str | None:
    """A DICOM wildcard PN matching key for a family name that a PACS can evaluate without folding: the longest leading run of ASCII letters of the NFC family name (max 8) followed by '*', e.g. 'Müller' → 'M*', 'Dupont' → 'Dupont*', 'Østergård' → None (no ASCII lead: the caller falls back to birth date only). Never returns just '*'."""
    # PS3.4 C.2.2.2.4 wild card matching; C.2.2.2.1.1 lets a PACS match PN case-sensitively, so
    # the letters keep their case. Only ASCII letters: they are the same in every character set.
    lead = re.match(r"[A-Za-z]{1,8}", unicodedata.normalize("NFC", family).strip())
    return f"{lead.group()}*" if lead else None


# --- demographics and scoring --------------------------------------------------------------------

_SEXES = frozenset({"M", "F", "O"})


def _clean_sex(sex: str | None) -> str | None:
    value = (sex or "").strip().upper()
    return value if value in _SEXES else None


def _known(name: str | None) -> str | None:
    """The name if it holds anything once folded, else None (unknown)."""
    return name if name and fold(name) else None


@dataclass(frozen=True)
class Demographics:
    """What a source says about a patient, for scoring; None is unknown.

    ``other_names`` are the (family, given) names of the PN's other component groups: the same
    person written in another script (``Yamada^Tarou=山田^太郎=やまだ^たろう``).
    """

    family_name: str | None = None
    given_name: str | None = None
    birth_date: datetime.date | None = None
    sex: str | None = None  # 'M' | 'F' | 'O' | None
    other_names: tuple[tuple[str | None, str | None], ...] = ()

    @classmethod
    def from_pn(
        cls, pn: str | None, birth_date: datetime.date | None = None, sex: str | None = None
    ) -> Demographics:
        """From a DICOM PN (given and middle names joined; every group) and a PatientSex ('M', 'F', 'O', else None)."""
        names = [_family_given(parts) for parts in group_parts(pn or "")]
        (family, given), *others = names or [(None, None)]
        return cls(family, given, birth_date, _clean_sex(sex), tuple(others))

    def names(self) -> tuple[tuple[str | None, str | None], ...]:
        """Every (family, given) name this patient is known by: the first group's, then the others."""
        return ((self.family_name, self.given_name), *self.other_names)


def _family_given(parts: NameParts) -> tuple[str | None, str | None]:
    return _known(parts.family), _known(f"{parts.given} {parts.middle}".strip())


@dataclass(frozen=True)
class MatchScore:
    """How strongly two demographics look like one patient, in [0, 1], and why."""

    score: float
    reasons: tuple[str, ...]


_BIRTH_DATE = 400
_FAMILY = 300
_GIVEN = 200
_SEX = 100
_BIRTH_DATE_NEAR_MISS = 200
_SEX_MISMATCH = -200
_NEAR_MISS_CAP = 700
_MISMATCH_CAP = 500
_SWAPPED = 0.9
_TOKENS = 0.85
_SIMILAR_MIN = 0.75

# German umlauts and the Scandinavian letters have a second, ASCII spelling that registries use.
_SPELLINGS = str.maketrans({"ä": "ae", "ö": "oe", "ü": "ue", "ø": "oe", "å": "aa", "æ": "ae"})


def _levenshtein(a: str, b: str) -> int:
    """Edit distance: insertions, deletions and substitutions, each costing one."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, char_a in enumerate(a, start=1):
        current = [i]
        for j, char_b in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (char_a != char_b)))
        previous = current
    return previous[-1]


def _similarity(a: str, b: str) -> float:
    """1 - edit distance / longer length; 0 without computing it when the lengths alone rule it out."""
    longer = max(len(a), len(b))
    if abs(len(a) - len(b)) > (1 - _SIMILAR_MIN) * longer:
        return 0.0
    return 1 - _levenshtein(a, b) / longer


def _compact(name: str) -> str:
    return fold(name).replace(" ", "")


def _spellings(name: str) -> frozenset[str]:
    spelled = unicodedata.normalize("NFC", name).casefold().translate(_SPELLINGS)
    return frozenset({_compact(name), _compact(spelled)})


def _compare(a: str, b: str) -> tuple[str, float]:
    """How two names relate ('equal', 'variant', 'prefix', 'similar', 'mismatch') and the factor it earns."""
    x, y = _compact(a), _compact(b)
    if x == y:
        return "equal", 1.0
    spellings_a, spellings_b = _spellings(a), _spellings(b)
    if spellings_a & spellings_b:
        return "variant", 0.95
    short, long = sorted((x, y), key=lambda s: (len(s), s))
    prefix = 0.0
    if long.startswith(short):
        prefix = 0.7 if len(short) >= 3 else 0.4
    similar = max((_similarity(p, q) for p, q in product(spellings_a, spellings_b)), default=0.0)
    similar = 0.8 * similar if similar >= _SIMILAR_MIN else 0.0
    if prefix == similar == 0.0:
        return "mismatch", 0.0
    return ("prefix", prefix) if prefix >= similar else ("similar", similar)


def _birth_date_near_miss(a: datetime.date, b: datetime.date) -> str | None:
    if (a.year, a.month, a.day) == (b.year, b.day, b.month):
        return "birth_date_transposed"
    x, y = (f"{d.year:04d}{d.month:02d}{d.day:02d}" for d in (a, b))
    if sum(p != q for p, q in zip(x, y, strict=True)) == 1:
        return "birth_date_one_digit"
    return None


def _birth_date(a: Demographics, b: Demographics) -> tuple[int, int, list[str]]:
    """Points, cap and reasons from the birth dates."""
    if a.birth_date is None or b.birth_date is None:
        return 0, 1000, ["birth_date_missing"]
    if a.birth_date == b.birth_date:
        return _BIRTH_DATE, 1000, ["birth_date_equal"]
    near_miss = _birth_date_near_miss(a.birth_date, b.birth_date)
    if near_miss:
        return _BIRTH_DATE_NEAR_MISS, _NEAR_MISS_CAP, ["birth_date_mismatch", near_miss]
    return 0, _MISMATCH_CAP, ["birth_date_mismatch"]


def _sex(a: Demographics, b: Demographics) -> tuple[int, list[str]]:
    """Points and reasons from the sexes."""
    x, y = _clean_sex(a.sex), _clean_sex(b.sex)
    if x is None or y is None:
        return 0, ["sex_missing"]
    return (_SEX, ["sex_equal"]) if x == y else (_SEX_MISMATCH, ["sex_mismatch"])


def _name(field: str, weight: int, a: str | None, b: str | None) -> tuple[int, list[str]]:
    """Points and reasons from one name field compared in place (both known)."""
    if a is None or b is None:
        return 0, [f"{field}_missing"]
    kind, factor = _compare(a, b)
    return round(weight * factor), [f"{field}_{kind}"]


def _names(a: Demographics, b: Demographics) -> tuple[int, list[str]]:
    """Points and reasons from the best-matching pair of names, one of each side's groups (any script).

    Ties go to the earlier groups, then to the reasons: a total order that reads the same from
    either side, so the result is symmetric as ``_name_pair`` is.
    """
    pairs = (
        (points, -(i + j), reasons)
        for i, (family_a, given_a) in enumerate(a.names())
        for j, (family_b, given_b) in enumerate(b.names())
        for points, reasons in [_name_pair(family_a, given_a, family_b, given_b)]
    )
    points, _, reasons = max(pairs)
    return points, reasons


def _name_pair(
    family_a: str | None, given_a: str | None, family_b: str | None, given_b: str | None
) -> tuple[int, list[str]]:
    """Points and reasons from one name of each side: in place, swapped family/given, or as reordered tokens."""
    family_a, given_a = _known(family_a), _known(given_a)
    family_b, given_b = _known(family_b), _known(given_b)
    family_points, family_reasons = _name("family_name", _FAMILY, family_a, family_b)
    given_points, given_reasons = _name("given_name", _GIVEN, given_a, given_b)
    best, reasons = family_points + given_points, family_reasons + given_reasons
    if family_a and given_a and family_b and given_b:
        # Both cross pairs get the mean weight, so swapping a and b gives the same points.
        (_, left), (_, right) = _compare(family_a, given_b), _compare(given_a, family_b)
        if left > 0 and right > 0:
            swapped = round(_SWAPPED * (_FAMILY + _GIVEN) / 2 * (left + right))
            if swapped > best:
                best, reasons = swapped, ["names_swapped"]
    tokens_a = sorted(fold(f"{family_a or ''} {given_a or ''}").split())
    tokens_b = sorted(fold(f"{family_b or ''} {given_b or ''}").split())
    if len(tokens_a) >= 2 and tokens_a == tokens_b:
        tokens = round(_TOKENS * (_FAMILY + _GIVEN))
        if tokens > best:
            best, reasons = tokens, ["name_tokens_equal"]
    return best, reasons


def score(a: Demographics, b: Demographics) -> MatchScore:
    """Score two demographics as one patient: deterministic, symmetric, reasons in a fixed order, no names."""
    birth_points, cap, birth_reasons = _birth_date(a, b)
    sex_points, sex_reasons = _sex(a, b)
    name_points, name_reasons = _names(a, b)
    points = min(cap, max(0, birth_points + sex_points + name_points), 1000)
    return MatchScore(round(points / 1000, 3), tuple(birth_reasons + sex_reasons + name_reasons))


_NOT_COMPARED = {"sex_missing": "sex_not_compared", "given_name_missing": "given_name_not_compared"}


def score_record(reference: Demographics, record: Demographics) -> MatchScore:
    """Score a record against who is looked for: :func:`score`, with the search's own gaps said as such.

    A sex or a given name the reference does not give (in any of its names) was not compared: its
    reason is ``sex_not_compared`` or ``given_name_not_compared``, not ``*_missing``, which then
    always means the record lacks it. Points and score are :func:`score`'s.
    """
    match = score(reference, record)
    lacking = set()
    if _clean_sex(reference.sex) is None:
        lacking.add("sex_missing")
    if all(_known(given) is None for _, given in reference.names()):
        lacking.add("given_name_missing")
    if not lacking:
        return match
    return MatchScore(match.score, tuple(_NOT_COMPARED[r] if r in lacking else r for r in match.reasons))
