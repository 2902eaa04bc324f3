"""Name folding and candidate scoring: properties over generated names, and the spellings hospitals send."""

from __future__ import annotations

import datetime as dt
import unicodedata
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from federation.identity.names import (
    MERGE_THRESHOLD,
    Demographics,
    MatchScore,
    NameParts,
    _levenshtein,
    family_prefix_pattern,
    fold,
    folded_name,
    name_parts,
    score,
    score_record,
)

bounded = settings(max_examples=200, deadline=None)

SEPARATORS = " \t-_.,'^"
REASON_ORDER = (
    "birth_date_equal",
    "birth_date_mismatch",
    "birth_date_transposed",
    "birth_date_one_digit",
    "birth_date_missing",
    "sex_equal",
    "sex_mismatch",
    "sex_missing",
    *(
        f"{field}_{kind}"
        for field in ("family_name", "given_name")
        for kind in ("equal", "variant", "prefix", "similar", "mismatch", "missing")
    ),
    "names_swapped",
    "name_tokens_equal",
)

ascii_letters = st.sampled_from("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
combining_marks = st.lists(st.integers(0x0300, 0x036F).map(chr), max_size=3).map("".join)
# Letters and digits of every script, so words never hold a separator.
words = st.text(st.characters(categories=["L", "N"]), min_size=1, max_size=8)
separator_runs = st.text(st.sampled_from(SEPARATORS), min_size=1, max_size=3)

NAMES = [
    "Müller",
    "Mueller",
    "MULLER",
    "Muller",
    "Anna",
    "Ana",
    "Anne",
    "Dupré",
    "Élodie",
    "Østergård",
    "Van den Bossche",
    "A",
    "山田",
]
names = st.one_of(st.sampled_from(NAMES), st.text(max_size=12), st.none())
dates = st.one_of(st.none(), st.dates(dt.date(1960, 1, 1), dt.date(1962, 12, 31)))
sexes = st.sampled_from(["M", "F", "O", None, "U", "m"])
# The names of a PN's other component groups (ideographic, phonetic): up to two more.
other_names = st.lists(st.tuples(names, names), max_size=2).map(tuple)
demographics = st.builds(Demographics, names, names, dates, sexes, other_names)
# Demographics with every field known: names that fold to something, a date, a sex.
latin_names = st.text(st.sampled_from("abcdefghijklmnopqrstuvwxyzéüøß- "), max_size=12).filter(
    lambda s: fold(s) != ""
)
full_demographics = st.builds(
    Demographics, latin_names, latin_names, st.dates(dt.date(1900, 1, 1)), st.sampled_from(["M", "F", "O"])
)


# --- fold: properties ----------------------------------------------------------------------------


@bounded
@given(st.text(max_size=30))
def test_fold_is_idempotent(text: str) -> None:
    assert fold(fold(text)) == fold(text)


@bounded
@given(st.lists(st.tuples(ascii_letters, combining_marks), max_size=12))
def test_fold_ignores_accents_on_latin_letters(letters: list[tuple[str, str]]) -> None:
    plain = "".join(letter for letter, _ in letters)
    accented = "".join(letter + marks for letter, marks in letters)
    assert fold(unicodedata.normalize("NFC", accented)) == fold(accented) == fold(plain)


@bounded
@given(st.text(max_size=30))
def test_fold_is_stable_under_unicode_normalization(text: str) -> None:
    forms = {fold(unicodedata.normalize(form, text)) for form in ("NFC", "NFD", "NFKC", "NFKD")}
    assert forms == {fold(text)}


@bounded
@given(st.lists(words, min_size=1, max_size=5), st.data())
def test_fold_ignores_which_separators_and_how_many(parts: list[str], data: st.DataObject) -> None:
    runs = [data.draw(separator_runs) for _ in range(len(parts) + 1)]
    messy = runs[0] + "".join(part + run for part, run in zip(parts, runs[1:], strict=True))
    assert fold(messy) == fold(" ".join(parts))
    assert "  " not in fold(messy)
    assert fold(messy) == fold(messy).strip()


@bounded
@given(st.text(max_size=30))
def test_fold_leaves_single_spaces_only(text: str) -> None:
    folded = fold(text)
    assert not set(folded) & set("-_.,'^")
    assert not any(char.isspace() and char != " " for char in folded)
    assert "  " not in folded
    assert folded == folded.strip()


# --- fold: examples ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Müller", "muller"),
        ("MULLER", "muller"),
        ("Dupré^Élodie", "dupre elodie"),
        ("DUPRE^ELODIE", "dupre elodie"),
        ("Østergård", "ostergard"),
        ("Æbeltoft", "aebeltoft"),
        ("Œuvray", "oeuvray"),
        ("Straße", "strasse"),
        ("Đoković", "dokovic"),
        ("Łukasz", "lukasz"),
        ("Þórsdóttir", "thorsdottir"),
        ("Guðrún", "gudrun"),
        ("Yıldız", "yildiz"),
        ("İnce", "ince"),
        ("  O'Brien-Smith , Jr. ", "o brien smith jr"),
        ("O’Brien", "o brien"),
        ("Van_den\u00a0Bossche", "van den bossche"),
        ("Gal·la", "galla"),
        ("Mül\u00adler", "muller"),
        ("Ｍüｌｌｅｒ", "muller"),
        ("Διονύσιος", "διονυσιοσ"),
        ("ΔΙΟΝΥΣΙΟΣ", "διονυσιοσ"),
        ("Фёдоров", "федоров"),
        ("山田^太郎", "山田 太郎"),
        ("ヤマダ", "やまだ"),  # katakana read as hiragana
        ("ﾔﾏﾀﾞ", "やまだ"),
        ("김^민준", "김 민준"),
        ("", ""),
        ("^^", ""),
    ],
)
def test_fold_examples(text: str, expected: str) -> None:
    assert fold(text) == expected


