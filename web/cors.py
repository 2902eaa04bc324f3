"""CORS for the GraphQL API, so that a browser app on another origin (an EHR) can call it.

Only the origins in ``server.cors_origins`` are allowed, only on ``/graphql``, and never with
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
EXPOSED_HEADERS = ("x-request-id", "www-authenticate")


class ApiCors:
    """starlette's CORSMiddleware on the API paths only; other paths (the share page) get no CORS."""

    def __init__(self, app: ASGIApp, origins: Sequence[str], paths: tuple[str, ...] = ("/graphql",)) -> None:
        self.app = app
        self.paths = paths
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
        if scope["type"] == "http" and scope["path"] in self.paths:
            await self.cors(scope, receive, send)
        else:
            await self.app(scope, receive, send)
