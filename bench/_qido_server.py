"""A simulated DICOMweb PACS in its own process: every QIDO request answered after a fixed latency.

The answer (the demo patient's studies at AZ Sint-Jan, as DICOM JSON) is encoded once at start,
so the simulated hospitals cost almost nothing and the benchmark measures pacsfed.
"""

from __future__ import annotations

import argparse
import asyncio
import json

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from federation.demo import demo_studies


def main() -> None:
    """Serve on 127.0.0.1:PORT, answering each request after LATENCY seconds."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--latency", type=float, default=0.1)
    args = parser.parse_args()
    body = json.dumps(
        [ds.to_json_dict() for ds in demo_studies("demo-az-sint-jan") if ds.PatientID == "DEMO-001"]
    ).encode()

    async def studies(request: Request) -> Response:
        if request.query_params.get("offset", "0") != "0":
            return Response(b"[]", media_type="application/dicom+json")
        await asyncio.sleep(args.latency)
        return Response(body, media_type="application/dicom+json")

    app = Starlette(routes=[Route("/dicom-web/studies", studies)])
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False, backlog=4096)


if __name__ == "__main__":
    main()