def test_fold_keeps_japanese_voicing_marks() -> None:
    assert fold("ガ") != fold("カ")


def test_fold_reads_katakana_half_width_katakana_and_hiragana_alike() -> None:
    assert fold("ヤマダ^タロウ") == fold("ﾔﾏﾀﾞ^ﾀﾛｳ") == fold("やまだ^たろう") == "やまだ たろう"
    assert fold("ガ") == fold("が") != fold("か")
    assert fold("スズキ ヽ") == "すずき ゝ"


def test_a_search_in_katakana_meets_a_phonetic_group_in_hiragana() -> None:
    born = dt.date(1965, 3, 17)
    record = Demographics.from_pn("Yamada^Tarou=山田^太郎=やまだ^たろう", born, "M")
    assert score(Demographics("ヤマダ", "タロウ", born, "M"), record).score == 1.0


# --- person names --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pn", "expected"),
    [
        ("Müller^Anna", NameParts("Müller", "Anna", "", "", "")),
        ("Yamada^Tarou=山田^太郎=やまだ^たろう", NameParts("Yamada", "Tarou", "", "", "")),
        ("=山田^太郎", NameParts("山田", "太郎", "", "", "")),
        ("^=山田^太郎", NameParts("山田", "太郎", "", "", "")),
        ("==やまだ^たろう", NameParts("やまだ", "たろう", "", "", "")),
        (
            "Adams^John Robert Quincy^^Rev.^B.A. M.Div.",
            NameParts("Adams", "John Robert Quincy", "", "Rev.", "B.A. M.Div."),
        ),
        ("Smith^John^Paul^Dr^III", NameParts("Smith", "John", "Paul", "Dr", "III")),
        ("DUPONT  ^JEAN ", NameParts("DUPONT", "JEAN", "", "", "")),
        ("Mu\u0308ller^Anna", NameParts("Müller", "Anna", "", "", "")),
        ("Doe^Jane\\Roe^Jane", NameParts("Doe", "Jane", "", "", "")),
        ("", NameParts("", "", "", "", "")),
        ("^^^^", NameParts("", "", "", "", "")),
    ],
)
def test_name_parts(pn: str, expected: NameParts) -> None:
    assert name_parts(pn) == expected


