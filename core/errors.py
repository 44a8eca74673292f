"""One exception root for keybound, carrying the OAuth/ACE error code.

Every failure a peer can cause is a :class:`KeyboundError`. It knows its
OAuth error name (RFC 6749 §5.2, RFC 6750 §3.1, RFC 9200 §5.8.3, RFC 9449),
its ACE CBOR abbreviation where one is registered (RFC 9200 §8.4), and the
CoAP and HTTP status it maps to, so the bindings can render it without a
table of their own. ``str(err)`` is ``"{error}: {description}"``.
"""

from __future__ import annotations

from typing import ClassVar

from .numbers.error_codes import AceErrorCode

# CoAP codes as (class, detail), e.g. 4.01 -> (4, 1).
CoapCode = tuple[int, int]


class KeyboundError(Exception):
    """Root of every keybound error."""

    error: ClassVar[str] = "invalid_request"
    ace_code: ClassVar[AceErrorCode | None] = AceErrorCode.INVALID_REQUEST
    coap_code: ClassVar[CoapCode] = (4, 0)
    http_status: ClassVar[int] = 400

    def __init__(self, description: str = "", *, claim: str | None = None) -> None:
        self.description = description or self.__class__.__doc__ or self.error
        self.claim = claim
        super().__init__(f"{self.error}: {self.description}")

    def to_cbor_map(self) -> dict[int, object]:
        """The CBOR error body of RFC 9200 §5.8.3 (``error`` 30, ``error_description`` 31)."""
        body: dict[int, object] = {}
        if self.ace_code is not None:
            body[30] = int(self.ace_code)
        else:
            body[30] = self.error
        body[31] = self.description
        return body

    def to_json(self) -> dict[str, str]:
        """The JSON error body of RFC 6749 §5.2."""
        return {"error": self.error, "error_description": self.description}


# ---- request errors (RFC 6749 §5.2, RFC 9200 §5.8.3) ---------------------------------------


class InvalidRequest(KeyboundError):
    """the request is malformed"""


class DecodeError(InvalidRequest):
    """the input is not well-formed CBOR, JSON or COSE"""


class MalformedClaim(InvalidRequest):
    """a claim of an authentic access token has a wrong type or value

    RFC 9200 §5.10.1.1: a token whose security wrapper verifies but whose claims
    the RS cannot process, or that misses an expected parameter or has one of an
    unexpected format, gets 4.00 (Bad Request); 4.01 is for a token that is not
    valid (its wrapper fails, an untrusted issuer, outside its lifetime).
    """


class PayloadTooLarge(InvalidRequest):
    """the input exceeds a size limit"""

    coap_code = (4, 13)
    http_status = 413


class InvalidClient(KeyboundError):
    """client authentication failed"""

    error = "invalid_client"
    ace_code = AceErrorCode.INVALID_CLIENT
    coap_code = (4, 1)
    http_status = 401


class InvalidGrant(KeyboundError):
    """the grant is invalid"""

    error = "invalid_grant"
    ace_code = AceErrorCode.INVALID_GRANT


class UnauthorizedClient(KeyboundError):
    """the client may not use this grant"""

    error = "unauthorized_client"
    ace_code = AceErrorCode.UNAUTHORIZED_CLIENT


class UnsupportedGrantType(KeyboundError):
    """the grant type is not supported"""

    error = "unsupported_grant_type"
    ace_code = AceErrorCode.UNSUPPORTED_GRANT_TYPE


class InvalidScope(KeyboundError):
    """the scope is invalid or not granted"""

    error = "invalid_scope"
    ace_code = AceErrorCode.INVALID_SCOPE


class UnsupportedPopKey(KeyboundError):
    """the proof-of-possession key is of a kind the recipient cannot use"""

    error = "unsupported_pop_key"
    ace_code = AceErrorCode.UNSUPPORTED_POP_KEY


