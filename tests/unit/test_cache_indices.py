"""The cache's index names, periods and templates (no node needed: the names are what replicas agree on)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any, cast

from elasticsearch import AsyncElasticsearch

from federation.cache.elasticsearch import ElasticsearchExamCache
from federation.settings import CacheSettings

DOCS = Path(__file__).resolve().parents[2] / "docs"


def cache(**settings: Any) -> ElasticsearchExamCache:
    return ElasticsearchExamCache(
        CacheSettings(index_prefix="pf", **settings),
        cast(AsyncElasticsearch, object()),
        clock=lambda: dt.datetime(2026, 12, 10, 23, 30, tzinfo=dt.UTC),  # a Thursday
    )


def test_every_replica_derives_the_same_index_from_the_date() -> None:
    weekly, daily = cache().indices, cache(index_period="day").indices
    at = dt.datetime(2026, 12, 10, 23, 30, tzinfo=dt.UTC)
    assert weekly.index_for("answers", at) == "pf-answers-v2-2026.12.07"  # Monday
    assert daily.index_for("exams", at) == "pf-exams-v2-2026.12.10"
    cet = dt.timezone(dt.timedelta(hours=1))
    assert daily.index_for("exams", dt.datetime(2026, 12, 11, 0, 30, tzinfo=cet)) == "pf-exams-v2-2026.12.10"
    assert weekly.exams_of("pf-answers-v2-2026.12.07") == "pf-exams-v2-2026.12.07"
    assert weekly.exams_of("pf-answers") == "pf-exams"  # layout 1


def test_only_the_caches_own_names_are_ever_taken_for_its_indices() -> None:
    indices = cache().indices
    assert indices.parse("pf-exams-v2-2026.12.07") == ("exams", dt.date(2026, 12, 7))
    assert indices.parse("pf-answers") == ("answers", None)
    for other in (
        "pf-audit-2026.12",
        "pf-shares",
        "pf-access-state",
        "pf-identity",
        "pfx-exams-v2-2026.12.07",
    ):
        assert indices.parse(other) is None


def test_an_ilm_policy_goes_into_the_templates_and_the_shipped_one_deletes() -> None:
    setup = cache(ilm_policy="pacsfed-cache").indices._setup("exams", "pf-exams-v2-*", template=True)
    assert setup.settings["index.lifecycle.name"] == "pacsfed-cache"
    assert setup.version == 2 and setup.aliases == ("pf-cache-exams",)
    assert "index.lifecycle.name" not in cache().indices._setup("exams", "x", template=True).settings
    policy = json.loads((DOCS / "elasticsearch" / "pacsfed-cache-ilm.json").read_text())
    assert policy["policy"]["phases"]["delete"]["actions"] == {"delete": {}}
