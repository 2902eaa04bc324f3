"""Which requests come from this server's own pages (the share page and anonymous redemption)."""

from __future__ import annotations

import pytest
from starlette.requests import Request

from web.http_access import cross_site


def _request(host: str, scheme: str = "http", **headers: str) -> Request:
    raw = [(b"host", host.encode())] + [
        (k.replace("_", "-").encode(), v.encode()) for k, v in headers.items()
    ]
    return Request({"type": "http", "scheme": scheme, "method": "POST", "path": "/s", "headers": raw})


@pytest.mark.parametrize(
    ("host", "scheme", "origin"),
    [
        ("pacsfed.test", "http", "http://pacsfed.test"),
        ("pacsfed.test:80", "http", "http://pacsfed.test"),
        ("PACSFED.test:443", "https", "https://pacsfed.TEST:443"),
        ("[::1]:8000", "http", "http://[::1]:8000"),
    ],
)
def test_the_own_origin_is_same_site(host: str, scheme: str, origin: str) -> None:
    assert not cross_site(_request(host, scheme, origin=origin), origin_required=True)
    assert not cross_site(
        _request(host, scheme, origin=origin, sec_fetch_site="same-origin"), origin_required=True
    )


@pytest.mark.parametrize(
    "origin", ["http://pacsfed.test:81", "https://pacsfed.test", "null", "http://evil.example", "http://", ""]
)
def test_another_origin_is_cross_site(origin: str) -> None:
    assert cross_site(_request("pacsfed.test", origin=origin), origin_required=False)


def test_without_origin_only_a_program_is_let_through() -> None:
    assert cross_site(_request("pacsfed.test"), origin_required=True)
    assert not cross_site(_request("pacsfed.test"), origin_required=False)
    assert cross_site(_request("pacsfed.test", sec_fetch_site="cross-site"), origin_required=False)


def test_a_trusted_app_origin_is_not_cross_site() -> None:
    ehr = _request("pacsfed.test", origin="https://ehr.example.org", sec_fetch_site="cross-site")
    assert not cross_site(ehr, origin_required=False, trusted=("https://ehr.example.org",))
    assert cross_site(ehr, origin_required=False)
