"""One exception root for keybound, carrying the OAuth/ACE error code.

Every failure a peer can cause is a :class:`KeyboundError`. It knows its
OAuth error name (RFC 6749 §5.2, RFC 6750 §3.1, RFC 9200 §5.8.3, RFC 9449),
its ACE CBOR abbreviation where one is registered (RFC 9200 §8.4), and the
CoAP and HTTP status it maps to, so the bindings render it without a table
of their own: :func:`keybound.coap.errors.error_response` for CoAP and
:func:`keybound.tools.http.errors.render_http_error` for HTTP.
``str(err)`` is ``"{error}: {description}"``.

The tree, with each class's ``error``, ACE abbreviation (``-``: none, the
CBOR error map then carries the name as text), CoAP code and HTTP status;
the last column is the status of a resource access error code in a
``WWW-Authenticate`` challenge (:attr:`KeyboundError.challenge_status`,
RFC 6750 §3.1, RFC 9449 §7.1), which a resource server's HTTP answer uses::

    KeyboundError               invalid_request            1  4.00  400  400
      InvalidRequest            invalid_request            1  4.00  400  400
        DecodeError             invalid_request            1  4.00  400  400
        MalformedClaim          invalid_request            1  4.00  400  400
        PayloadTooLarge         invalid_request            1  4.13  413  400
      InvalidClient             invalid_client             2  4.01  401    -
      InvalidGrant              invalid_grant              3  4.00  400    -
      UnauthorizedClient        unauthorized_client        4  4.00  400    -
      UnsupportedGrantType      unsupported_grant_type     5  4.00  400    -
      InvalidScope              invalid_scope              6  4.00  400    -
      UnsupportedPopKey         unsupported_pop_key        7  4.00  400    -
      IncompatibleAceProfiles   incompatible_ace_profiles  8  4.00  400    -
      AccessDenied              access_denied              1  4.00  403    -
      InvalidToken              invalid_token              -  4.01  401  401
        BadSignature            invalid_token              -  4.01  401  401
        AlgorithmNotAllowed     invalid_token              -  4.01  401  401
        KeyNotFound             invalid_token              -  4.01  401  401
        ExpiredToken            invalid_token              -  4.01  401  401
        NotYetValid             invalid_token              -  4.01  401  401
        InvalidAudience         invalid_token              -  4.03  403  401
        InvalidIssuer           invalid_token              -  4.01  401  401
        InvalidClaim            invalid_token              -  4.01  401  401
      InsufficientScope         insufficient_scope         -  4.03  403  403
        MethodNotAllowed        insufficient_scope         -  4.05  405  403
      TemporarilyUnavailable    temporarily_unavailable    -  5.03  503    -
        CapacityExceeded        temporarily_unavailable    -  5.03  503    -
      UnsupportedConversion     invalid_request            1  4.00  400  400
      InvalidDPoPProof          invalid_dpop_proof         -  4.00  401  401
      UseDPoPNonce              use_dpop_nonce             -  4.01  401  401

Where it applies an error carries more for its answer: :class:`PayloadTooLarge`
its ``limit`` (CoAP Size1, RFC 7252 §5.9.2.9, RFC 7959 §4),
:class:`TemporarilyUnavailable` its ``retry_after`` (CoAP Max-Age, RFC 7252
§5.9.3.4; HTTP Retry-After, RFC 9110 §10.2.3), :class:`UseDPoPNonce` its
``nonce`` (the ``DPoP-Nonce`` header, RFC 9449 §8.1, §9). The challenge's
scheme belongs to the endpoint, not the error: ``Basic`` for ``invalid_client``
at the AS (RFC 6749 §5.2), ``DPoP`` at a resource server (RFC 9449 §7.1).

:class:`AccessDenied` (an unknown audience, the PoP key-distribution draft §4)
is ``access_denied`` 403 over HTTP; the ACE error registry (RFC 9200 §8.4) has
no such code, so over CoAP it is sent as ``invalid_request`` (1) with 4.00.
The 4.03 of :class:`InvalidAudience` and :class:`InsufficientScope` and the
4.05 of :class:`MethodNotAllowed` are RFC 9200 §5.10.1.1 and §5.10.2.

Subclasses elsewhere keep their parent's codes: ``ReplayedProof``
(:class:`InvalidDPoPProof`), ``ReplayCacheFull`` and ``SequenceNumberExhausted``
(:class:`CapacityExceeded`), ``AsUnreachable``, ``ReplayCacheUnavailable`` and
``IntrospectionUnavailable`` (:class:`TemporarilyUnavailable`), ``DPoPKeyMismatch``
(:class:`InvalidToken`), ``FlowError`` (:class:`KeyboundError`), ``TrlQueryError``
(:class:`InvalidRequest`; the TRL endpoint sends it as Concise Problem Details,
RFC 9770 §6.1, not as an ACE error map).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import ClassVar

from .numbers.ace_parameters import AceParameter
from .numbers.error_codes import AceErrorCode

# CoAP codes as (class, detail), e.g. 4.01 -> (4, 1).
CoapCode = tuple[int, int]

#: The resource access error codes a ``WWW-Authenticate`` challenge carries, with the
#: status of each: RFC 6750 §3.1 (``invalid_request`` 400, ``invalid_token`` 401,
#: ``insufficient_scope`` 403) and RFC 9449 §7.1, §9 (``invalid_dpop_proof`` and
#: ``use_dpop_nonce`` 401). Over HTTP a resource server answers with these, whatever
#: status the error class has for another binding (an audience mismatch is CoAP 4.03,
#: RFC 9200 §5.10.1.1, but ``invalid_token`` is 401 over HTTP).
CHALLENGE_STATUS: Mapping[str, int] = MappingProxyType(
    {
        "invalid_request": 400,
        "invalid_token": 401,
        "insufficient_scope": 403,
        "invalid_dpop_proof": 401,
        "use_dpop_nonce": 401,
    }
)


class KeyboundError(Exception):
    """Root of every keybound error."""

    #: The OAuth error name (the JSON ``error``, the challenge's ``error``).
    error: ClassVar[str] = "invalid_request"
    #: The ACE CBOR abbreviation of RFC 9200 §8.4; None when there is none.
    ace_code: ClassVar[AceErrorCode | None] = AceErrorCode.INVALID_REQUEST
    coap_code: ClassVar[CoapCode] = (4, 0)
    http_status: ClassVar[int] = 400

    def __init__(self, description: str = "", *, claim: str | None = None) -> None:
        self.description = description or self.__class__.__doc__ or self.error
        self.claim = claim
        super().__init__(f"{self.error}: {self.description}")

    @property
    def challenge_status(self) -> int | None:
        """The status when this error goes into a ``WWW-Authenticate`` challenge, or None
        when its code is no resource access error (:data:`CHALLENGE_STATUS`)."""
        return CHALLENGE_STATUS.get(self.error)

    def to_cbor_map(self) -> dict[int, object]:
        """The CBOR error body of RFC 9200 §5.8.3 (``error`` 30, ``error_description`` 31)."""
        code: object = int(self.ace_code) if self.ace_code is not None else self.error
        return {
            int(AceParameter.ERROR): code,
            int(AceParameter.ERROR_DESCRIPTION): self.description,
        }

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
    """the input exceeds a size limit

    ``limit``, when given, is the largest body accepted; a CoAP answer carries it
    in Size1 (RFC 7252 §5.9.2.9, RFC 7959 §4).
    """

    coap_code = (4, 13)
    http_status = 413

    def __init__(
        self, description: str = "", *, claim: str | None = None, limit: int | None = None
    ) -> None:
        super().__init__(description, claim=claim)
        self.limit = limit


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
    """client and resource server share no ACE profile

    RFC 9200 §5.8.3 at the AS (the client's and the RS's profiles differ) and
    at the RS (the token's ACE profile, or its cnf, is not one it supports).
    """

    error = "incompatible_ace_profiles"
    ace_code = AceErrorCode.INCOMPATIBLE_ACE_PROFILES


class AccessDenied(KeyboundError):
    """access denied (an unknown audience, per the PoP key-distribution draft)

    The ACE error registry (RFC 9200 §8.4) has no ``access_denied``: over CoAP
    the error is sent as ``invalid_request`` (1) with 4.00.
    """

    error = "access_denied"
    ace_code = AceErrorCode.INVALID_REQUEST
    coap_code = (4, 0)
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


# ---- the server cannot answer now (RFC 6749 §4.1.2.1, RFC 7252 §5.9.3.4) -------------------


class TemporarilyUnavailable(KeyboundError):
    """the server cannot handle the request now

    5.03 (RFC 7252 §5.9.3.4) and 503 with the OAuth error ``temporarily_unavailable``
    (RFC 6749 §4.1.2.1).
    ``retry_after``, when given, is the number of seconds after which to try again:
    Max-Age in a CoAP answer, Retry-After in an HTTP one (RFC 9110 §10.2.3).
    """

    error = "temporarily_unavailable"
    ace_code = None
    coap_code = (5, 3)
    http_status = 503

    def __init__(
        self, description: str = "", *, claim: str | None = None, retry_after: int | None = None
    ) -> None:
        super().__init__(description, claim=claim)
        self.retry_after = retry_after


class CapacityExceeded(TemporarilyUnavailable):
    """a bounded store is full"""


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
    "CHALLENGE_STATUS",
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
    "TemporarilyUnavailable",
    "UnauthorizedClient",
    "UnsupportedConversion",
    "UnsupportedGrantType",
    "UnsupportedPopKey",
    "UseDPoPNonce",
]
