"""`pacsfed serve` reaching DICOMweb sources directly and through an egress proxy (``proxy:``), with credentials."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from peers import OrthancPeer
from peers.forward_proxy import ForwardProxy

from pacsfed.demo.signer import DemoSigner

QUERY = (
    "query($id: String!) { patientHistory(patient: {id: $id}) { complete sources { source { id } status } } }"
)
BASIC = {"type": "basic", "username": "pacsfed", "password": "s3cret-pw"}


def test_a_served_pacsfed_asks_a_proxied_source_through_its_proxy(
    pacsfed_server: Callable[..., Any],
    serve_config: Callable[..., dict[str, Any]],
    signer: DemoSigner,
    tmp_path: Path,
    dicom_files: dict[str, list[Any]],
) -> None:
    secured = OrthancPeer(
        "SECURED",
        tmp_path / "orthanc",
        extra_config={"AuthenticationEnabled": True, "RegisteredUsers": {"pacsfed": "s3cret-pw"}},
    )
    secured.start()
    try:
        secured.upload(path for key in ("SHARED-CT", "A-MR") for path in dicom_files[key])
        with ForwardProxy() as proxy:
            sources = [
                {"id": "direct", "kind": "dicomweb", "url": secured.dicomweb_url, "auth": BASIC},
                {
                    "id": "proxied",
                    "kind": "dicomweb",
                    "url": secured.dicomweb_url,
                    "auth": BASIC,
                    "proxy": proxy.url,
                },
            ]
            server = pacsfed_server(serve_config(sources))
            answer = httpx.post(
                server.graphql_url,
                json={"query": QUERY, "variables": {"id": "PA-001"}},
                headers={"authorization": f"Bearer {signer.token()}"},
                timeout=30,
            ).json()
    finally:
        secured.close()
    assert "errors" not in answer, answer
    statuses = {s["source"]["id"]: s["status"] for s in answer["data"]["patientHistory"]["sources"]}
    assert statuses == {"direct": "OK", "proxied": "OK"}
    origin = secured.dicomweb_url.split("/")[2]
    assert proxy.seen and set(proxy.seen) == {("GET", origin)}
