"""DICOM User Identity negotiation (PS3.7 D.3.3.7), sent only over DICOM TLS.

pynetdicom's standard PDU log handlers print a username/passcode identity in clear at DEBUG
level; the filter installed here blanks the passcode line of those records, so no log level
or handler set-up can leak it.
"""

from __future__ import annotations

import logging

from pynetdicom.pdu_primitives import UserIdentityNegotiation

from federation.settings_security import UserIdentitySettings

_TYPES = {"username": 1, "username_password": 2, "saml": 4, "jwt": 5}
_PASSWORD_LINE = "Password: ["  # noqa: S105 (a log line to blank, not a password)


class _RedactPasscode(logging.Filter):
    """Blank the passcode that pynetdicom's A-ASSOCIATE-RQ summary would log."""

    def filter(self, record: logging.LogRecord) -> bool:
        if _PASSWORD_LINE in str(record.msg):
            record.msg = "  Password: [redacted]"
            record.args = None
        return True


_FILTER = _RedactPasscode()
logging.getLogger("pynetdicom._handlers").addFilter(_FILTER)


def user_identity_request(settings: UserIdentitySettings) -> UserIdentityNegotiation:
    """The User Identity sub-item for our A-ASSOCIATE-RQ."""
    item = UserIdentityNegotiation()
    item.user_identity_type = _TYPES[settings.type]
    item.primary_field = settings.primary.get_secret_value().encode("utf-8")
    if settings.secondary is not None:
        item.secondary_field = settings.secondary.get_secret_value().encode("utf-8")
    item.positive_response_requested = settings.positive_response
    return item
