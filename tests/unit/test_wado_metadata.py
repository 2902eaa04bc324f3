"""WADO-RS metadata rewritten as it streams: URLs point at pacsfed, one instance object held at a time."""

from __future__ import annotations

import json
import tracemalloc
from collections.abc import AsyncIterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.dicomweb_metadata import MetadataRewriter, rewritten
from federation.errors import SourceProtocolError

ORIGIN = "http://127.0.0.1:8042/dicom-web"
PACSFED = "https://pacsfed.example/dicom-web"
STUDY = "1.2.3"


def _instance(number: int) -> dict[str, Any]:
    base = f"{ORIGIN}/studies/{STUDY}/series/1.2.3.4/instances/1.2.3.4.{number}"
    return {
        "00080018": {"vr": "UI", "Value": [f"1.2.3.4.{number}"]},
        "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Müller^Jürgen"}]},
        "00081190": {"vr": "UR", "Value": [base]},
        "7FE00010": {"vr": "OW", "BulkDataURI": f"{base}/bulk/7fe00010"},
        "00540016": {
            "vr": "SQ",
            "Value": [{"00091001": {"vr": "OB", "BulkDataURI": "http://elsewhere.example/blob/1"}}],
        },
        "00181000": {"vr": "LO", "Value": [f"{ORIGIN}/studies/{STUDY} is not a URL attribute"]},
    }


def _expected(number: int) -> dict[str, Any]:
    base = f"{PACSFED}/studies/{STUDY}/series/1.2.3.4/instances/1.2.3.4.{number}"
    item = _instance(number)
    item["00081190"]["Value"] = [base]
    item["7FE00010"]["BulkDataURI"] = f"{base}/bulk/7fe00010"
    item["00540016"]["Value"] = [{"00091001": {"vr": "OB"}}]  # not the origin's: left out
    return item


async def _pieces(data: bytes, cuts: list[int]) -> AsyncIterator[bytes]:
    start = 0
    for cut in sorted(set(cuts)):
        yield data[start:cut]
        start = cut
    yield data[start:]


async def _collect(data: bytes, cuts: list[int], **kwargs: Any) -> tuple[bytes, MetadataRewriter]:
    rewriter = MetadataRewriter(ORIGIN, PACSFED)
    out = b"".join([chunk async for chunk in rewritten(_pieces(data, cuts), rewriter, **kwargs)])
    return out, rewriter


ARRAY = json.dumps([_instance(n) for n in range(3)], indent=1, ensure_ascii=False).encode()


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(ARRAY)), max_size=12))
async def test_wherever_the_chunks_are_cut_the_rewritten_array_is_the_same(cuts: list[int]) -> None:
    out, rewriter = await _collect(ARRAY, cuts)
    assert json.loads(out) == [_expected(n) for n in range(3)]
    assert rewriter.dropped == 3


async def test_byte_by_byte_and_empty_arrays_are_read() -> None:
    out, _ = await _collect(ARRAY, list(range(len(ARRAY))))
    assert json.loads(out) == [_expected(n) for n in range(3)]
    assert json.loads((await _collect(b" [ ] ", [2]))[0]) == []


async def test_a_relative_bulk_uri_at_the_origin_is_rewritten() -> None:
    item = {"7FE00010": {"vr": "OW", "BulkDataURI": f"/dicom-web/studies/{STUDY}/bulk/1"}}
    out, _ = await _collect(json.dumps([item]).encode(), [])
    assert json.loads(out)[0]["7FE00010"]["BulkDataURI"] == f"{PACSFED}/studies/{STUDY}/bulk/1"


@pytest.mark.parametrize(
    "body",
    [b'{"a": 1}', b"[1, 2]", b'[{"a": 1} {"b": 2}]', b'[{"a": 1},', b'[{"a": 1}] x'],
)
async def test_what_is_not_an_array_of_objects_is_a_protocol_error(body: bytes) -> None:
    with pytest.raises(SourceProtocolError):
        await _collect(body, [])


async def test_an_object_past_the_bound_ends_the_answer_instead_of_growing() -> None:
    big = json.dumps([{"00081030": {"vr": "LO", "Value": ["x" * 5000]}}]).encode()
    cuts = list(range(0, len(big), 100))
    with pytest.raises(SourceProtocolError, match="too large"):
        await _collect(big, cuts, max_object=1000)
    out, _ = await _collect(big, cuts, max_object=10_000)
    assert json.loads(out) == json.loads(big)


async def test_a_whole_series_in_one_chunk_is_still_decoded_one_object_at_a_time() -> None:
    """An origin's (or a decompressor's) single large chunk must not become every object at once."""
    items = [
        _instance(n) | {f"0009{j:04X}": {"vr": "LO", "Value": ["x" * 20]} for j in range(30)}
        for n in range(500)
    ]
    data = json.dumps(items).encode()
    del items

    async def one_chunk() -> AsyncIterator[bytes]:
        yield data

    rewriter = MetadataRewriter(ORIGIN, PACSFED)
    tracemalloc.start()
    try:
        sent = 0
        async for chunk in rewritten(one_chunk(), rewriter):
            sent += len(chunk)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert sent > 0.8 * len(data)
    # The chunk's text is held (a str as long as the chunk), plus one object: not 2000 decoded objects.
    assert peak < 1.5 * len(data), (peak, len(data))
