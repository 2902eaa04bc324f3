"""WADO-RS metadata (PS3.18 F.2, a JSON array of instances) rewritten as it streams: URLs point at pacsfed.

The origin's ``BulkDataURI`` values and its RetrieveURL (0008,1190) / RetrieveURI (0040,E010)
values name the origin, which a caller cannot reach with pacsfed's credentials. Each URL below the
origin's ``studies/`` is rewritten to the same path below pacsfed's DICOMweb root; a ``BulkDataURI``
elsewhere (another host, or outside ``studies/``) is left out, its attribute kept without a value.

Memory: the array is read one instance object at a time with the C JSON decoder
(``raw_decode``), each object rewritten and sent on before the next is decoded, so what is held is
one chunk of text and one object, whatever the size of the series. An object larger than :data:`MAX_OBJECT_CHARS` (no real instance's metadata comes near:
bulk data travel as URIs) ends the answer with an error rather than growing without bound.
"""

from __future__ import annotations

import codecs
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import urljoin

from federation.errors import SourceProtocolError

__all__ = ["MAX_OBJECT_CHARS", "MetadataRewriter", "rewritten"]

MAX_OBJECT_CHARS = 16 * 1024 * 1024
"""Largest one instance's metadata object, in characters of JSON text."""
_URL_TAGS = ("00081190", "0040E010")
_WHITESPACE = " \t\r\n"


class MetadataRewriter:
    """Rewrites URLs of one origin to pacsfed's DICOMweb root, one metadata object at a time."""

    def __init__(self, origin_base: str, pacsfed_base: str) -> None:
        self._origin = origin_base.rstrip("/") + "/"
        self._studies = self._origin + "studies/"
        self._pacsfed = pacsfed_base.rstrip("/") + "/studies/"
        self.dropped = 0
        """BulkDataURIs left out (not below the origin's ``studies/``)."""

    def url(self, value: str) -> str | None:
        """*value* pointing at pacsfed, or None when it does not name the origin's studies."""
        absolute = urljoin(self._origin, value)
        if absolute.startswith(self._studies):
            return self._pacsfed + absolute[len(self._studies) :]
        return None

    def rewrite(self, node: Any) -> None:
        """Rewrite, in place, every URL in one DICOM JSON object and its sequences."""
        if not isinstance(node, dict):
            return
        for tag, attribute in node.items():
            if not isinstance(attribute, dict):
                continue
            uri = attribute.get("BulkDataURI")
            if isinstance(uri, str):
                new = self.url(uri)
                if new is None:
                    del attribute["BulkDataURI"]
                    self.dropped += 1
                else:
                    attribute["BulkDataURI"] = new
            values = attribute.get("Value")
            if not isinstance(values, list):
                continue
            if tag.upper() in _URL_TAGS:
                attribute["Value"] = [(self.url(v) or v) if isinstance(v, str) else v for v in values]
            elif attribute.get("vr") == "SQ":
                for item in values:
                    self.rewrite(item)


class _ArrayReader:
    """The objects of a JSON array, from text given piece by piece (one object held at a time)."""

    def __init__(self, max_object: int) -> None:
        self._text = ""
        self._at = 0
        self._state = "start"  # start → value ⇄ separator → end
        self._need = 0
        self._max = max_object
        self._decoder = json.JSONDecoder()

    def feed(self, text: str) -> Iterator[Any]:
        """The objects completed by *text*, one at a time (the next is decoded once this one is used)."""
        self._text = self._text[self._at :] + text
        self._at = 0
        while self._state != "end":
            at = self._skip(self._at)
            if at == len(self._text):
                break
            char = self._text[at]
            if self._state == "start":
                if char != "[":
                    raise SourceProtocolError("WADO-RS metadata is not a JSON array")
                self._state, self._at = "first", at + 1
            elif self._state == "separator" or (self._state == "first" and char == "]"):
                if char not in ",]":
                    raise SourceProtocolError("WADO-RS metadata is not a JSON array of objects")
                self._state, self._at = ("value" if char == "," else "end"), at + 1
            elif char != "{":
                raise SourceProtocolError("WADO-RS metadata is not a JSON array of objects")
            elif len(self._text) - at < self._need:
                self._at = at
                break  # the last attempt needed more: wait until there is twice as much
            else:
                try:
                    value, end = self._decoder.raw_decode(self._text, at)
                except json.JSONDecodeError as exc:
                    pending = len(self._text) - at
                    if pending > self._max:
                        raise SourceProtocolError("an instance's WADO-RS metadata is too large") from exc
                    self._need, self._at = pending * 2, at
                    break
                self._need = 0
                self._state, self._at = "separator", end
                yield value

    def finish(self, text: str) -> Iterator[Any]:
        """The last objects, once *text* ends the input; SourceProtocolError unless the array ended there."""
        self._need = 0  # no more text will come: what is held is decoded now or never
        yield from self.feed(text)
        if self._state != "end" or self._skip(self._at) != len(self._text):
            raise SourceProtocolError("WADO-RS metadata ended before its JSON array did")

    def _skip(self, at: int) -> int:
        text = self._text
        while at < len(text) and text[at] in _WHITESPACE:
            at += 1
        return at


async def rewritten(
    chunks: AsyncIterator[bytes], rewriter: MetadataRewriter, *, max_object: int = MAX_OBJECT_CHARS
) -> AsyncIterator[bytes]:
    """The metadata array of *chunks*, its URLs rewritten, re-encoded object by object."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    reader = _ArrayReader(max_object)
    first = True
    yield b"["
    try:
        async for chunk in chunks:
            try:
                text = decoder.decode(chunk)
            except UnicodeDecodeError as exc:
                raise SourceProtocolError("WADO-RS metadata is not UTF-8") from exc
            for item in reader.feed(text):
                yield _encoded(rewriter, item, first)
                first = False
        for item in reader.finish(decoder.decode(b"", final=True)):
            yield _encoded(rewriter, item, first)
            first = False
    finally:
        closing = getattr(chunks, "aclose", None)
        if closing is not None:
            await closing()
    yield b"]"


def _encoded(rewriter: MetadataRewriter, item: Any, first: bool) -> bytes:
    """One object rewritten and encoded, after a comma unless it is the first."""
    rewriter.rewrite(item)
    encoded = json.dumps(item, ensure_ascii=False, separators=(",", ":")).encode()
    return encoded if first else b"," + encoded
