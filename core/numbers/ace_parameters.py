"""IANA "OAuth Parameters CBOR Mappings" (RFC 9200 §8.10, RFC 9201, RFC 9203 §9.2),
"OAuth Token Introspection Response CBOR Mappings" (RFC 9200 §8.12) and
"ACE Authorization Server Request Creation Hints" (RFC 9200 §8.1).
"""

from enum import IntEnum


class AceParameter(IntEnum):
    ACCESS_TOKEN = 1
    EXPIRES_IN = 2
    REQ_CNF = 4
    AUDIENCE = 5
    CNF = 8
    SCOPE = 9
    CLIENT_ID = 24
    CLIENT_SECRET = 25
    RESPONSE_TYPE = 26
    REDIRECT_URI = 27
    STATE = 28
    CODE = 29
    ERROR = 30
    ERROR_DESCRIPTION = 31
    ERROR_URI = 32
    GRANT_TYPE = 33
    TOKEN_TYPE = 34
    USERNAME = 35
    PASSWORD = 36
    REFRESH_TOKEN = 37
    ACE_PROFILE = 38
    CNONCE = 39
    NONCE1 = 40
    RS_CNF = 41
    NONCE2 = 42
    ACE_CLIENT_RECIPIENTID = 43
    ACE_SERVER_RECIPIENTID = 44


class IntrospectionParameter(IntEnum):
    ISS = 1
    SUB = 2
    AUD = 3
    EXP = 4
    NBF = 5
    IAT = 6
    CTI = 7
    CNF = 8
    SCOPE = 9
    ACTIVE = 10
    TOKEN = 11
    CLIENT_ID = 24
    ERROR = 30
    ERROR_DESCRIPTION = 31
    ERROR_URI = 32
    TOKEN_TYPE_HINT = 33
    TOKEN_TYPE = 34
    USERNAME = 35
    ACE_PROFILE = 38
    CNONCE = 39
    EXI = 40
    RS_CNF = 41


class CreationHint(IntEnum):
    AS = 1
    KID = 2
    AUDIENCE = 5
    SCOPE = 9
    CNONCE = 39


#: Content-Format ``application/ace+cbor`` (RFC 9200 §8.16).
CONTENT_FORMAT_ACE_CBOR = 19
#: Content-Format ``application/cbor``.
CONTENT_FORMAT_CBOR = 60
#: Content-Format ``application/cwt`` (RFC 8392 §9.3).
CONTENT_FORMAT_CWT = 61
