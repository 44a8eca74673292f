"""IANA "OAuth Grant Type CBOR Mappings" (RFC 9200 §8.5)."""

from enum import IntEnum


class GrantType(IntEnum):
    PASSWORD = 0
    AUTHORIZATION_CODE = 1
    CLIENT_CREDENTIALS = 2
    REFRESH_TOKEN = 3

    @property
    def oauth_name(self) -> str:
        return self.name.lower()