def test_folded_name_indexes_family_given_and_middle_only() -> None:
    assert folded_name("Dupré^Élodie^Marie^Mme^PhD") == "dupre elodie marie"
    assert folded_name("Yamada^Tarou=山田^太郎") == "yamada tarou"
    assert folded_name("=山田^太郎") == "山田 太郎"
    assert folded_name("Müller") == "muller"
    assert folded_name("") == ""


@pytest.mark.parametrize(
    ("family", "expected"),
    [
        ("Müller", "M*"),
        ("Mu\u0308ller", "M*"),
        ("Dupont", "Dupont*"),
        ("DUPONT", "DUPONT*"),
        ("Schwarzenegger", "Schwarze*"),
        ("O'Brien", "O*"),
        ("  Van den Bossche", "Van*"),
        ("Østergård", None),
        ("Ñúñez", None),
        ("山田", None),
        ("Διονύσιος", None),
        ("*", None),
        ("?x", None),
        ("", None),
    ],
)
def test_family_prefix_pattern(family: str, expected: str | None) -> None:
    assert family_prefix_pattern(family) == expected


@bounded
@given(st.text(max_size=20))
def test_family_prefix_pattern_is_a_safe_wildcard(family: str) -> None:
    pattern = family_prefix_pattern(family)
    if pattern is not None:
        lead = pattern[:-1]
        assert pattern.endswith("*")
        assert 1 <= len(lead) <= 8
        assert lead.isascii()
        assert lead.isalpha()
        assert unicodedata.normalize("NFC", family).strip().startswith(lead)


def test_demographics_from_pn() -> None:
    born = dt.date(1967, 3, 12)
    assert Demographics.from_pn("Müller^Anna^Maria", born, " f ") == Demographics(
        "Müller", "Anna Maria", born, "F"
    )
    assert Demographics.from_pn("=山田^太郎", None, "M") == Demographics("山田", "太郎", None, "M")
    assert Demographics.from_pn(None, None, None) == Demographics()
    assert Demographics.from_pn("^", born, "U") == Demographics(None, None, born, None)
    assert Demographics.from_pn("-^Anna", None, "") == Demographics(None, "Anna", None, None)
    assert Demographics.from_pn("Yamada^Tarou=山田^太郎=やまだ^たろう", None, "M") == Demographics(
        "Yamada", "Tarou", None, "M", (("山田", "太郎"), ("やまだ", "たろう"))
    )


# --- score: properties ---------------------------------------------------------------------------


@bounded
@given(demographics, demographics)
def test_score_is_symmetric_bounded_and_ordered(a: Demographics, b: Demographics) -> None:
    result = score(a, b)
    assert result == score(b, a)
    assert 0.0 <= result.score <= 1.0
    assert result.score == round(result.score, 3)
    assert set(result.reasons) <= set(REASON_ORDER)
    assert list(result.reasons) == sorted(result.reasons, key=REASON_ORDER.index)


@bounded
@given(demographics, demographics)
def test_score_is_deterministic(a: Demographics, b: Demographics) -> None:
    assert score(a, b) == score(a, b)


@bounded
@given(demographics, demographics, st.dates(), st.dates())
def test_known_different_birth_dates_stay_below_threshold(
    a: Demographics, b: Demographics, born_a: dt.date, born_b: dt.date
) -> None:
    if born_a == born_b:
        born_b = born_a + dt.timedelta(days=1) if born_a < dt.date.max else born_a - dt.timedelta(days=1)
    a, b = (
        Demographics(a.family_name, a.given_name, born_a, a.sex),
        Demographics(b.family_name, b.given_name, born_b, b.sex),
    )
    result = score(a, b)
    assert result.score < MERGE_THRESHOLD
    assert "birth_date_mismatch" in result.reasons


