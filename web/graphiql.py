"""GraphiQL's files, shipped inside the package and served by pacsfed itself (no CDN: hospital networks are often offline)."""

from __future__ import annotations

from pathlib import Path

from starlette.routing import BaseRoute, Mount
from starlette.staticfiles import StaticFiles

ASSETS_PATH = "/graphql/assets"
"""Where the files are served; the page (schema/http.py) names them relative to ``/graphql``."""

ASSETS_DIR = Path(__file__).parent / "static" / "graphiql"
"""GraphiQL, React and React DOM browser builds with their licences (see NOTICE.md there)."""


def graphiql_routes(development: bool) -> list[BaseRoute]:
    """The route serving GraphiQL's files, in development mode only (the page is served only then)."""
    if not development:
        return []
    return [Mount(ASSETS_PATH, app=StaticFiles(directory=ASSETS_DIR), name="graphiql-assets")]
