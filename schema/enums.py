"""GraphQL enums for the sets pacsfed itself defines (values are the engine's strings in UPPER_CASE).

Values that come from peers or plugins stay strings: ``patientSex``, ``Source.kind``, the audit
``channel``.
"""

from __future__ import annotations

import enum

import graphene

from federation.access.principals import PrincipalKind
from federation.audit.records import AuditAction as AuditActionModel
from federation.audit.records import AuditOutcome as AuditOutcomeModel

__all__ = ["ActorKind", "AuditAction", "AuditOutcome", "CandidateReason", "CandidateReasonModel"]


class CandidateReasonModel(enum.StrEnum):
    """Every reason :func:`federation.identity.names.score_record` gives, in its own spelling (a test keeps them equal).

    ``*_MISSING``: the record lacks the field (or, for birth date and family name, either side does);
    ``*_NOT_COMPARED``: the search did not give it.
    """

    BIRTH_DATE_EQUAL = "birth_date_equal"
    BIRTH_DATE_MISMATCH = "birth_date_mismatch"
    BIRTH_DATE_TRANSPOSED = "birth_date_transposed"
    BIRTH_DATE_ONE_DIGIT = "birth_date_one_digit"
    BIRTH_DATE_MISSING = "birth_date_missing"
    SEX_EQUAL = "sex_equal"
    SEX_MISMATCH = "sex_mismatch"
    SEX_MISSING = "sex_missing"
    SEX_NOT_COMPARED = "sex_not_compared"
    FAMILY_NAME_EQUAL = "family_name_equal"
    FAMILY_NAME_VARIANT = "family_name_variant"
    FAMILY_NAME_PREFIX = "family_name_prefix"
    FAMILY_NAME_SIMILAR = "family_name_similar"
    FAMILY_NAME_MISMATCH = "family_name_mismatch"
    FAMILY_NAME_MISSING = "family_name_missing"
    GIVEN_NAME_EQUAL = "given_name_equal"
    GIVEN_NAME_VARIANT = "given_name_variant"
    GIVEN_NAME_PREFIX = "given_name_prefix"
    GIVEN_NAME_SIMILAR = "given_name_similar"
    GIVEN_NAME_MISMATCH = "given_name_mismatch"
    GIVEN_NAME_MISSING = "given_name_missing"
    GIVEN_NAME_NOT_COMPARED = "given_name_not_compared"
    NAMES_SWAPPED = "names_swapped"
    NAME_TOKENS_EQUAL = "name_tokens_equal"


CandidateReason = graphene.Enum.from_enum(
    CandidateReasonModel,
    name="CandidateReason",
    description="Why a candidate scored as it did: birth date, sex, family and given name, whole name."
    " *_MISSING: the candidate's record lacks it (for birth date and family name: either side does);"
    " *_NOT_COMPARED: the search did not give it.",
)
AuditAction = graphene.Enum.from_enum(AuditActionModel, description="What an audited event did.")
AuditOutcome = graphene.Enum.from_enum(
    AuditOutcomeModel,
    description="SUCCESS, DENIED (authentication or authorization refused it) or FAILURE (it failed).",
)
ActorKind = graphene.Enum.from_enum(
    PrincipalKind,
    name="ActorKind",
    description="How the actor was authenticated: USER (token), SERVICE (API key), SHARE (share code),"
    " LOCAL (the command line), DEVELOPMENT (no authentication), SYSTEM (pacsfed itself).",
)
