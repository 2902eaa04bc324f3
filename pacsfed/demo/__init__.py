"""Simulated hospitals for ``pacsfed demo`` and benchmarks: two DIMSE PACS and one DICOMweb PACS.

:func:`start_demo_hospitals` starts all three on free loopback ports and says how to reach them in
pacsfed's source configuration shape; the catalogue they serve is in :mod:`pacsfed.demo.patients`,
its reports in :mod:`pacsfed.demo.reports`. They hold no images.
"""

from __future__ import annotations

import asyncio
from typing import Any

from pacsfed.demo.dimse_peer import SimulatedDimsePacs
from pacsfed.demo.patients import (
    DEMO_ISSUER,
    DEMO_PATIENTS,
    DEMO_SOURCES,
    DEMO_UID_ROOT,
    DemoPatient,
    DemoSource,
    demo_studies,
    study_uid,
)
from pacsfed.demo.qido_peer import SimulatedQidoServer, create_qido_app
from pacsfed.demo.reports import demo_reports

CALLING_AE = "PACSFED"


class DemoHospitals:
    """The running simulated hospitals, in :data:`DEMO_SOURCES` order."""

    def __init__(
        self,
        host: str,
        dimse: dict[str, SimulatedDimsePacs],
        dicomweb: dict[str, SimulatedQidoServer],
    ) -> None:
        self.host = host
        self.dimse = dimse
        self.dicomweb = dicomweb

    def sources_config(self) -> list[dict[str, Any]]:
        """One pacsfed source entry (the ``sources:`` list of the settings) per hospital."""
        config: list[dict[str, Any]] = []
        for source in DEMO_SOURCES:
            # The issuer their records carry: an ID search with it (a possible match's) asks them.
            entry: dict[str, Any] = {
                "id": source.id,
                "name": source.name,
                "kind": source.kind,
                "issuer": DEMO_ISSUER,
            }
            if source.kind == "dimse":
                peer = self.dimse[source.id]
                entry |= {
                    "host": self.host,
                    "port": peer.port,
                    "called_ae": peer.ae_title,
                    "calling_ae": CALLING_AE,
                }
            else:
                entry["url"] = self.dicomweb[source.id].base_url
            config.append(entry)
        return config

    async def stop(self) -> None:
        """Stop every hospital; the DIMSE ones are stopped in threads, as pynetdicom blocks."""
        dimse, dicomweb = list(self.dimse.values()), list(self.dicomweb.values())
        self.dimse, self.dicomweb = {}, {}
        await asyncio.gather(
            *(asyncio.to_thread(peer.stop) for peer in dimse),
            *(server.stop() for server in dicomweb),
        )

    async def __aenter__(self) -> DemoHospitals:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()


async def start_demo_hospitals(host: str = "127.0.0.1", *, latency_s: float = 0.0) -> DemoHospitals:
    """Start the three demo hospitals on free ports of ``host``; ``latency_s`` delays each answer."""
    hospitals = DemoHospitals(host, {}, {})
    try:
        for source in DEMO_SOURCES:
            studies, reports = demo_studies(source.id), demo_reports(source.id)
            if source.kind == "dimse":
                peer = SimulatedDimsePacs(
                    source.ae_title, studies, host=host, latency_s=latency_s, reports=reports
                )
                hospitals.dimse[source.id] = peer
                peer.start()
            else:
                server = SimulatedQidoServer(studies, host=host, latency_s=latency_s, reports=reports)
                hospitals.dicomweb[source.id] = server
                await server.start()
    except BaseException:
        await hospitals.stop()
        raise
    return hospitals


__all__ = [
    "CALLING_AE",
    "DEMO_PATIENTS",
    "DEMO_SOURCES",
    "DEMO_UID_ROOT",
    "DemoHospitals",
    "DemoPatient",
    "DemoSource",
    "SimulatedDimsePacs",
    "SimulatedQidoServer",
    "create_qido_app",
    "demo_reports",
    "demo_studies",
    "start_demo_hospitals",
    "study_uid",
]
