"""The guide's worked example, written out from docs/writing-a-connector.md, passes the conformance kit."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "writing-a-connector.md"
_TITLED_BLOCK = re.compile(r'^```\w+ title="([\w./-]+)"\n(.*?)^```$', re.MULTILINE | re.DOTALL)


def write_example(target: Path) -> list[str]:
    """Every code block of the guide that has a file name, written there; the names."""
    names = []
    for name, body in _TITLED_BLOCK.findall(GUIDE.read_text(encoding="utf-8")):
        (target / name).write_text(body, encoding="utf-8")
        names.append(name)
    return names


def test_the_guide_holds_a_package_a_connector_and_its_tests() -> None:
    blocks = dict(_TITLED_BLOCK.findall(GUIDE.read_text(encoding="utf-8")))
    assert sorted(blocks) == ["acme_connector.py", "pyproject.toml", "test_acme_connector.py"]
    assert 'acme = "acme_connector:AcmeConnector"' in blocks["pyproject.toml"]


def test_the_guide_example_connector_passes_the_kit(tmp_path: Path) -> None:
    write_example(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-p",
            "no:asyncio",  # the kit needs no asyncio plugin (and an author may have none)
            "-W",
            "error",
            "test_acme_connector.py",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "15 passed" in result.stdout, result.stdout[-2000:]
