"""IANA "ACE Profiles" registry (RFC 9200 §8.8, RFC 9202, RFC 9203).

``COAP_EDHOC_OSCORE`` is provisional (draft-ietf-ace-edhoc-oscore-profile-11); its
value lives in :mod:`keybound.core.numbers.edhoc_profile`.
"""

from enum import IntEnum

from .edhoc_profile import ACE_PROFILE_COAP_EDHOC_OSCORE


class AceProfile(IntEnum):
    COAP_DTLS = 1
    COAP_OSCORE = 2
    COAP_EDHOC_OSCORE = ACE_PROFILE_COAP_EDHOC_OSCORE

    @property
    def text(self) -> str:
        """The profile's textual name, for JSON interactions only (RFC 9200 §5.8.4.3)."""
        return self.name.lower()
