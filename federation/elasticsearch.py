"""The one Elasticsearch module: the process's client, the failures it raises and how they translate.

The stores (the exam cache, identity links, share codes, the audit sink) share the one
``AsyncElasticsearch`` client that :func:`make_client` builds, and translate the client's failures
through :func:`failure`: the error the store's caller knows (``CacheError``, ``AuditError``) with a
message naming only the failure's kind — Elasticsearch's own messages may echo documents, so they
never reach an answer or a log line. Each store describes its index as an :class:`IndexSetup`
and sets it up through :func:`ensure_index`: an index template or the index itself, created if
absent (another instance creating it meanwhile is not an error), and an index made by an earlier
version given the fields added since (additive only; the mappings are strict).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from elasticsearch import ApiError, AsyncElasticsearch, BadRequestError, TransportError

from federation.errors import ConfigError, PacsfedError
from federation.settings import CacheSettings
from federation.tls import client_context

__all__ = ["ELASTICSEARCH_ERRORS", "IndexSetup", "already_exists", "ensure_index", "failure", "make_client"]

E = TypeVar("E", bound=PacsfedError)

ELASTICSEARCH_ERRORS: tuple[type[Exception], ...] = (ApiError, TransportError)
"""Everything the client raises for a refused request or an unreachable node."""


def failure(exc: BaseException, error: type[E], message: str) -> E:
    """The project's ``error`` for an Elasticsearch failure: ``message`` and the failure's kind, no detail."""
    return error(f"{message} ({type(exc).__name__})")


def already_exists(exc: BadRequestError) -> bool:
    """Whether a create was refused only because the index is there already (made by another instance)."""
    return exc.error == "resource_already_exists_exception"


_SHARD_WAIT_S = 10.0
"""How long a store waits for the shard of an index another instance has just created."""


def _one_shard() -> dict[str, Any]:
    return {"number_of_shards": 1, "number_of_replicas": 0}


@dataclass(frozen=True)
class IndexSetup:
    """How one store's index is set up: its mapping and settings, and where they are written."""

    index: str
    """The index; with a template, the index pattern the template applies to (``audit-*``)."""
    mappings: Mapping[str, Any]
    settings: Mapping[str, Any] = field(default_factory=_one_shard)
    template: str | None = None
    """Name of an index template carrying the settings and mappings; None: they go on the index."""
    priority: int = 100
    """The template's priority (higher wins where patterns overlap)."""
    meta: Mapping[str, Any] | None = None
    create: bool = True
    """Create the index now if absent: created by the first write, it costs that write most of a second."""
    upgrade: bool = True
    """Put the mapping's properties on an existing index (or, with a pattern, the indices it names)."""
    aliases: tuple[str, ...] = ()
    """Aliases every index made from this setup joins (a read alias over time-based indices)."""
    version: int | None = None
    """The template's version: the layout of the code that wrote it (templates are versioned with the code)."""


async def ensure_index(client: AsyncElasticsearch, setup: IndexSetup, error: type[E], message: str) -> None:
    """Set up one index as ``setup`` says, idempotently; ``error`` (with ``message``) when Elasticsearch refuses.

    Safe to run by several instances at once: an index another one created meanwhile is taken as it is.
    """
    try:
        if setup.template is not None:
            await client.indices.put_index_template(
                name=setup.template,
                index_patterns=[setup.index],
                priority=setup.priority,
                template={
                    "settings": dict(setup.settings),
                    "mappings": dict(setup.mappings),
                    **({"aliases": {a: {} for a in setup.aliases}} if setup.aliases else {}),
                },
                meta=dict(setup.meta) if setup.meta is not None else None,
                version=setup.version,
            )
        exists = not setup.create or await client.indices.exists(index=setup.index)
        if not exists:
            await _create(client, setup)
        elif setup.upgrade:  # made by an earlier version: give it the fields added since (strict mapping)
            await client.indices.put_mapping(
                index=setup.index,
                properties=setup.mappings["properties"],
                allow_no_indices=True,
                ignore_unavailable=True,
            )
        if setup.create:
            # Made by another instance (a worker starting beside this one) an instant ago, its shard
            # may not be up yet, and a read now would be refused (503): wait for it, briefly.
            await client.options(request_timeout=_SHARD_WAIT_S + 5).cluster.health(
                index=setup.index, wait_for_active_shards="1", timeout=f"{_SHARD_WAIT_S:.0f}s"
            )
    except BadRequestError as exc:
        raise error(f"{message} ({exc.error})") from exc
    except ELASTICSEARCH_ERRORS as exc:
        raise failure(exc, error, message) from exc


async def _create(client: AsyncElasticsearch, setup: IndexSetup) -> None:
    """Create the index (from its template, if it has one); one made meanwhile by another instance will do."""
    on_index: dict[str, Any] = (
        {}
        if setup.template is not None
        else {"settings": dict(setup.settings), "mappings": dict(setup.mappings)}
    )
    if setup.aliases:
        on_index["aliases"] = {alias: {} for alias in setup.aliases}
    try:
        await client.indices.create(index=setup.index, wait_for_active_shards="1", **on_index)
    except BadRequestError as exc:
        if not already_exists(exc):
            raise


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
