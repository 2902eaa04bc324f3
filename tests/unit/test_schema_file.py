"""The committed schema.graphql is what `pacsfed schema` prints: every API change shows in review."""

from __future__ import annotations

from pathlib import Path

import pytest

from pacsfed.cli import main

SCHEMA_FILE = Path(__file__).resolve().parents[2] / "schema.graphql"


def test_the_committed_schema_is_what_pacsfed_schema_prints(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith('"""Read-only queries over the federation."""\ntype Query {')
    assert printed == SCHEMA_FILE.read_text(encoding="utf-8"), (
        "schema.graphql is stale: run `pacsfed schema > schema.graphql` and commit it"
    )
