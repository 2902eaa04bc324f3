"""DIMSE benchmark: pacsfed's C-FIND against a real Orthanc, next to two anchors on the same data.

Anchors: dcmtk's ``findscu`` (a new process and association per query, as a script would) and
Orthanc's own REST proxy query (a second Orthanc asked over REST to C-FIND the first:
``POST /modalities/{id}/query`` then ``GET /queries/{id}/answers``). Prints p50 latencies and
the ratios pacsfed / anchor measured in this run (goal, issue 16: ≤ 0.1 against Orthanc's REST
proxy; ``findscu`` is shown for reference).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from peers.dicomdata import files_for_peer, write_catalogue
from peers.orthanc import OrthancPeer
from peers.process import require_binary

from connectors.base import ConnectorContext
from connectors.dimse import DimseConnector
from connectors.dimse_settings import DimseSourceSettings
from federation.models import Deadline, StudyQuery

GOAL = 0.1
"""pacsfed's p50 over the Orthanc REST proxy's, at most (issue 16)."""


def _p50(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


async def _pacsfed(peer: OrthancPeer, runs: int) -> list[float]:
    settings = DimseSourceSettings(
        id="a", kind="dimse", host=peer.host, port=peer.dicom_port, called_ae=peer.aet
    )
    connector = DimseConnector(settings, ConnectorContext())
    samples = []
    try:
        for _ in range(runs):
            started = time.perf_counter()
            await connector.find_studies(StudyQuery(patient_id="PA-001"), Deadline.after(10))
            samples.append(time.perf_counter() - started)
    finally:
        await connector.aclose()
    return samples


def _findscu(peer: OrthancPeer, runs: int) -> list[float]:
    findscu = require_binary("findscu", "install the Debian package dcmtk")  # never pynetdicom's namesake
    command = [findscu, "-S", "-aec", peer.aet, "-aet", "PACSFED", "-k", "QueryRetrieveLevel=STUDY"]
    command += ["-k", "PatientID=PA-001", "-k", "StudyInstanceUID", peer.host, str(peer.dicom_port)]
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(command, capture_output=True, check=True)
        samples.append(time.perf_counter() - started)
    return samples


def _orthanc_rest(proxy: OrthancPeer, runs: int) -> list[float]:
    samples = []
    with httpx.Client(base_url=proxy.http_url, timeout=30) as client:
        for _ in range(runs):
            started = time.perf_counter()
            query = client.post(
                "/modalities/hosp-a/query",
                json={"Level": "Study", "Query": {"PatientID": "PA-001", "StudyInstanceUID": ""}},
            )
            query.raise_for_status()
            client.get(f"/queries/{query.json()['ID']}/answers", params={"expand": ""}).raise_for_status()
            samples.append(time.perf_counter() - started)
    return samples


def main() -> None:
    """Start the peers, run the three clients, print the table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="pacsfed-bench-dimse-"))
    files = write_catalogue(workdir / "dicom")
    proxy = OrthancPeer("PROXY", workdir / "proxy")
    # HOSPA answers C-FIND only from AEs it knows: the proxy's, besides pacsfed's own.
    peer = OrthancPeer("HOSPA", workdir / "a", modalities={"proxy": ["PROXY", "127.0.0.1", proxy.dicom_port]})
    with peer, proxy:
        peer.upload(files_for_peer(files, "orthanc_a"))
        httpx.put(
            f"{proxy.http_url}/modalities/hosp-a",
            json={"AET": peer.aet, "Host": peer.host, "Port": peer.dicom_port},
            timeout=10,
        ).raise_for_status()
        ours = asyncio.run(_pacsfed(peer, args.runs))
        findscu = _findscu(peer, args.runs)
        rest = _orthanc_rest(proxy, args.runs)
    print(f"C-FIND of one patient's studies against Orthanc, p50 over {args.runs} runs")
    print(f"{'client':<28} {'p50 ms':>8} {'pacsfed / client':>17}")
    for name, samples in (
        ("pacsfed DimseConnector", ours),
        ("findscu (dcmtk)", findscu),
        ("Orthanc REST proxy", rest),
    ):
        print(f"{name:<28} {_p50(samples):>8.1f} {_p50(ours) / _p50(samples):>17.2f}")
    ratio = _p50(ours) / _p50(rest)
    print(
        f"goal (issue 16): pacsfed / Orthanc REST proxy ≤ {GOAL:.2f}: {ratio:.2f}, {'met' if ratio <= GOAL else 'MISSED'}"
    )


if __name__ == "__main__":
    main()
