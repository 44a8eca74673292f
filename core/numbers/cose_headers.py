"""IANA "COSE Header Parameters" registry (RFC 9052 §3.1)."""

from enum import IntEnum


class HeaderParameter(IntEnum):
    ALG = 1
    CRIT = 2
    CONTENT_TYPE = 3
    KID = 4
    IV = 5
    PARTIAL_IV = 6
    COUNTER_SIGNATURE = 7


class CoseTag(IntEnum):
    """IANA "CBOR Tags" for COSE messages (RFC 9052 §2)."""

    SIGN1 = 18
    ENCRYPT0 = 16
    MAC0 = 17
    SIGN = 98
    ENCRYPT = 96
    MAC = 97
