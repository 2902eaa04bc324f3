"""``pacsfed cache stats|purge``: the cache's indices for the operator, and purges audited as the API's are."""

from __future__ import annotations

import argparse
import dataclasses
import getpass
import json
from collections.abc import Callable

from federation.access.principals import AccessContext, local_principal
from federation.cache.elasticsearch import ElasticsearchExamCache
from federation.errors import ConfigError
from federation.models import PatientQuery
from federation.settings import Settings
from pacsfed.app import services_from_settings

__all__ = ["add_cache_parser", "cache_command"]


def add_cache_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``cache`` command and its ``stats`` and ``purge`` subcommands."""
    cache = commands.add_parser("cache", help="the Elasticsearch cache's indices: stats, purge")
    cache_commands = cache.add_subparsers(dest="cache_command", required=True)
    stats = cache_commands.add_parser("stats", help="documents and bytes of each cache index, newest first")
    stats.add_argument("--config", required=True)
    stats.add_argument("--json", action="store_true", help="print the indices as JSON")
    purge = cache_commands.add_parser(
        "purge",
        help="forget one patient's cached answers (audited as CACHE_PURGE), or delete expired indices",
    )
    purge.add_argument("--config", required=True)
    what = purge.add_mutually_exclusive_group(required=True)
    what.add_argument("--patient-id")
    what.add_argument("--national-id", help="the national number (identity.national_issuer)")
    what.add_argument("--expired", action="store_true", help="delete the indices past cache.keep_days now")
    purge.add_argument("--issuer", help="issuer of the patient id")
    purge.add_argument("--source", help="only this source's answers")


def _cache(settings: Settings) -> ElasticsearchExamCache:
    if settings.cache.backend != "elasticsearch":
        raise ConfigError("pacsfed cache needs the Elasticsearch cache (cache.backend: elasticsearch)")
    return ElasticsearchExamCache(settings.cache)


async def cache_command(
    settings: Settings, args: argparse.Namespace, out: Callable[[str], None] = print
) -> int:
    """Run ``pacsfed cache stats`` or ``pacsfed cache purge``; the exit status."""
    if args.cache_command == "stats":
        cache = _cache(settings)
        try:
            indices = await cache.stats()
        finally:
            await cache.aclose()
        if args.json:
            out(json.dumps([dataclasses.asdict(s) for s in indices], default=str, indent=2))
            return 0
        out(f"{'index':<50} {'kind':<8} {'period':<10} {'documents':>10} {'bytes':>12}")
        for s in indices:
            period = s.period_start.isoformat() if s.period_start else "layout 1"
            out(f"{s.index:<50} {s.kind:<8} {period:<10} {s.documents:>10} {s.size_bytes:>12}")
        out(
            f"{len(indices)} indices, {sum(s.documents for s in indices)} documents, keep {settings.cache.keep_days} days"
        )
        return 0
    if args.expired:
        cache = _cache(settings)
        try:
            deleted = await cache.delete_expired()
        finally:
            await cache.aclose()
        out(f"deleted {len(deleted)} expired indices" + "".join(f"\n  {name}" for name in deleted))
        return 0
    _cache(settings)  # the same refusal for the memory cache
    query = PatientQuery(patient_id=args.patient_id, issuer=args.issuer, national_id=args.national_id)
    access = AccessContext(local_principal(getpass.getuser()), client_address="local", channel="cli")
    async with services_from_settings(settings) as services:
        purged = await services.history.purge_cache(access, query, args.source)
    out(f"purged {purged} cached answers")
    return 0
