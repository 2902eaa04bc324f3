"""GraphiQL from a clean install works offline: the page and every file it loads come from pacsfed itself.

Checked over HTTP (no browser here): the page names no other host, each script and stylesheet it
names is served from the installed package, the stylesheet pulls nothing from elsewhere, and the
page gives GraphiQL a subscription URL and a headers pane that says how to add the bearer token.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx


def _assets(html: str) -> list[str]:
    return re.findall(r'<(?:script|link)[^>]+(?:src|href)="([^"]+)"', html)


def test_graphiql_and_its_files_are_served_by_pacsfed_with_no_other_host(
    pacsfed_server: Callable[..., Any],
    serve_config: Callable[..., dict[str, Any]],
    orthanc_c: Any,
) -> None:
    server = pacsfed_server(
        serve_config(
            [{"id": "hosp-c", "kind": "dicomweb", "url": orthanc_c.dicomweb_url}],
            server={"mode": "development"},
        )
    )
    page = httpx.get(server.graphql_url, headers={"accept": "text/html"}, timeout=10)
    assert page.status_code == 200 and "GraphiQL" in page.text
    assert not re.search(r"https?://", page.text), re.findall(r"https?://[^\s\"'<>]+", page.text)
    assert "//" + "unpkg" not in page.text and "cdn" not in page.text.lower()

    assets = _assets(page.text)
    names = {urlsplit(urljoin(page.url.path, a)).path.rsplit("/", 1)[-1] for a in assets}
    assert names == {
        "graphiql.min.css",
        "react.production.min.js",
        "react-dom.production.min.js",
        "graphiql.min.js",
    }
    for asset in assets:
        url = urljoin(str(page.url), asset)
        assert urlsplit(url).netloc == urlsplit(server.url).netloc
        response = httpx.get(url, timeout=30)
        assert response.status_code == 200, url
        kind = "text/css" if url.endswith(".css") else "javascript"
        assert kind in response.headers["content-type"], (url, response.headers["content-type"])
        if url.endswith(".css"):  # fonts are inlined (data: URLs); nothing is fetched from elsewhere
            assert not re.search(r"@import|url\(\s*['\"]?(?:https?:)?//", response.text)
        if url.endswith("graphiql.min.js"):  # GraphiQL's bundle carries its graphql-ws client
            assert "graphql-transport-ws" in response.text and "createGraphiQLFetcher" in response.text

    assert "subscriptionUrl" in page.text  # subscriptions go over the WebSocket of this server
    assert "Bearer <paste token>" in page.text  # the headers pane says how to authenticate


def test_no_graphiql_files_in_production(
    pacsfed_server: Callable[..., Any],
    serve_config: Callable[..., dict[str, Any]],
    orthanc_c: Any,
) -> None:
    server = pacsfed_server(
        serve_config([{"id": "hosp-c", "kind": "dicomweb", "url": orthanc_c.dicomweb_url}])
    )
    assert httpx.get(f"{server.graphql_url}/assets/graphiql.min.js", timeout=10).status_code == 404