@bounded
@given(full_demographics)
def test_identical_full_demographics_reach_threshold(a: Demographics) -> None:
    result = score(a, a)
    assert result.score >= MERGE_THRESHOLD
    assert result.reasons[:2] == ("birth_date_equal", "sex_equal")


@bounded
@given(full_demographics, full_demographics)
def test_an_unknown_field_never_scores_above_the_same_field_equal(a: Demographics, b: Demographics) -> None:
    same_birth = score(Demographics(a.family_name, a.given_name, b.birth_date, a.sex), b).score
    assert score(Demographics(a.family_name, a.given_name, None, a.sex), b).score <= same_birth
    same_sex = score(Demographics(a.family_name, a.given_name, a.birth_date, b.sex), b).score
    assert score(Demographics(a.family_name, a.given_name, a.birth_date, None), b).score <= same_sex
    same_given = score(Demographics(a.family_name, b.given_name, a.birth_date, a.sex), b).score
    assert score(Demographics(a.family_name, None, a.birth_date, a.sex), b).score <= same_given


def _first_group_only(d: Demographics) -> Demographics:
    return Demographics(d.family_name, d.given_name, d.birth_date, d.sex)


@bounded
@given(demographics, demographics)
def test_every_group_counts_and_none_lowers_the_score(a: Demographics, b: Demographics) -> None:
    assert score(a, b).score >= score(_first_group_only(a), _first_group_only(b)).score
    # The best pair wins: a name written in any group scores as if it were the only one.
    for family_name, given_name in b.names():
        alone = Demographics(family_name, given_name, b.birth_date, b.sex)
        assert score(a, b).score >= score(a, alone).score


@bounded
@given(demographics, demographics, st.randoms(use_true_random=False))
def test_the_order_of_the_other_groups_does_not_change_the_score(
    a: Demographics, b: Demographics, random: Any
) -> None:
    shuffled = list(b.other_names)
    random.shuffle(shuffled)
    reordered = Demographics(b.family_name, b.given_name, b.birth_date, b.sex, tuple(shuffled))
    assert score(a, reordered).score == score(a, b).score


@bounded
@given(st.text(max_size=10), st.text(max_size=10), st.text(max_size=10))
def test_levenshtein_is_a_metric(a: str, b: str, c: str) -> None:
    assert _levenshtein(a, b) == _levenshtein(b, a)
    assert (_levenshtein(a, b) == 0) == (a == b)
    assert abs(len(a) - len(b)) <= _levenshtein(a, b) <= max(len(a), len(b))
    assert _levenshtein(a, c) <= _levenshtein(a, b) + _levenshtein(b, c)


# --- score: examples -----------------------------------------------------------------------------

BORN = dt.date(1967, 3, 12)
ANNA = Demographics.from_pn("Müller^Anna", BORN, "F")


def test_levenshtein_examples() -> None:
    assert _levenshtein("kitten", "sitting") == 3
    assert _levenshtein("", "abc") == 3
    assert _levenshtein("muller", "mueller") == 1


