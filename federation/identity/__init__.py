"""Patient identity: the resolver and its link store, name folding and scoring, candidate patients."""

from federation.identity.candidates import (
    build_candidates,
    candidate_queries,
    name_pattern,
    reference_demographics,
    script_name_pattern,
)
from federation.identity.elasticsearch import ElasticsearchIdentityStore
from federation.identity.names import (
    Demographics,
    MatchScore,
    NameParts,
    family_prefix_pattern,
    fold,
    folded_name,
    group_parts,
    name_parts,
    score,
    score_record,
)
from federation.identity.resolver import (
    Identifier,
    IdentityLink,
    IdentityResolver,
    IdentityStore,
    MemoryIdentityStore,
    PlannedQuery,
    SourceIdentity,
    make_link,
    parse_links_csv,
    record_matches,
)

__all__ = [
    "Demographics",
    "ElasticsearchIdentityStore",
    "Identifier",
    "IdentityLink",
    "IdentityResolver",
    "IdentityStore",
    "MatchScore",
    "MemoryIdentityStore",
    "NameParts",
    "PlannedQuery",
    "SourceIdentity",
    "build_candidates",
    "candidate_queries",
    "family_prefix_pattern",
    "fold",
    "folded_name",
    "group_parts",
    "make_link",
    "name_parts",
    "name_pattern",
    "parse_links_csv",
    "record_matches",
    "reference_demographics",
    "score",
    "score_record",
    "script_name_pattern",
]
