"""The FHIR example connector (examples/pacsfed-fhir-connector) uses pacsfed's public SDK and nothing else of it.

The example is what an integration developer copies: an import of anything else (an engine
module, a private helper, the DICOMweb connector's internals) would teach them to depend on it.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "examples" / "pacsfed-fhir-connector" / "pacsfed_fhir_connector"
OURS = ("bench", "connectors", "federation", "pacsfed", "schema", "web")
PUBLIC_SDK = {
    "connectors.base",
    "connectors.dicom",
    "connectors.testing",
    "federation.errors",
    "federation.models",
    "federation.settings",
}


def _pacsfed_imports(path: Path) -> set[str]:
    modules: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        modules.update(name for name in names if name.split(".")[0] in OURS)
    return modules


def test_the_example_connector_imports_only_the_public_sdk() -> None:
    files = sorted(PACKAGE.glob("*.py"))
    assert files, PACKAGE
    used = {module: path.name for path in files for module in _pacsfed_imports(path)}
    assert {"connectors.base", "federation.errors", "federation.models", "federation.settings"} <= set(used)
    assert {module: where for module, where in used.items() if module not in PUBLIC_SDK} == {}
