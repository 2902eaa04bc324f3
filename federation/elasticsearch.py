"""The one Elasticsearch module: the process's client, the failures it raises and how they translate.

The stores (the exam cache, identity links, share codes, the audit sink) share the one
``AsyncElasticsearch`` client that :func:`make_client` builds, and translate the client's failures
through :func:`failure`: the error the store's caller knows (``CacheError``, ``AuditError``) with a
message naming only the failure's kind — Elasticsearch's own messages may echo documents, so they
never reach an answer or a log line. Each store still sets up its own index (their templates,
priorities and upgrade steps differ).
"""

from __future__ import annotations

from typing import Any, TypeVar

from elasticsearch import ApiError, AsyncElasticsearch, BadRequestError, TransportError

from federation.errors import ConfigError, PacsfedError
from federation.settings import CacheSettings
from federation.tls import client_context

__all__ = ["ELASTICSEARCH_ERRORS", "already_exists", "failure", "make_client"]

E = TypeVar("E", bound=PacsfedError)

ELASTICSEARCH_ERRORS: tuple[type[Exception], ...] = (ApiError, TransportError)
"""Everything the client raises for a refused request or an unreachable node."""


def failure(exc: BaseException, error: type[E], message: str) -> E:
    """The project's ``error`` for an Elasticsearch failure: ``message`` and the failure's kind, no detail."""
    return error(f"{message} ({type(exc).__name__})")


def already_exists(exc: BadRequestError) -> bool:
    """Whether a create was refused only because the index is there already (made by another instance)."""
    return exc.error == "resource_already_exists_exception"


def make_client(settings: CacheSettings) -> AsyncElasticsearch:
    """The one AsyncElasticsearch client of the process, with fast failure when the node is down."""
    auth: dict[str, Any] = {}
    if settings.api_key is not None:
        auth["api_key"] = settings.api_key.get_secret_value()
    elif settings.username and settings.password is not None:
        auth["basic_auth"] = (settings.username, settings.password.get_secret_value())
    if settings.tls is not None:
        if not settings.url.lower().startswith("https://"):
            raise ConfigError("cache.tls needs an https:// cache.url")
        auth["ssl_context"] = client_context(settings.tls, alpn=("http/1.1",))
    return AsyncElasticsearch(
        settings.url,
        request_timeout=settings.request_timeout_s,
        max_retries=0,
        retry_on_timeout=False,
        **auth,
    )
