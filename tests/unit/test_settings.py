"""Configuration loading, validation messages and exit codes."""

from __future__ import annotations

from pathlib import Path

import pytest

from connectors.dicomweb_settings import DicomwebSourceSettings
from connectors.dimse_settings import DimseSourceSettings
from federation.errors import ConfigError
from federation.settings import load_settings
from pacsfed.cli import main

CONTRACT_YAML = """
cache:
  backend: elasticsearch          # elasticsearch | memory
  url: http://127.0.0.1:9200
  index_prefix: pacsfed
sources:
  - id: hosp-a                    # [a-z0-9-]+, unique
    name: "Hôpital A"
    kind: dimse
    host: 127.0.0.1
    port: 4242
    called_ae: HOSPA
    calling_ae: PACSFED
    issuer: HOSP_A
  - id: hosp-b
    name: "Ziekenhuis B"
    kind: dicomweb
    url: http://127.0.0.1:8042/dicom-web
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "pacsfed.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_contract_shape_loads(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, CONTRACT_YAML))
    a, b = settings.sources
    assert isinstance(a, DimseSourceSettings) and a.name == "Hôpital A" and a.issuer == "HOSP_A"
    assert isinstance(b, DicomwebSourceSettings) and b.url.endswith("/dicom-web")
    assert settings.cache.index_prefix == "pacsfed"


def test_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PACSFED_CACHE__URL", "http://10.0.0.1:9200")
    monkeypatch.setenv("PACSFED_CACHE__BACKEND", "memory")
    settings = load_settings(write(tmp_path, CONTRACT_YAML))
    assert settings.cache.url == "http://10.0.0.1:9200"
    assert settings.cache.backend == "memory"
    assert settings.cache.index_prefix == "pacsfed"
    assert len(settings.sources) == 2


@pytest.mark.parametrize(
    ("change", "key"),
    [
        (("id: hosp-a", "id: Hosp A"), "sources.0"),
        (("port: 4242", "port: 99999"), "port"),
        (("kind: dicomweb", "kind: carrier-pigeon"), "sources.1"),
        (("id: hosp-b", "id: hosp-a"), "source id 'hosp-a' is used twice"),
        (("backend: elasticsearch", "backend: redis"), "cache.backend"),
        (("called_ae: HOSPA", "called_ae: A_TITLE_FAR_TOO_LONG"), "called_ae"),
    ],
)
def test_bad_values_name_the_key(tmp_path: Path, change: tuple[str, str], key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, CONTRACT_YAML.replace(*change)))
    assert key in str(caught.value)


def test_unknown_key_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="sources.0.dimse.hots"):
        load_settings(write(tmp_path, CONTRACT_YAML.replace("host: 127.0.0.1", "hots: 127.0.0.1")))


def test_cli_exits_2_with_a_message_and_no_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, CONTRACT_YAML.replace("port: 4242", "port: nope"))
    assert main(["check", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "sources.0.dimse.port" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("text", ["sources: [unclosed", "- just\n- a list\n"])
def test_cli_exits_2_on_broken_yaml(tmp_path: Path, text: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "--config", str(write(tmp_path, text))]) == 2
    assert "Traceback" not in capsys.readouterr().err


def test_cli_exits_2_on_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["query", "--config", str(tmp_path / "nope.yaml"), "--patient-id", "X"]) == 2
    assert "file not found" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ({"kind": "dicomweb", "url": "https://pacs/dicom-web"}, True),  # PS3.18: UTF-8 query values
        ({"kind": "dicomweb", "url": "https://pacs/dicom-web", "non_ascii_name_keys": False}, False),
        ({"kind": "dimse", "host": "pacs", "port": 104, "called_ae": "PACS"}, True),  # ISO_IR 192
        ({"kind": "dimse", "host": "pacs", "port": 104, "called_ae": "PACS", "query_charset": None}, False),
        (
            {"kind": "dimse", "host": "pacs", "port": 104, "called_ae": "PACS", "query_charset": None}
            | {"non_ascii_name_keys": True},
            True,
        ),
    ],
)
def test_which_sources_take_name_keys_beyond_ascii(source: dict[str, object], expected: bool) -> None:
    model = DicomwebSourceSettings if source["kind"] == "dicomweb" else DimseSourceSettings
    assert model.model_validate({"id": "pacs", **source}).non_ascii_name_keys is expected
