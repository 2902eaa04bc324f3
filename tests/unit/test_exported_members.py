"""Each package's __all__ is sorted and names only what it really exports."""

from __future__ import annotations

import importlib

import pytest

PACKAGES = [
    "connectors",
    "connectors.dicom",
    "connectors.dimse_protocol",
    "connectors.testing",
    "dicom_facade",
    "federation",
    "federation.access",
    "federation.audit",
    "federation.cache",
    "federation.engine",
    "federation.identity",
    "pacsfed.demo",
    "schema",
]


@pytest.mark.parametrize("package", PACKAGES)
def test_all_is_sorted_and_complete(package: str) -> None:
    module = importlib.import_module(package)
    exported = module.__all__
    assert exported == sorted(exported)
    for name in exported:
        assert hasattr(module, name), name
    public = {
        name
        for name, value in vars(module).items()
        if not name.startswith("_") and getattr(value, "__module__", "").startswith(package)
    }
    assert public <= set(exported)


def test_builtin_connectors_register_through_entry_points() -> None:
    from connectors import DicomwebConnector, DimseConnector, load_connector_classes

    assert load_connector_classes() == {"dimse": DimseConnector, "dicomweb": DicomwebConnector}
