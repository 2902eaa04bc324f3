"""Trust: authentication, principals and scopes, break-the-glass, share codes and their stores."""

from federation.access.auth import Authenticator, hash_secret, new_api_key
from federation.access.principals import (
    AccessContext,
    EmergencyWindow,
    EmergencyWindows,
    Principal,
    PrincipalKind,
    ShareGrant,
    audit_patient_ids,
    clean_reason,
    development_principal,
    known_scopes,
    local_principal,
    patient_key,
)
from federation.access.share import (
    CreatedShare,
    MemoryShareStore,
    RedeemedShare,
    RedemptionLimiter,
    ShareCodes,
    ShareRecord,
    ShareStore,
    ShareToken,
    normalize_code,
)
from federation.access.share_elasticsearch import ElasticsearchShareStore
from federation.access.state_elasticsearch import (
    AccessStateIndex,
    ElasticsearchEmergencyWindows,
    ElasticsearchRedemptionLimiter,
    SharedEntries,
)

__all__ = [
    "AccessContext",
    "AccessStateIndex",
    "Authenticator",
    "CreatedShare",
    "ElasticsearchEmergencyWindows",
    "ElasticsearchRedemptionLimiter",
    "ElasticsearchShareStore",
    "EmergencyWindow",
    "EmergencyWindows",
    "MemoryShareStore",
    "Principal",
    "PrincipalKind",
    "RedeemedShare",
    "RedemptionLimiter",
    "ShareCodes",
    "ShareGrant",
    "ShareRecord",
    "ShareStore",
    "ShareToken",
    "SharedEntries",
    "audit_patient_ids",
    "clean_reason",
    "development_principal",
    "hash_secret",
    "known_scopes",
    "local_principal",
    "new_api_key",
    "normalize_code",
    "patient_key",
]
