"""deploy/requirements.lock: every dependency pinned with hashes, what a locked install holds, and the SBOM CI makes from it."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import tomllib
from pathlib import Path

from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from deploy.conftest import LOCK
from deploy.image import REPO


def _locked() -> dict[str, tuple[str, Marker | None, list[str]]]:
    """name -> (version, marker, hashes), from the lock file's joined lines."""
    text = re.sub(r"\\\n\s*", " ", LOCK.read_text(encoding="utf-8"))
    pins: dict[str, tuple[str, Marker | None, list[str]]] = {}
    for line in text.splitlines():
        line = line.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        spec, *options = line.split(" --hash=")
        requirement = Requirement(spec.strip())
        (specifier,) = requirement.specifier
        assert specifier.operator == "==", f"{requirement.name} is not pinned"
        pins[canonicalize_name(requirement.name)] = (
            specifier.version,
            requirement.marker,
            [o.strip() for o in options],
        )
    return pins


def test_every_dependency_is_pinned_with_hashes_and_satisfies_pyproject() -> None:
    pins = _locked()
    assert all(hashes and all(h.startswith("sha256:") for h in hashes) for _, _, hashes in pins.values())
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    for dependency in project["dependencies"]:
        requirement = Requirement(dependency)
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{name} (pyproject.toml) is not in the lock file: run scripts/lock"
        assert requirement.specifier.contains(pins[name][0]), f"{name}=={pins[name][0]}: run scripts/lock"


def test_a_locked_install_holds_exactly_the_locked_versions(locked_install: Path) -> None:
    listing = subprocess.run(
        [str(locked_install / "python"), "-m", "pip", "list", "--format", "json"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    installed = {canonicalize_name(p["name"]): p["version"] for p in json.loads(listing.stdout)}
    expected = {
        name: version
        for name, (version, marker, _) in _locked().items()
        if marker is None or marker.evaluate()
    }
    installer = {"pip", "setuptools", "wheel", "pacsfed"}  # the image removes pip and setuptools
    assert {k: v for k, v in installed.items() if k not in installer} == expected


def test_ci_makes_a_cyclonedx_sbom_of_every_locked_package(tmp_path: Path) -> None:
    """The command .ci/run runs, with its output here: a valid CycloneDX document naming each pin and its hashes."""
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8").replace("\\\n", " ")
    (line,) = [line for line in ci.splitlines() if "cyclonedx-py" in line]
    argv = shlex.split(line.split("||")[0])
    output = tmp_path / "sbom.cdx.json"
    argv[argv.index("-o") + 1] = str(output)
    argv[0] = str(REPO / argv[0])
    subprocess.run(argv, cwd=REPO, check=True, capture_output=True, timeout=300)
    sbom = json.loads(output.read_text(encoding="utf-8"))
    assert sbom["bomFormat"] == "CycloneDX"
    assert sbom["metadata"]["component"]["name"] == "pacsfed"
    components = {c["name"]: c for c in sbom["components"]}
    for name, (version, _, hashes) in _locked().items():
        component = components[name]
        assert component["purl"] == f"pkg:pypi/{name}@{version}"
        listed = {h["content"] for ref in component["externalReferences"] for h in ref.get("hashes", [])}
        assert listed == {h.removeprefix("sha256:") for h in hashes}
