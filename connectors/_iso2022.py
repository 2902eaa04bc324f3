"""The own ISO 2022 decoder: the cases pydicom reads wrong (see ``connectors.dicom_charsets``).

It follows PS3.5 6.1.2.5 to the letter:

- Single-byte sets (ISO_IR 6, 100, 101, 109, 110, 126, 127, 138, 144, 148, 166, 203, 13):
  G0 holds ASCII (JIS X 0201 Romaji for ISO_IR 13), G1 the set's upper half.
- ISO 2022 code extensions: escape sequences designate another set to G0 (JIS X 0208
  ``ESC $ B``, JIS X 0212 ``ESC $ ( D``, ASCII ``ESC ( B``, Romaji ``ESC ( J``) or to G1
  (``ESC - A`` … for the ISO 8859 parts, KS X 1001 ``ESC $ ) C``, GB 2312 ``ESC $ ) A``,
  JIS X 0201 Katakana ``ESC ) I``). The sets of value 1 are active again after CR, LF, FF, TAB,
  a value delimiter ``\\`` and, in PN, the delimiters ``^`` and ``=`` (PS3.5 6.1.2.5.3); those
  bytes are only delimiters while G0 holds a single-byte set, since in JIS X 0208 ``0x5E``
  and ``0x3D`` are halves of kana (``ま``, ``そ``).
- Stand-alone multi-byte sets (ISO_IR 192, GB18030, GBK) are decoded whole.
- Without a SpecificCharacterSet, bytes beyond ASCII are invalid (PS3.5 6.1.2.1); they are read
  as UTF-8 when they form valid UTF-8, else as Latin-1, with a warning.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

REPLACEMENT = "\ufffd"
ESC = 0x1B


# -- Character sets -------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class _Graphic:
    """A graphic character set as ISO 2022 designates it to G0 or G1 (PS3.3 Tables C.12-3/-4)."""

    name: str
    escape: bytes
    g1: bool
    width: int
    """Bytes per character."""
    decode: Callable[[bytes], str]
    """Decodes characters of this set as they appear on the wire (G1 sets in GR, high bit set);
    raises ValueError (UnicodeDecodeError included) on bytes that are not such characters."""


def _codec(name: str) -> Callable[[bytes], str]:
    def decode(data: bytes) -> str:
        return data.decode(name)

    return decode


def _after_escape(escape: bytes, codec: str) -> Callable[[bytes], str]:
    """A decoder for a 94x94 set in G0, through Python's ISO 2022 codec for it."""

    def decode(data: bytes) -> str:
        if len(data) % 2 or not all(0x21 <= b <= 0x7E for b in data):
            raise ValueError("not a sequence of two-byte characters")
        return (escape + data + b"\x1b(B").decode(codec)

    return decode


def _jis_katakana(data: bytes) -> str:
    """JIS X 0201 Katakana (ISO-IR 13) in GR: 0xA1-0xDF are U+FF61-U+FF9F."""
    if not all(0xA1 <= b <= 0xDF for b in data):
        raise ValueError("not JIS X 0201 Katakana")
    return "".join(chr(b + 0xFEC0) for b in data)


def _never(_data: bytes) -> str:
    raise ValueError("no character set designated")


_ASCII = _Graphic("ISO-IR 6", b"\x1b(B", False, 1, _codec("ascii"))
_JIS_ROMAN = _Graphic("JIS X 0201 Romaji", b"\x1b(J", False, 1, _codec("ascii"))
_JIS_KATAKANA = _Graphic("JIS X 0201 Katakana", b"\x1b)I", True, 1, _jis_katakana)
_JIS_X_0208 = _Graphic("JIS X 0208", b"\x1b$B", False, 2, _after_escape(b"\x1b$B", "iso2022_jp"))
_JIS_X_0212 = _Graphic("JIS X 0212", b"\x1b$(D", False, 2, _after_escape(b"\x1b$(D", "iso2022_jp_2"))
_KS_X_1001 = _Graphic("KS X 1001", b"\x1b$)C", True, 2, _codec("euc_kr"))
_GB_2312 = _Graphic("GB 2312", b"\x1b$)A", True, 2, _codec("gb2312"))
_UNKNOWN_G0 = _Graphic("an unknown set", b"", False, 1, _never)
_UNKNOWN_G1 = _Graphic("an unknown set", b"", True, 1, _never)


