"""IANA "OAuth Access Token Type CBOR Mappings" (RFC 9200 §8.7).

The JSON names come from IANA "OAuth Access Token Types" (RFC 6750, RFC 9449).
"""

from enum import IntEnum


class TokenType(IntEnum):
    BEARER = 1
    POP = 2


#: JSON ``token_type`` values.
TOKEN_TYPE_NAMES: dict[str, str] = {"bearer": "Bearer", "pop": "pop", "dpop": "DPoP"}
