"""IANA "CBOR Web Token (CWT) Claims" registry (RFC 8392 §9.1, RFC 8747, RFC 9200 §8.13).

Also the JWT claim names (IANA "JSON Web Token Claims") used for the same claims.
"""

from enum import IntEnum


class CWTClaim(IntEnum):
    ISS = 1
    SUB = 2
    AUD = 3
    EXP = 4
    NBF = 5
    IAT = 6
    CTI = 7
    CNF = 8
    SCOPE = 9
    ACE_PROFILE = 38
    CNONCE = 39
    EXI = 40


#: JWT claim name for each CWT claim (``cti`` is ``jti`` in a JWT).
JWT_NAMES: dict[CWTClaim, str] = {
    CWTClaim.ISS: "iss",
    CWTClaim.SUB: "sub",
    CWTClaim.AUD: "aud",
    CWTClaim.EXP: "exp",
    CWTClaim.NBF: "nbf",
    CWTClaim.IAT: "iat",
    CWTClaim.CTI: "jti",
    CWTClaim.CNF: "cnf",
    CWTClaim.SCOPE: "scope",
    CWTClaim.ACE_PROFILE: "ace_profile",
    CWTClaim.CNONCE: "cnonce",
    CWTClaim.EXI: "exi",
}

#: Claim names as shown to people (``cti`` keeps its CWT name).
DISPLAY_NAMES: dict[CWTClaim, str] = {**JWT_NAMES, CWTClaim.CTI: "cti"}

#: The CBOR tag of a CWT (RFC 8392 §6).
CWT_TAG = 61