def _upper_half(name: str, final: bytes, codec: str) -> _Graphic:
    return _Graphic(name, b"\x1b-" + final, True, 1, _codec(codec))


# ISO-IR number -> the right half of the single-byte set (PS3.3 Tables C.12-2 and C.12-3).
_UPPER_HALVES = {
    "100": _upper_half("ISO 8859-1", b"A", "latin_1"),
    "101": _upper_half("ISO 8859-2", b"B", "iso8859_2"),
    "109": _upper_half("ISO 8859-3", b"C", "iso8859_3"),
    "110": _upper_half("ISO 8859-4", b"D", "iso8859_4"),
    "144": _upper_half("ISO 8859-5", b"L", "iso8859_5"),
    "127": _upper_half("ISO 8859-6", b"G", "iso8859_6"),
    "126": _upper_half("ISO 8859-7", b"F", "iso8859_7"),
    "138": _upper_half("ISO 8859-8", b"H", "iso8859_8"),
    "148": _upper_half("ISO 8859-9", b"M", "iso8859_9"),
    "203": _upper_half("ISO 8859-15", b"b", "iso8859_15"),
    "166": _upper_half("TIS 620-2533", b"T", "tis_620"),
}


@dataclass(frozen=True)
class _Term:
    """What one defined term of SpecificCharacterSet brings."""

    g0: _Graphic | None = None
    g1: _Graphic | None = None
    standalone: str | None = None
    """Python codec of a set used without code extensions (PS3.3 Table C.12-5)."""


def _defined_terms() -> dict[str, _Term]:
    terms = {
        "ISO_IR 6": _Term(_ASCII),
        "ISO 2022 IR 6": _Term(_ASCII),
        "ISO_IR 13": _Term(_JIS_ROMAN, _JIS_KATAKANA),
        "ISO 2022 IR 13": _Term(_JIS_ROMAN, _JIS_KATAKANA),
        "ISO 2022 IR 87": _Term(_JIS_X_0208),
        "ISO 2022 IR 159": _Term(_JIS_X_0212),
        "ISO 2022 IR 149": _Term(g1=_KS_X_1001),
        "ISO 2022 IR 58": _Term(g1=_GB_2312),
        "ISO_IR 192": _Term(standalone="utf_8"),
        "GB18030": _Term(standalone="gb18030"),
        "GBK": _Term(standalone="gbk"),
    }
    for number, upper in _UPPER_HALVES.items():
        terms[f"ISO_IR {number}"] = terms[f"ISO 2022 IR {number}"] = _Term(_ASCII, upper)
    return terms


_TERMS = _defined_terms()
_KNOWN_GRAPHICS = (_ASCII, _JIS_ROMAN, _JIS_KATAKANA, _JIS_X_0208, _JIS_X_0212, _KS_X_1001, _GB_2312)
_BY_ESCAPE = {graphic.escape: graphic for graphic in (*_KNOWN_GRAPHICS, *_UPPER_HALVES.values())}


def _spelling(term: str) -> str:
    return " ".join(term.upper().replace("_", " ").replace("-", " ").split())


# Common misspellings ("ISO-IR 100", "ISO_2022_IR_87", "utf-8") -> the defined term.
_BY_SPELLING = {_spelling(term): term for term in _TERMS} | {"UTF 8": "ISO_IR 192", "UTF8": "ISO_IR 192"}


