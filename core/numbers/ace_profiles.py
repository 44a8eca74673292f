"""IANA "ACE Profiles" registry (RFC 9200 §8.8, RFC 9202, RFC 9203)."""

from enum import IntEnum


class AceProfile(IntEnum):
    COAP_DTLS = 1
    COAP_OSCORE = 2

    @property
    def text(self) -> str:
        """The profile's textual name, for JSON interactions only (RFC 9200 §5.8.4.3)."""
        return self.name.lower()
