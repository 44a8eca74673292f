"""IANA "OSCORE Security Context Parameters" registry (RFC 9203 §9.4)."""

from enum import IntEnum


class OscoreParameter(IntEnum):
    ID = 0
    VERSION = 1
    MS = 2
    HKDF = 3
    ALG = 4
    SALT = 5
    CONTEXT_ID = 6
