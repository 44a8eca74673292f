"""IANA "OAuth Error Code CBOR Mappings" (RFC 9200 §8.4) and the OAuth error
names of IANA "OAuth Extensions Error Registry" used by keybound
(RFC 6749 §5.2, RFC 6750 §3.1, RFC 9449 §12.2).
"""

from enum import IntEnum


class AceErrorCode(IntEnum):
    INVALID_REQUEST = 1
    INVALID_CLIENT = 2
    INVALID_GRANT = 3
    UNAUTHORIZED_CLIENT = 4
    UNSUPPORTED_GRANT_TYPE = 5
    INVALID_SCOPE = 6
    UNSUPPORTED_POP_KEY = 7
    INCOMPATIBLE_ACE_PROFILES = 8

    @property
    def oauth_name(self) -> str:
        """The error's OAuth (JSON) name."""
        return self.name.lower()
