"""Reader benchmark: the DICOM JSON reader on a large QIDO answer, against the reader it replaced.

The baseline is the reader as it was before the one attribute table (``bench/_reader_baseline.py``,
a frozen copy), timed in this run on the same objects, interleaved round by round so that the
machine's noise falls on both alike. Three answers: usual ones (every object takes the fast
path), ASCII only or with names in three scripts, and one where every tenth object is unusual
(the general path reads it). Prints µs per study (CPU time), the best and the median round of
each, and the ratio current / baseline (1.00 is as fast).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

from bench import _reader_baseline
from connectors.dicom_json import record_from_dicom_json

Reader = Callable[[Any, str], Any]

_NAMES = ("Dubois^Marc", "Müller^Anna", "Yamada^Tarou=山田^太郎=やまだ^たろう", "Smith^John^^Dr")
_ASCII_NAMES = ("Dubois^Marc", "Muller^Anna", "Yamada^Tarou", "Smith^John^^Dr")
_MODALITIES = (["MR"], ["CT", "SR"], ["US"], ["CR", "DX"])


def study(index: int, unusual: bool = False, ascii_only: bool = False) -> dict[str, Any]:
    """One QIDO study object as Orthanc and dcm4chee write it (PS3.18 F.2)."""
    names = _ASCII_NAMES if ascii_only else _NAMES
    item: dict[str, Any] = {
        "00080005": {"vr": "CS", "Value": ["ISO_IR 192"]},
        "00080020": {"vr": "DA", "Value": [f"2024{1 + index % 12:02d}{1 + index % 28:02d}"]},
        "00080030": {"vr": "TM", "Value": [f"{index % 24:02d}{index % 60:02d}05"]},
        "00080050": {"vr": "SH", "Value": [f"ACC{index:07d}"]},
        "00080054": {"vr": "AE", "Value": ["PACS-A"]},
        "00080061": {"vr": "CS", "Value": _MODALITIES[index % len(_MODALITIES)]},
        "00080090": {"vr": "PN", "Value": [{"Alphabetic": "Referrer^Rita"}]},
        "00081030": {
            "vr": "LO",
            "Value": ["IRM cerebrale" if ascii_only else "IRM cérébrale" if index % 3 else "CT CHEST"],
        },
        "00081190": {"vr": "UR", "Value": [f"http://pacs/dicom-web/studies/1.2.3.{index}"]},
        "00100010": {"vr": "PN", "Value": [{"Alphabetic": names[index % len(names)]}]},
        "00100020": {"vr": "LO", "Value": ["DEMO-001"]},
        "00100021": {"vr": "LO", "Value": ["HOSP-A"]},
        "00100030": {"vr": "DA", "Value": ["19670312"]},
        "00100040": {"vr": "CS", "Value": ["F"]},
        "0020000D": {"vr": "UI", "Value": [f"1.2.3.{index}"]},
        "00201206": {"vr": "IS", "Value": [1 + index % 5]},
        "00201208": {"vr": "IS", "Value": [10 + index % 500]},
    }
    if unusual:
        item["00201206"] = {"vr": "IS", "Value": ["3"]}  # IS as a string: the general path
    return item


def answer(studies: int, unusual_every: int = 0, ascii_only: bool = False) -> list[Any]:
    """A QIDO answer of *studies* objects, as json.loads gives it."""
    objects = [study(i, bool(unusual_every) and i % unusual_every == 0, ascii_only) for i in range(studies)]
    parsed: list[Any] = json.loads(json.dumps(objects))
    return parsed


def _round(read: Reader, items: list[Any]) -> float:
    """CPU seconds to read every object once (CPU time hardly moves when other work shares the machine)."""
    start = time.process_time()
    for item in items:
        read(item, "src")
    return time.process_time() - start


def compare(items: list[Any], rounds: int) -> tuple[list[float], list[float]]:
    """µs per study of each round, current and baseline, interleaved (the order alternates)."""
    current: list[float] = []
    baseline: list[float] = []
    for number in range(rounds):
        pair = (
            (record_from_dicom_json, current),
            (_reader_baseline.record_from_dicom_json, baseline),
        )
        for read, timings in pair if number % 2 else reversed(pair):
            timings.append(_round(read, items) / len(items) * 1e6)
    return current, baseline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--studies", type=int, default=5000, help="objects in the QIDO answer")
    parser.add_argument("--rounds", type=int, default=40, help="rounds per reader")
    args = parser.parse_args()
    workloads = (
        ("usual, ASCII only", 0, True),
        ("usual, names in three scripts", 0, False),
        ("1 in 10 unusual", 10, False),
    )
    for label, unusual_every, ascii_only in workloads:
        items = answer(args.studies, unusual_every, ascii_only)
        for item in items[:50]:  # the same records, or the comparison is void
            assert record_from_dicom_json(item, "src") == _reader_baseline.record_from_dicom_json(item, "src")
        compare(items[:500], 2)  # warm up
        current, baseline = compare(items, args.rounds)
        print(f"DICOM JSON, {args.studies} studies, {label}: µs per study ({args.rounds} rounds)")
        print("              best  median")
        print(f"  current   {min(current):6.2f}  {statistics.median(current):6.2f}")
        print(f"  baseline  {min(baseline):6.2f}  {statistics.median(baseline):6.2f}")
        ratio_best = min(current) / min(baseline)
        ratio_median = statistics.median(current) / statistics.median(baseline)
        print(f"  current / baseline: best {ratio_best:.3f}, median {ratio_median:.3f}")


if __name__ == "__main__":
    main()