class IncompatibleAceProfiles(KeyboundError):
    """client and resource server share no ACE profile"""

    error = "incompatible_ace_profiles"
    ace_code = AceErrorCode.INCOMPATIBLE_ACE_PROFILES


class AccessDenied(KeyboundError):
    """access denied (an unknown audience, per the PoP key-distribution draft)"""

    error = "access_denied"
    ace_code = None
    coap_code = (4, 3)
    http_status = 403


# ---- token errors (RFC 6750 §3.1, RFC 9200 §5.10.1.1) -----------------------------------


class InvalidToken(KeyboundError):
    """the access token is invalid"""

    error = "invalid_token"
    ace_code = None
    coap_code = (4, 1)
    http_status = 401


class BadSignature(InvalidToken):
    """signature, MAC or authentication tag does not verify"""


class AlgorithmNotAllowed(InvalidToken):
    """the algorithm is not in the allow-list"""


class KeyNotFound(InvalidToken):
    """no key is known for this token"""


class ExpiredToken(InvalidToken):
    """the token has expired"""


class NotYetValid(InvalidToken):
    """the token is not yet valid"""


class InvalidAudience(InvalidToken):
    """the token is not meant for this audience"""

    coap_code = (4, 3)
    http_status = 403


class InvalidIssuer(InvalidToken):
    """the token was not issued by a trusted issuer"""


class InvalidClaim(InvalidToken):
    """a claim has a wrong type or value"""


class InsufficientScope(KeyboundError):
    """the token's scope does not allow this request"""

    error = "insufficient_scope"
    ace_code = None
    coap_code = (4, 3)
    http_status = 403


class MethodNotAllowed(InsufficientScope):
    """the token allows access to this resource, but not with this method

    RFC 9200 §5.10.2: a valid token that covers the resource but not the requested
    action is answered 4.05 (Method Not Allowed); a resource the token does not cover
    at all stays 4.03 (:class:`InsufficientScope`).
    """

    coap_code = (4, 5)
    http_status = 405


class UnsupportedProfile(KeyboundError):
    """the token's ACE profile is not supported here"""

    error = "incompatible_ace_profiles"
    ace_code = AceErrorCode.INCOMPATIBLE_ACE_PROFILES
    coap_code = (4, 0)


class CapacityExceeded(KeyboundError):
    """a bounded store is full"""

    error = "temporarily_unavailable"
    ace_code = None
    coap_code = (5, 3)
    http_status = 503


class UnsupportedConversion(KeyboundError):
    """one token format cannot express what the other carries"""


# ---- DPoP (RFC 9449 §12.2) --------------------------------------------------------------


class InvalidDPoPProof(KeyboundError):
    """the DPoP proof is invalid"""

    error = "invalid_dpop_proof"
    ace_code = None
    coap_code = (4, 0)
    http_status = 401


class UseDPoPNonce(KeyboundError):
    """the server requires a DPoP nonce"""

    error = "use_dpop_nonce"
    ace_code = None
    coap_code = (4, 1)
    http_status = 401

    def __init__(self, description: str = "", *, nonce: str) -> None:
        super().__init__(description)
        self.nonce = nonce


__all__ = [
    "AccessDenied",
    "AlgorithmNotAllowed",
    "BadSignature",
    "CapacityExceeded",
    "CoapCode",
    "DecodeError",
    "ExpiredToken",
    "IncompatibleAceProfiles",
    "InsufficientScope",
    "InvalidAudience",
    "InvalidClaim",
    "InvalidClient",
    "InvalidDPoPProof",
    "InvalidGrant",
    "InvalidIssuer",
    "InvalidRequest",
    "InvalidScope",
    "InvalidToken",
    "KeyNotFound",
    "KeyboundError",
    "MalformedClaim",
    "MethodNotAllowed",
    "NotYetValid",
    "PayloadTooLarge",
    "UnauthorizedClient",
    "UnsupportedConversion",
    "UnsupportedGrantType",
    "UnsupportedPopKey",
    "UnsupportedProfile",
    "UseDPoPNonce",
]
