"""The pacsfed console script against the real peers, and the logs it leaves."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from fakes import closed_port
from peers.dicomdata import CATALOGUE

from integration.gql import history, running_app

pytestmark = pytest.mark.integration


def write_config(tmp_path: Path, sources: list[dict[str, Any]]) -> Path:
    path = tmp_path / "pacsfed.yaml"
    config = {
        "cache": {"backend": "memory"},
        "sources": sources,
        "audit": {"journal_dir": str(tmp_path / "audit")},
    }
    path.write_text(yaml.safe_dump(config, allow_unicode=True))
    return path


def pacsfed(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pacsfed.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_query_prints_exams_and_one_line_per_source(
    tmp_path: Path, peer_sources: list[dict[str, Any]]
) -> None:
    result = pacsfed("query", "--config", str(write_config(tmp_path, peer_sources)), "--patient-id", "PA-001")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "2024-01-05" in out
    assert "Müller^Anna" in out
    assert "hosp-a,hosp-b" in out  # the shared study, held by two hospitals
    for source in ("hosp-a", "hosp-b", "hosp-c"):
        assert any(line.startswith(source) and " OK " in line for line in out.splitlines()), out
    assert "complete: 3 exams" in out


def test_check_passes_on_live_peers_and_fails_on_a_dead_one(
    tmp_path: Path, peer_sources: list[dict[str, Any]]
) -> None:
    ok = pacsfed("check", "--config", str(write_config(tmp_path, peer_sources)))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert ok.stdout.count(" OK ") == 3
    dead = {"id": "dead", "kind": "dimse", "host": "127.0.0.1", "port": closed_port(), "called_ae": "DEAD"}
    failed = pacsfed("check", "--config", str(write_config(tmp_path, [*peer_sources, dead])))
    assert failed.returncode == 1
    assert any(line.startswith("dead") and "UNREACHABLE" in line for line in failed.stdout.splitlines())


async def test_logs_carry_no_patient_data(
    peer_sources: list[dict[str, Any]], make_settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    dead = {"id": "dead", "kind": "dicomweb", "url": f"http://127.0.0.1:{closed_port()}/dicom-web"}
    async with running_app(make_settings([*peer_sources, dead])) as client:
        for patient in CATALOGUE.patients:
            await history(client, patient.patient_id)
    text = caplog.text
    assert "patient query done" in text  # the logs are there, just without patient data
    for patient in CATALOGUE.patients:
        for secret in (patient.patient_id, patient.name, patient.name.split("^")[0], patient.birth_date):
            assert secret not in text, f"patient data in logs: {secret!r}"
