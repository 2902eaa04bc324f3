"""Text off the wire, decoded per the identifier's SpecificCharacterSet (0008,0005), PS3.3 C.12.1.1.2, PS3.5 6.1.

pydicom decodes it (``pydicom.charset.decode_bytes``), called on an element's raw bytes with all
its values and the delimiters that restore the sets of value 1 (PS3.5 6.1.2.5.3), except where
pydicom measurably reads it wrong; those cases go to the own decoder (``connectors._iso2022``),
each named by a test in tests/unit/test_charsets.py:

- bytes beyond ASCII where no G1 set is designated: pydicom reads them with value 1's set,
  Latin-1 when that is the default repertoire, without a word. This covers a VR that
  SpecificCharacterSet does not apply to (CS, DA, …: ASCII only, PS3.5 6.1.2.3;
  ``test_undecodable_bytes_…[…ModalitiesInStudy…]``), text without a declared set (guessed,
  UTF-8 else Latin-1, with a warning: ``test_text_beyond_ascii_without_a_declared_set…``),
  stray bytes in Japanese text (``test_undecodable_bytes_…[…Yamada\\xe9]``), and bytes after
  a delimiter that ended a G1 designation (``test_a_delimiter_ends_a_g1_designation``);
- bytes after ``ESC ( B`` or ``ESC ( J``, which designate G0 only: pydicom reads them as
  Latin-1 instead of the G1 set in force (``test_a_g0_designation_leaves_g1_as_it_was``);
- ISO_IR 203 (ISO 8859-15), which pydicom does not know (``test_sets_pydicom_does_not_write``,
  ``test_iso2022_single_byte_extensions[203…]``);
- ISO 2022 IR 58 (GB 2312): pydicom keeps ``ESC $ ) A`` in the text
  (``test_iso2022_person_name_groups[…IR 58…]``), and cannot read the text its own writer
  leaves without it (``test_gb2312_without_its_escape_sequence_is_read_with_a_warning``);
- ISO_IR 13: pydicom reads it as Shift JIS, taking bytes beyond JIS X 0201 Katakana for kanji
  (``test_iso_ir_13_bytes_beyond_katakana_are_invalid``);
- an escape sequence that is unknown or designates a set not declared: pydicom reads what
  follows with value 1's set (``test_escape_to_an_undeclared_set…``,
  ``test_unknown_escape_sequence_is_replaced_with_a_warning``);
- bytes not valid in the declared sets: pydicom says so only with a process-wide warning, and
  reads the whole fragment again with value 1's set; the own decoder replaces each character
  that does not decode (``test_undecodable_bytes_give_a_replacement_character_and_a_warning``).

Either way a value that cannot be decoded yields U+FFFD and a problem naming no value text,
never an exception, and the text comes out NFC without control characters.
"""

from __future__ import annotations

import functools
import re
import unicodedata
import warnings
from collections.abc import Sequence

from pydicom.charset import convert_encodings, decode_bytes

from connectors import _iso2022
from connectors._iso2022 import DEFAULT_REPERTOIRE, CharacterSet, character_set

__all__ = [
    "CHARSET_VRS",
    "DEFAULT_REPERTOIRE",
    "LINE_DELIMITERS",
    "REPLACEMENT",
    "SINGLE_VALUED_VRS",
    "CharacterSet",
    "character_set",
    "clean",
    "decode",
    "decode_text",
    "delimiters",
]

REPLACEMENT = _iso2022.REPLACEMENT
LINE_DELIMITERS = b"\r\n\t\f"
# VRs whose text SpecificCharacterSet applies to (PS3.5 6.1.2.3); all others are ASCII.
CHARSET_VRS = frozenset({"SH", "LO", "UC", "ST", "LT", "UT", "PN"})
SINGLE_VALUED_VRS = frozenset({"ST", "LT", "UT", "UR"})
# C0 and C1 controls other than TAB, LF, FF and CR have no place in a decoded value.
_CONTROLS = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f-\x9f]")
# Defined terms pydicom reads wrong whatever the bytes (see the module docstring).
_OWN_TERMS = frozenset({"ISO_IR 203", "ISO 2022 IR 203", "ISO 2022 IR 58", "ISO_IR 13", "ISO 2022 IR 13"})


def delimiters(vr: str) -> bytes:
    """The bytes that restore the sets of value 1 in a value of *vr* (PS3.5 6.1.2.5.3)."""
    return LINE_DELIMITERS + (b"" if vr in SINGLE_VALUED_VRS else b"\\") + (b"^=" if vr == "PN" else b"")


# pydicom reports bytes it cannot decode only with a process-wide warning, which a reader in a
# worker thread (DIMSE) cannot catch safely: warnings.catch_warnings is not thread-safe. That one
# warning becomes an exception raised inside decode_bytes, and the own decoder reads the value.
warnings.filterwarnings("error", "Failed to decode byte string", UserWarning, "pydicom")


@functools.cache
def _encodings(terms: tuple[str, ...]) -> list[str]:
    """pydicom's Python codecs for defined terms it knows (no warning: they are spelt right)."""
    return convert_encodings(list(terms))


def _pydicom_is_right(data: bytes, charset: CharacterSet, delimiters: bytes) -> bool:
    """Whether pydicom reads *data* as PS3.5 says (the cases in the module docstring)."""
    if charset.standalone:
        return True
    if not _OWN_TERMS.isdisjoint(charset.terms):
        return False
    if _iso2022.ESC in data and not _iso2022.escapes_declared(data, charset):
        return False
    return not _iso2022.read_as_value_1(data, charset, delimiters)


def _pydicom_decode(data: bytes, charset: CharacterSet, delimiters: bytes) -> str | None:
    """pydicom's reading; None when the bytes are not valid in the declared sets."""
    try:
        return decode_bytes(data, _encodings(charset.terms), set(delimiters))
    except (UserWarning, ValueError):  # UnicodeDecodeError in pydicom's RAISE reading mode
        return None


def decode(data: bytes, charset: CharacterSet, delimiters: bytes, problems: list[str]) -> str:
    """The text of one element's bytes (all its values, delimiters kept), problems added to *problems*."""
    if data.isascii() and _iso2022.ESC not in data:
        return data.decode("ascii")
    if _pydicom_is_right(data, charset, delimiters):
        text = _pydicom_decode(data, charset, delimiters)
        if text is not None:
            return text
    return _iso2022.decode(data, charset, delimiters, problems)


def clean(text: str, problems: list[str]) -> str:
    """NFC, without control characters."""
    if _CONTROLS.search(text):
        problems.append("control characters replaced with U+FFFD")
        text = _CONTROLS.sub(REPLACEMENT, text)
    return unicodedata.normalize("NFC", text)


def decode_text(
    data: bytes, specific_character_set: Sequence[str] = (), vr: str = "LO"
) -> tuple[str, tuple[str, ...]]:
    """One element's bytes as NFC text under SpecificCharacterSet values, and the problems met.

    ``vr`` sets where the sets of value 1 become active again (PS3.5 6.1.2.5.3): line ends, the
    value delimiter ``\\`` (not in ST, LT, UT) and, in PN, ``^`` and ``=``. Values stay joined by
    ``\\``. The problems (an unknown term, bytes invalid in the declared set) hold no value text.
    """
    problems: list[str] = []
    charset = character_set(list(specific_character_set), problems)
    text = clean(decode(data, charset, delimiters(vr), problems), problems)
    return text, tuple(dict.fromkeys(problems))
