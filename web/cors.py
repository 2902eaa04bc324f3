"""CORS for the APIs (GraphQL, FHIR, DICOMweb), so that a browser app on another origin (an EHR, a viewer) can call them.

Only the origins in ``server.cors_origins`` are allowed, only on the API paths, and never with
cookies (``Access-Control-Allow-Credentials`` is not sent): the caller's credential is its bearer
token in ``Authorization``. A preflight (``OPTIONS`` with ``Access-Control-Request-Method``) is
answered here, before authentication, since browsers send it without credentials
(https://fetch.spec.whatwg.org/#cors-preflight-fetch). Responses, a 401 included, carry
``Access-Control-Allow-Origin`` for an allowed origin, so the app can read why it was refused.
"""

from __future__ import annotations

from collections.abc import Sequence

from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

ALLOWED_METHODS = ("GET", "POST")
ALLOWED_HEADERS = ("authorization", "content-type", "accept")
EXPOSED_HEADERS = ("x-request-id", "www-authenticate", "warning")
"""``warning``: QIDO-RS names the sources that did not answer in it (PS3.18 8.3.5.1), for viewers to show."""


class ApiCors:
    """starlette's CORSMiddleware on the API paths only; other paths (the share page) get no CORS.

    A path ending in ``/`` covers everything below it (``/dicom-web/``).
    """

    def __init__(self, app: ASGIApp, origins: Sequence[str], paths: tuple[str, ...] = ("/graphql",)) -> None:
        self.app = app
        self.paths = paths
        self.prefixes = tuple(path for path in paths if path.endswith("/"))
        self.cors = CORSMiddleware(
            app,
            allow_origins=list(origins),
            allow_methods=ALLOWED_METHODS,
            allow_headers=ALLOWED_HEADERS,
            allow_credentials=False,
            expose_headers=EXPOSED_HEADERS,
            max_age=600,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """CORS headers (or the preflight answer) on the API paths; everything else passes."""
        path = scope.get("path", "")
        if scope["type"] == "http" and (path in self.paths or path.startswith(self.prefixes)):
            await self.cors(scope, receive, send)
        else:
            await self.app(scope, receive, send)