@dataclass(frozen=True)
class CharacterSet:
    """The decoding state a SpecificCharacterSet value sets up."""

    label: str
    g0: _Graphic = _ASCII
    g1: _Graphic | None = None
    declared: frozenset[_Graphic] = frozenset({_ASCII})
    standalone: str | None = None
    guess: bool = False
    """No set beyond ASCII declared: bytes beyond ASCII are guessed (UTF-8, else Latin-1)."""
    fallback_g1: _Graphic | None = None
    """The first G1 set a code extension declares: used, with a warning, for bytes beyond ASCII
    met while no G1 set is designated (some writers leave out ``ESC $ ) A`` for GB 2312)."""
    terms: tuple[str, ...] = ("ISO_IR 6",)
    """The defined terms read, misspellings corrected, those that cannot apply left out."""


DEFAULT_REPERTOIRE = CharacterSet("default repertoire")


def character_set(values: list[str], problems: list[str]) -> CharacterSet:
    """The decoding state for SpecificCharacterSet *values* (value 1 may be empty)."""
    known: list[str] = []
    for position, value in enumerate(values):
        if not value:
            known.append("ISO_IR 6" if position == 0 else "")
            continue
        term = _BY_SPELLING.get(_spelling(value))
        if term is None:
            problems.append(f"SpecificCharacterSet: unknown term {value[:32]!r} ignored")
        elif term != value:
            problems.append(f"SpecificCharacterSet: {value[:32]!r} read as {term!r}")
        known.append(term or ("ISO_IR 6" if position == 0 else ""))
    known = [term for term in known if term] or ["ISO_IR 6"]
    label = "\\".join(values)[:64] or "default repertoire"
    first = _TERMS[known[0]]
    if first.standalone:
        if len(known) > 1:
            problems.append(
                f"SpecificCharacterSet: {known[0]} allows no code extensions, the rest is ignored"
            )
        return CharacterSet(label, standalone=first.standalone, terms=(known[0],))
    declared = {_ASCII}
    for term in known[1:]:
        if _TERMS[term].standalone:
            problems.append(f"SpecificCharacterSet: {term} cannot be a code extension, ignored")
    terms = tuple(term for position, term in enumerate(known) if not position or not _TERMS[term].standalone)
    for term in known:
        declared.update(g for g in (_TERMS[term].g0, _TERMS[term].g1) if g is not None)
    g0 = first.g0 if first.g0 is not None and first.g0.width == 1 else _ASCII
    fallback = next((g1 for term in known[1:] if (g1 := _TERMS[term].g1) is not None), None)
    return CharacterSet(
        label,
        g0,
        first.g1,
        frozenset(declared),
        guess=declared == {_ASCII},
        fallback_g1=fallback,
        terms=terms,
    )


# -- Decoding -------------------------------------------------------------------------------


def invalid(charset: CharacterSet) -> str:
    return f"bytes not valid in the declared character set ({charset.label}) replaced with U+FFFD"


def _decode_run(graphic: _Graphic, data: bytes, charset: CharacterSet, problems: list[str]) -> str:
    """Bytes of one set; characters that do not decode become U+FFFD, one per character."""
    try:
        return graphic.decode(data)
    except ValueError:
        problems.append(invalid(charset))
    parts: list[str] = []
    for start in range(0, len(data), graphic.width):
        try:
            parts.append(graphic.decode(data[start : start + graphic.width]))
        except ValueError:
            parts.append(REPLACEMENT)
    return "".join(parts)


