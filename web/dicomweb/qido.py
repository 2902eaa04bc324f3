"""QIDO-RS under ``/dicom-web``: study, series and instance searches answered by the federation (PS3.18 10.6)."""

from __future__ import annotations

from starlette.routing import BaseRoute


def qido_routes() -> list[BaseRoute]:
    """``/studies``, ``/studies/{uid}/series``, ``/studies/{uid}/series/{uid}/instances`` (mounted at ``/dicom-web``)."""
    return []