@pytest.mark.parametrize(
    ("other", "expected"),
    [
        (
            Demographics.from_pn("MULLER^ANNA", BORN, "F"),
            MatchScore(1.0, ("birth_date_equal", "sex_equal", "family_name_equal", "given_name_equal")),
        ),
        (
            Demographics.from_pn("Mueller^Anna", BORN, "F"),
            MatchScore(0.985, ("birth_date_equal", "sex_equal", "family_name_variant", "given_name_equal")),
        ),
        (
            Demographics.from_pn("Müller^Anna", BORN, None),
            MatchScore(0.9, ("birth_date_equal", "sex_missing", "family_name_equal", "given_name_equal")),
        ),
        (
            Demographics.from_pn("Müller^Anna Maria", BORN, "F"),
            MatchScore(0.94, ("birth_date_equal", "sex_equal", "family_name_equal", "given_name_prefix")),
        ),
        (
            Demographics.from_pn("Müller^A", BORN, "F"),
            MatchScore(0.88, ("birth_date_equal", "sex_equal", "family_name_equal", "given_name_prefix")),
        ),
        (
            Demographics.from_pn("Muler^Ana", BORN, "F"),
            MatchScore(0.82, ("birth_date_equal", "sex_equal", "family_name_similar", "given_name_similar")),
        ),
        (
            Demographics.from_pn("Anna^Müller", BORN, "F"),
            MatchScore(0.95, ("birth_date_equal", "sex_equal", "names_swapped")),
        ),
        (
            Demographics.from_pn("MULLER ANNA", BORN, "F"),
            MatchScore(0.925, ("birth_date_equal", "sex_equal", "name_tokens_equal")),
        ),
        (
            Demographics.from_pn("Müller^Anna", BORN, "M"),
            MatchScore(0.7, ("birth_date_equal", "sex_mismatch", "family_name_equal", "given_name_equal")),
        ),
        (
            Demographics.from_pn("Müller^Anna", dt.date(1967, 12, 3), "F"),
            MatchScore(
                0.7,
                (
                    "birth_date_mismatch",
                    "birth_date_transposed",
                    "sex_equal",
                    "family_name_equal",
                    "given_name_equal",
                ),
            ),
        ),
        (
            Demographics.from_pn("Müller^Anna", dt.date(1967, 3, 13), "F"),
            MatchScore(
                0.7,
                (
                    "birth_date_mismatch",
                    "birth_date_one_digit",
                    "sex_equal",
                    "family_name_equal",
                    "given_name_equal",
                ),
            ),
        ),
        (
            Demographics.from_pn("Schmidt^Petra", BORN, "F"),
            MatchScore(0.5, ("birth_date_equal", "sex_equal", "family_name_mismatch", "given_name_mismatch")),
        ),
        (
            Demographics.from_pn("Müller", None, None),
            MatchScore(0.3, ("birth_date_missing", "sex_missing", "family_name_equal", "given_name_missing")),
        ),
        (
            Demographics(),
            MatchScore(
                0.0, ("birth_date_missing", "sex_missing", "family_name_missing", "given_name_missing")
            ),
        ),
    ],
)
def test_score_examples(other: Demographics, expected: MatchScore) -> None:
    assert score(ANNA, other) == expected
    assert score(other, ANNA) == expected


def test_what_the_search_did_not_give_is_not_compared_rather_than_missing() -> None:
    # The page's search has no sex field, and a given name is optional: the record is not to blame.
    search = Demographics("Peeters", None, dt.date(1949, 6, 5), None)
    record = Demographics.from_pn("PEETERS^JAN", dt.date(1949, 6, 5), "M")
    assert score_record(search, record) == MatchScore(
        0.7, ("birth_date_equal", "sex_not_compared", "family_name_equal", "given_name_not_compared")
    )
    # The same when the record lacks them too: the search gave nothing to compare.
    bare = Demographics.from_pn("PEETERS", dt.date(1949, 6, 5), None)
    assert score_record(search, bare).reasons == (
        "birth_date_equal",
        "sex_not_compared",
        "family_name_equal",
        "given_name_not_compared",
    )
    # What the search gave and the record lacks is still the record's gap.
    asked = Demographics("Peeters", "Jan", dt.date(1949, 6, 5), "M")
    assert score_record(asked, bare) == MatchScore(
        0.7, ("birth_date_equal", "sex_missing", "family_name_equal", "given_name_missing")
    )
    # A search without sex is not held back beyond the sex's own 100 points: name and birth date
    # equal reach the threshold.
    without_sex = Demographics("Peeters", "Jan", dt.date(1949, 6, 5), None)
    assert score_record(without_sex, record).score == MERGE_THRESHOLD


