"""IANA "CWT Confirmation Methods" registry (RFC 8747 §7.2, RFC 9203 §9.4, RFC 9679).

And the JWT confirmation method names of IANA "JWT Confirmation Methods" (RFC 7800, RFC 9449).
"""

from enum import IntEnum


class CnfMethod(IntEnum):
    COSE_KEY = 1
    ENCRYPTED_COSE_KEY = 2
    KID = 3
    OSC = 4
    CKT = 5


class JwtCnfMethod:
    """JWT ``cnf`` member names (RFC 7800 §3.1, RFC 9449 §6.1, RFC 8705 §3.1)."""

    JWK = "jwk"
    JWE = "jwe"
    KID = "kid"
    JKU = "jku"
    JKT = "jkt"
    X5T_S256 = "x5t#S256"
