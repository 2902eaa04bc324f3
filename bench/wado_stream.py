"""WADO-RS through pacsfed: does its memory stay flat while it streams a 200 MB study?

One Orthanc holds a generated study (``tests/peers/wadodata``: multi-frame images, 2 MiB an
instance); one ``pacsfed serve`` (this tree's .venv) forwards to it. After a warm-up (one metadata
and one instance request), pacsfed's peak RSS is reset (``/proc/PID/clear_refs``: 5) and read
idle; then the whole study is retrieved through pacsfed (``/studies/{uid}``, multipart, read and
dropped by the client) and its metadata too, the peak RSS read after each. The same retrieval
straight from Orthanc gives the time ratio (pacsfed / direct), measured in the same run.

    .venv/bin/python -m bench.wado_stream [--megabytes 200]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from peers.orthanc import OrthancPeer
from peers.wadodata import write_wado_study

from bench._load_processes import free_port

_INSTANCE_MIB = 2
_FRAMES, _ROWS = 4, 512
_WIDE_STUDY = "1.2.826.0.1.3680043.10.1138.18"  # 4 frames of 512 x 512 x 2 bytes: 2 MiB an instance


def _status(pid: int, field: str) -> int:
    """A ``/proc/PID/status`` size in bytes (VmRSS, VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise SystemExit(f"no {field} for process {pid}")


def _cpu_s(pid: int) -> float:
    """User and system CPU seconds the process has used (``/proc/PID/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _reset_peak(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")


@contextlib.contextmanager
def _pacsfed(orthanc: OrthancPeer, workdir: Path) -> Iterator[tuple[str, int]]:
    port = free_port()
    config = {
        "cache": {"backend": "memory"},
        "auth": {"mode": "none"},
        "audit": {"journal_dir": str(workdir / "audit")},
        "sources": [{"id": "hosp-w", "kind": "dicomweb", "url": orthanc.dicomweb_url}],
    }
    path = workdir / "pacsfed.json"
    path.write_text(json.dumps(config))
    binary = Path(sys.executable).parent / "pacsfed"
    argv = [str(binary), "serve", "--config", str(path), "--port", str(port), "--insecure-dev"]
    log = (workdir / "pacsfed.log").open("wb")
    process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            if process.poll() is not None:
                raise SystemExit(f"pacsfed serve exited with {process.returncode}")
            time.sleep(0.2)
        yield url, process.pid
    finally:
        process.terminate()
        process.wait(timeout=15)
        log.close()


def _retrieve(url: str, accept: str) -> tuple[int, float]:
    """Bytes read and seconds taken, the body dropped as it comes."""
    started = time.perf_counter()
    size = 0
    with httpx.stream("GET", url, headers={"Accept": accept}, timeout=300) as response:
        response.raise_for_status()
        for chunk in response.iter_raw():
            size += len(chunk)
    return size, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=int, default=200, help="size of the study (default 200)")
    parser.add_argument(
        "--series-instances",
        type=int,
        default=2000,
        help="instances of the big-metadata series (default 2000)",
    )
    args = parser.parse_args()
    instances = max(1, args.megabytes // _INSTANCE_MIB)
    mib = 1024 * 1024
    with tempfile.TemporaryDirectory(prefix="pacsfed-wado-bench-") as tmp:
        work = Path(tmp)
        study = write_wado_study(
            work / "study", instances=instances, frames=_FRAMES, rows=_ROWS, columns=_ROWS
        )
        wide = write_wado_study(
            work / "wide", study_uid=_WIDE_STUDY, instances=args.series_instances, frames=1, rows=8, columns=8
        )
        with OrthancPeer("BENCHW", work / "orthanc") as orthanc:
            orthanc.start()
            orthanc.upload(study.paths)
            orthanc.upload(wide.paths)
            for path in (*study.paths, *wide.paths):
                path.unlink()
            with _pacsfed(orthanc, work) as (url, pid):
                study_url = f"{url}/dicom-web/studies/{study.study_uid}"
                instance = f"{study_url}/series/{study.series_uid}/instances/{study.sop_uids[0]}"
                dicom = 'multipart/related; type="application/dicom"'
                _retrieve(instance, dicom)  # warm-up: code paths, the source's connection
                _retrieve(f"{study_url}/metadata", "application/dicom+json")
                time.sleep(1.0)
                _reset_peak(pid)
                idle = _status(pid, "VmRSS")
                idle_peak = _status(pid, "VmHWM")
                cpu_before = _cpu_s(pid)
                size, through_s = _retrieve(study_url, dicom)
                cpu_s = _cpu_s(pid) - cpu_before
                study_peak = _status(pid, "VmHWM")
                _reset_peak(pid)
                meta_size, _ = _retrieve(f"{study_url}/metadata", "application/dicom+json")
                meta_peak = _status(pid, "VmHWM")
                wide_url = f"{url}/dicom-web/studies/{wide.study_uid}/series/{wide.series_uid}/metadata"
                wide_runs = []
                for _ in range(3):  # the first run also pays one-off costs (allocator arenas)
                    _reset_peak(pid)
                    wide_idle = _status(pid, "VmRSS")
                    wide_size, _ = _retrieve(wide_url, "application/dicom+json")
                    wide_runs.append(_status(pid, "VmHWM") - wide_idle)
            direct_size, direct_s = _retrieve(f"{orthanc.dicomweb_url}/studies/{study.study_uid}", dicom)
    print(f"WADO-RS through pacsfed: a {size / mib:.0f} MiB study ({instances} instances), streamed")
    print(f"  pacsfed RSS idle            {idle / mib:8.1f} MiB (peak since reset {idle_peak / mib:.1f})")
    print(
        f"  pacsfed RSS peak, study     {study_peak / mib:8.1f} MiB  (+{(study_peak - idle) / mib:.1f} MiB)"
    )
    print(f"  pacsfed RSS peak, metadata  {meta_peak / mib:8.1f} MiB  (+{(meta_peak - idle) / mib:.1f} MiB,")
    print(f"    {meta_size / 1024:.0f} KiB of rewritten DICOM JSON)")
    growths = ", ".join(f"+{growth / mib:.1f}" for growth in wide_runs)
    print(
        f"  pacsfed RSS growth, metadata of a {args.series_instances}-instance series"
        f" ({wide_size / mib:.1f} MiB of DICOM JSON), three runs: {growths} MiB"
    )
    print(f"  growth / study size         {(study_peak - idle) / size:8.4f}")
    print(f"  pacsfed CPU for the study   {cpu_s:8.2f} s  ({cpu_s / (size / mib) * 100:.2f} s per 100 MiB)")
    print(f"  time through pacsfed / direct from Orthanc: {through_s / direct_s:.2f}")
    print(f"    ({through_s:.2f} s / {direct_s:.2f} s; {direct_size / mib:.0f} MiB direct)")
    if os.environ.get("BENCH_STRICT") and study_peak - idle > 0.1 * size:
        raise SystemExit("pacsfed's memory grew with the study: it is not streaming")


if __name__ == "__main__":
    main()