@bounded
@given(demographics, demographics)
def test_score_record_scores_as_score_and_only_renames_the_searchs_gaps(
    a: Demographics, b: Demographics
) -> None:
    plain, told = score(a, b), score_record(a, b)
    assert told.score == plain.score
    renamed = {"sex_missing": "sex_not_compared", "given_name_missing": "given_name_not_compared"}
    assert all(t == p or renamed.get(p) == t for p, t in zip(plain.reasons, told.reasons, strict=True))
    if a.sex in ("M", "F", "O"):
        assert "sex_not_compared" not in told.reasons


def test_namesake_born_another_day_scores_low() -> None:
    namesake = Demographics.from_pn("MÜLLER^ANNA", dt.date(1984, 7, 30), "F")
    result = score(ANNA, namesake)
    assert result.score <= 0.5 < MERGE_THRESHOLD
    assert result.reasons[0] == "birth_date_mismatch"


def test_accented_and_plain_spellings_are_one_patient() -> None:
    born = dt.date(1982, 9, 7)
    a = Demographics.from_pn("Dupré^Élodie", born, "F")
    b = Demographics.from_pn("DUPRE^ELODIE", born, "F")
    assert score(a, b) == MatchScore(
        1.0, ("birth_date_equal", "sex_equal", "family_name_equal", "given_name_equal")
    )


def test_scandinavian_spellings() -> None:
    born = dt.date(1990, 5, 1)
    a = Demographics.from_pn("Østergård^Søren", born, "M")
    assert score(a, Demographics.from_pn("OSTERGARD^SOREN", born, "M")).score == 1.0
    assert score(a, Demographics.from_pn("Oestergaard^Soeren", born, "M")).reasons[2:] == (
        "family_name_variant",
        "given_name_variant",
    )


def test_greek_names_fold_across_case_and_tonos() -> None:
    born = dt.date(1975, 1, 20)
    a = Demographics.from_pn("Παπαδόπουλος^Διονύσιος", born, "M")
    b = Demographics.from_pn("ΠΑΠΑΔΟΠΟΥΛΟΣ^ΔΙΟΝΥΣΙΟΣ", born, "M")
    assert score(a, b).score == 1.0


@pytest.mark.parametrize(
    ("search", "family_reason"),
    [
        (Demographics("山田", "太郎"), "family_name_equal"),  # kanji: the Ideographic group
        (Demographics("やまだ", "たろう"), "family_name_equal"),  # kana: the Phonetic group
        (Demographics("Yamada", "Tarou"), "family_name_equal"),  # romaji: the Alphabetic group
        (Demographics("山本", "太郎"), "family_name_mismatch"),
    ],
)
def test_a_search_in_any_script_matches_the_group_in_that_script(
    search: Demographics, family_reason: str
) -> None:
    born = dt.date(1965, 3, 17)
    search = Demographics(search.family_name, search.given_name, born, "M")
    record = Demographics.from_pn("Yamada^Tarou=山田^太郎=やまだ^たろう", born, "M")
    result = score(search, record)
    assert family_reason in result.reasons
    assert result == score(record, search)
    if family_reason == "family_name_equal":
        assert result.score == 1.0


def test_hangul_and_hanja_are_other_groups_of_one_name() -> None:
    born = dt.date(1987, 9, 9)
    record = Demographics.from_pn("Hong^Gildong=洪^吉洞=홍^길동", born, "M")
    assert record.names() == (("Hong", "Gildong"), ("洪", "吉洞"), ("홍", "길동"))
    assert score(Demographics("홍", None, born, None), record).reasons[2] == "family_name_equal"
    assert score(Demographics("洪", "吉洞", born, None), record).score == 0.9


def test_japanese_names_are_compared_in_their_own_script() -> None:
    born = dt.date(1970, 4, 1)
    kanji = Demographics.from_pn("=山田^太郎", born, "M")
    assert score(kanji, Demographics.from_pn("=山田^太郎", born, "M")).score == 1.0
    other = score(kanji, Demographics.from_pn("=山本^太郎", born, "M"))
    assert "family_name_mismatch" in other.reasons
    assert other.score < MERGE_THRESHOLD