def decode_iso2022(data: bytes, charset: CharacterSet, delimiters: bytes, problems: list[str]) -> str:
    """Decode with ISO 2022 code extensions: escape sequences switch G0 and G1 (PS3.5 6.1.2.5)."""
    out: list[str] = []
    g0, g1 = charset.g0, charset.g1
    run = bytearray()
    run_set: _Graphic | None = None

    def flush() -> None:
        if run_set is not None and run:
            out.append(_decode_run(run_set, bytes(run), charset, problems))
        run.clear()

    i = 0
    while i < len(data):
        byte = data[i]
        if byte == ESC:
            flush()
            end = i + 1
            while end < len(data) and 0x20 <= data[end] <= 0x2F:
                end += 1
            escape, i = data[i : end + 1], end + 1
            graphic = _BY_ESCAPE.get(escape)
            if graphic is None:
                problems.append("unknown escape sequence replaced with U+FFFD")
                out.append(REPLACEMENT)
                # What the sequence designated cannot be read until the next escape or delimiter.
                # ISO 2022 intermediates: "(" and "$(" (or a bare "$") designate G0, ")" "-" "$)" "$-" G1.
                g1_intermediate = escape[1:2] in (b")", b"-") or escape[1:3] in (b"$)", b"$-")
                graphic = _UNKNOWN_G1 if g1_intermediate else _UNKNOWN_G0
            elif graphic not in charset.declared:
                problems.append(
                    f"escape sequence to {graphic.name}, which SpecificCharacterSet does not declare"
                )
            if graphic.g1:
                g1 = graphic
            else:
                g0 = graphic
            continue
        if byte < 0x80:
            control = byte < 0x21 or byte == 0x7F  # SPACE and controls are never half a character
            if byte in delimiters and (control or g0.width == 1):
                flush()
                out.append(chr(byte))
                g0, g1 = charset.g0, charset.g1
                i += 1
                continue
            target = _ASCII if control else g0
        elif g1 is not None:
            target = g1
        elif charset.fallback_g1 is not None:
            target = charset.fallback_g1
            problems.append(f"bytes beyond ASCII before any escape sequence, read as {target.name}")
        else:
            target = _UNKNOWN_G1
        if target is not run_set:
            flush()
            run_set = target
        run.append(byte)
        i += 1
    flush()
    return "".join(out)


def decode(data: bytes, charset: CharacterSet, delimiters: bytes, problems: list[str]) -> str:
    """The text of one element's bytes (all its values, delimiters kept)."""
    if charset.standalone:
        try:
            return data.decode(charset.standalone)
        except UnicodeDecodeError:
            problems.append(invalid(charset))
            return data.decode(charset.standalone, errors="replace")
    if data.isascii() and ESC not in data:
        return data.decode("ascii")
    if charset.guess and ESC not in data:
        try:
            text = data.decode("utf_8")
        except UnicodeDecodeError:
            problems.append(
                "bytes beyond ASCII and no character set declared for them, read as Latin-1 (ISO_IR 100)"
            )
            return data.decode("latin_1")
        problems.append(
            "bytes beyond ASCII and no character set declared for them, read as UTF-8 (ISO_IR 192)"
        )
        return text
    return decode_iso2022(data, charset, delimiters, problems)


def escapes_declared(data: bytes, charset: CharacterSet) -> bool:
    """Whether every escape sequence in *data* is known and designates a set *charset* declares."""
    for fragment in data.split(b"\x1b")[1:]:
        graphic = _BY_ESCAPE.get(b"\x1b" + fragment[: 3 if fragment.startswith((b"$(", b"$)")) else 2])
        if graphic is None or graphic not in charset.declared:
            return False
    return True


def read_as_value_1(data: bytes, charset: CharacterSet, delimiters: bytes) -> bool:
    """Whether *data* has bytes beyond ASCII where a decoder splitting the value at its escape
    sequences (pydicom) reads them with the set of value 1 although ISO 2022 says otherwise.

    Those are: bytes before the first escape sequence and, in a fragment designating a G1 set
    or a one-byte G0 set, after the first delimiter, when value 1 has no G1 set; and bytes in a
    fragment designating a one-byte G0 set (ASCII, Romaji), which leaves G1 as it was.
    """
    fragments = data.split(b"\x1b")
    if charset.g1 is None and not fragments[0].isascii():
        return True
    for fragment in fragments[1:]:
        length = 3 if fragment.startswith((b"$(", b"$)")) else 2
        graphic = _BY_ESCAPE.get(b"\x1b" + fragment[:length])
        if graphic is None or (graphic.width == 2 and not graphic.g1):
            continue  # unknown, or JIS X 0208/0212, whose Python codecs read the whole fragment
        rest = fragment[length:]
        if not graphic.g1 and not rest.isascii():
            return True
        start = next((index for index, byte in enumerate(rest) if byte in delimiters), len(rest))
        if charset.g1 is None and not rest[start:].isascii():
            return True
    return False
