"""The ``/authz-info`` payloads of the OSCORE profile (RFC 9203 §4.1, §4.2).

:class:`AuthzInfoRequest` is what the client posts (the access token, N1 and ID1),
:class:`AuthzInfoResponse` what the RS answers (N2 and ID2).

Decisions where the RFCs leave room, each checked once, when a payload is decoded
(:meth:`AuthzInfoRequest.decode`, :meth:`AuthzInfoResponse.decode`): what a peer
sent. A payload built here holds the builder's own nonce and identifier.

* Nonces are 8 to 32 bytes: RFC 9203 §4.1 and §4.2 recommend 64-bit random nonces,
  keybound generates 8 bytes and refuses shorter ones, since they carry the
  freshness of the derived keys.
* Recipient IDs are at most ``nonce length - 6`` bytes for the AEAD in use
  (RFC 8613 §3.3: 7 bytes for AES-CCM-16-64-128); on ``/authz-info``, before the
  algorithm is known, at most 7 bytes, the largest any supported AEAD allows.
* Unrecognised parameters are refused with 4.00 (RFC 9203 §4.2).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from . import cbor
from .errors import DecodeError, InvalidRequest
from .numbers.ace_parameters import AceParameter
from .records import frozen_record

#: Bounds on N1 and N2 (RFC 9203 §4.1, §4.2 recommend 8 bytes).
MIN_NONCE_BYTES = 8
MAX_NONCE_BYTES = 32
#: The nonce length keybound generates.
NONCE_BYTES = 8
#: Largest OSCORE Sender/Recipient ID of any supported AEAD (RFC 8613 §3.3: 13 - 6).
MAX_RECIPIENT_ID_BYTES = 7
#: Bound on the access token this codec carries in an ``/authz-info`` request, for
#: any peer. An RS bounds what it takes further (its ``/authz-info`` payloads, see
#: :data:`keybound.core.resource_server.MAX_AUTHZ_INFO_BYTES`).
MAX_ACCESS_TOKEN_BYTES = 8 * 1024
#: The CBOR bound of a payload: the token and room for N1, ID1 and the map's heads.
_MAX_PAYLOAD_BYTES = MAX_ACCESS_TOKEN_BYTES + 256


def check_nonce(value: object, name: str) -> bytes:
    if not isinstance(value, bytes):
        raise InvalidRequest(f"{name} must be a byte string", claim=name)
    if not MIN_NONCE_BYTES <= len(value) <= MAX_NONCE_BYTES:
        raise InvalidRequest(
            f"{name} must be {MIN_NONCE_BYTES} to {MAX_NONCE_BYTES} bytes, not {len(value)}",
            claim=name,
        )
    return value


def check_recipient_id(value: object, name: str, limit: int = MAX_RECIPIENT_ID_BYTES) -> bytes:
    if not isinstance(value, bytes):
        raise InvalidRequest(f"{name} must be a byte string", claim=name)
    if len(value) > limit:
        raise InvalidRequest(f"{name} must be at most {limit} bytes, not {len(value)}", claim=name)
    return value


def decode_payload(payload: bytes, what: str = "authz-info request") -> Mapping[object, object]:
    """The CBOR map of an ``/authz-info`` payload (bounded CBOR), not yet validated."""
    value = cbor.loads(payload, max_size=_MAX_PAYLOAD_BYTES, max_depth=4)
    if not isinstance(value, dict):
        raise DecodeError(f"{what} payload must be a CBOR map")
    return value


def _refuse_unknown(m: Mapping[object, object], allowed: frozenset[int], what: str) -> None:
    for key in m:
        if isinstance(key, bool) or not isinstance(key, int) or key not in allowed:
            raise InvalidRequest(f"{what}: unexpected parameter {key!r}")


_REQUEST_KEYS = frozenset(
    {AceParameter.ACCESS_TOKEN, AceParameter.NONCE1, AceParameter.ACE_CLIENT_RECIPIENTID}
)
_RESPONSE_KEYS = frozenset({AceParameter.NONCE2, AceParameter.ACE_SERVER_RECIPIENTID})
#: A map of two items, then key 42 (nonce2); key 44 (ace_server_recipientId) sorts after it.
_RESPONSE_HEAD = b"\xa2" + cbor.dumps(int(AceParameter.NONCE2))
_SERVER_RECIPIENTID_KEY = cbor.dumps(int(AceParameter.ACE_SERVER_RECIPIENTID))
#: The request's labels as plain integers (an IntEnum member is a slower class lookup).
_ACCESS_TOKEN = int(AceParameter.ACCESS_TOKEN)
_NONCE1 = int(AceParameter.NONCE1)
_ACE_CLIENT_RECIPIENTID = int(AceParameter.ACE_CLIENT_RECIPIENTID)


@dataclass(frozen=True)
class AuthzInfoRequest:
    """The client's ``/authz-info`` payload (RFC 9203 §4.1): token, N1 and ID1.

    When the request updates access rights it is OSCORE-protected and carries the
    token alone; ``nonce1`` and ``client_recipient_id`` are then ``None``. Nonce
    and identifier are checked where they are decoded (:meth:`from_cbor_map`).
    """

    access_token: bytes = field(repr=False)
    nonce1: bytes | None = None
    client_recipient_id: bytes | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.access_token, bytes) or not self.access_token:
            raise InvalidRequest("access_token must be a non-empty byte string")
        if len(self.access_token) > MAX_ACCESS_TOKEN_BYTES:
            raise InvalidRequest(f"access_token exceeds {MAX_ACCESS_TOKEN_BYTES} bytes")
        if (self.nonce1 is None) != (self.client_recipient_id is None):
            raise InvalidRequest("nonce1 and ace_client_recipientId go together")

    def to_cbor_map(self) -> dict[int, object]:
        out: dict[int, object] = {AceParameter.ACCESS_TOKEN.value: self.access_token}
        if self.nonce1 is not None:
            out[AceParameter.NONCE1.value] = self.nonce1
            out[AceParameter.ACE_CLIENT_RECIPIENTID.value] = self.client_recipient_id
        return out

    def encode(self) -> bytes:
        """The ``application/ace+cbor`` payload (deterministic CBOR)."""
        return cbor.dumps(self.to_cbor_map())

    @classmethod
    def from_cbor_map(
        cls, m: Mapping[object, object], *, protected: bool = False
    ) -> AuthzInfoRequest:
        """Validate a decoded payload: :meth:`read_token`, then :meth:`read_exchange`.

        ``protected`` says the request arrived under an existing OSCORE context, an
        update of access rights: nonce and identifier are then ignored (RFC 9203 §4.2).
        Otherwise both are required (RFC 9203 §4.1.1, §4.1.2).
        """
        request = cls.read_token(m)
        return request if protected else request.read_exchange(m)

    @classmethod
    def read_token(cls, m: Mapping[object, object]) -> AuthzInfoRequest:
        """The access token of a decoded payload; unrecognised parameters are refused."""
        _refuse_unknown(m, _REQUEST_KEYS, "authz-info request")
        if _ACCESS_TOKEN not in m:
            raise InvalidRequest("authz-info request: access_token is missing")
        token = m[_ACCESS_TOKEN]
        if not isinstance(token, bytes):
            raise InvalidRequest("access_token must be a byte string")
        return cls(access_token=token)

    def read_exchange(self, m: Mapping[object, object]) -> AuthzInfoRequest:
        """This token with N1 and ID1 of the same payload, required and checked here.

        RFC 9203 §4.1.1, §4.1.2: an unprotected POST carries both.
        """
        if _NONCE1 not in m:
            raise InvalidRequest("authz-info request: nonce1 is missing", claim="nonce1")
        if _ACE_CLIENT_RECIPIENTID not in m:
            raise InvalidRequest(
                "authz-info request: ace_client_recipientId is missing",
                claim="ace_client_recipientId",
            )
        nonce1 = check_nonce(m[_NONCE1], "nonce1")
        client_recipient_id = check_recipient_id(
            m[_ACE_CLIENT_RECIPIENTID], "ace_client_recipientId"
        )
        # The token was checked when this request was made, and nonce1 and the
        # Recipient ID (both present) just now: __post_init__ has nothing left to check.
        return frozen_record(
            AuthzInfoRequest,
            access_token=self.access_token,
            nonce1=nonce1,
            client_recipient_id=client_recipient_id,
        )

    @classmethod
    def decode(cls, payload: bytes, *, protected: bool = False) -> AuthzInfoRequest:
        """Decode and validate an ``application/ace+cbor`` payload (bounded CBOR)."""
        return cls.from_cbor_map(decode_payload(payload), protected=protected)


@dataclass(frozen=True)
class AuthzInfoResponse:
    """The RS's 2.01 (Created) ``/authz-info`` payload (RFC 9203 §4.2): N2 and ID2.

    Nonce and identifier are checked where they are decoded (:meth:`from_cbor_map`).
    """

    nonce2: bytes
    server_recipient_id: bytes

    def to_cbor_map(self) -> dict[int, object]:
        return {
            AceParameter.NONCE2.value: self.nonce2,
            AceParameter.ACE_SERVER_RECIPIENTID.value: self.server_recipient_id,
        }

    def encode(self) -> bytes:
        """The ``application/ace+cbor`` payload (deterministic CBOR): ``{42: N2, 44: ID2}``.

        Written head by head: a map of two, the keys in their deterministic order
        (RFC 8949 §4.2.1), each value a byte string as :func:`keybound.core.cbor.dumps`
        writes it; the same bytes as the map encoded whole.
        """
        nonce2, server_id = self.nonce2, self.server_recipient_id
        if type(nonce2) is not bytes or type(server_id) is not bytes:
            return cbor.dumps(self.to_cbor_map())
        return (
            _RESPONSE_HEAD
            + cbor.head(2, len(nonce2))
            + nonce2
            + _SERVER_RECIPIENTID_KEY
            + cbor.head(2, len(server_id))
            + server_id
        )

    @classmethod
    def from_cbor_map(cls, m: Mapping[object, object]) -> AuthzInfoResponse:
        _refuse_unknown(m, _RESPONSE_KEYS, "authz-info response")
        if AceParameter.NONCE2 not in m:
            raise InvalidRequest("authz-info response: nonce2 is missing", claim="nonce2")
        if AceParameter.ACE_SERVER_RECIPIENTID not in m:
            raise InvalidRequest(
                "authz-info response: ace_server_recipientId is missing",
                claim="ace_server_recipientId",
            )
        return cls(
            nonce2=check_nonce(m[AceParameter.NONCE2], "nonce2"),
            server_recipient_id=check_recipient_id(
                m[AceParameter.ACE_SERVER_RECIPIENTID], "ace_server_recipientId"
            ),
        )

    @classmethod
    def decode(cls, payload: bytes) -> AuthzInfoResponse:
        """Decode and validate an ``application/ace+cbor`` payload (bounded CBOR)."""
        return cls.from_cbor_map(decode_payload(payload, "authz-info response"))


__all__ = [
    "MAX_ACCESS_TOKEN_BYTES",
    "MAX_NONCE_BYTES",
    "MAX_RECIPIENT_ID_BYTES",
    "MIN_NONCE_BYTES",
    "NONCE_BYTES",
    "AuthzInfoRequest",
    "AuthzInfoResponse",
    "check_nonce",
    "check_recipient_id",
    "decode_payload",
]
