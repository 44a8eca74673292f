"""The client side of ACE with the OSCORE profile, as a sans-IO flow (RFC 9200 §5.8, RFC 9203 §4).

In the manner of httpx's ``Auth.auth_flow``, :meth:`AceClient.request` is a
generator: it yields each :class:`Send` the transport must perform and receives
the :class:`Reply`. aiocoap drives it on a desktop
(:mod:`keybound.coap.client`); the firmware mirrors the same steps on a board.

The steps:

1. No token, or the token expired: POST ``/token`` to the AS over the client's
   provisioned OSCORE context with ``{audience, scope}`` (RFC 9200 §5.8.1); the
   2.01 answer carries ``access_token``, ``expires_in`` and ``cnf.osc``.
2. No security context with the RS: POST ``/authz-info`` unprotected with
   ``{access_token, nonce1, ace_client_recipientId}`` (RFC 9203 §4.1); the 2.01
   answer carries ``nonce2`` and ``ace_server_recipientId``; both sides derive the
   context (RFC 9203 §4.3).
3. The request itself over that context. A 4.01 from the RS means it lost or
   refused the context (for example after losing its state): the flow forgets the
   context, and the token too if the RS refused it, and starts over once.

Time (a monotonic clock in seconds) and randomness are parameters.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Literal

from . import cbor
from .authz_info import AuthzInfoRequest, AuthzInfoResponse
from .errors import DecodeError, InvalidRequest, KeyboundError
from .numbers.ace_parameters import CONTENT_FORMAT_ACE_CBOR, AceParameter
from .numbers.ace_profiles import AceProfile
from .numbers.cnf_methods import CnfMethod
from .oscore_derivation import DerivedContext, derive_context_parameters
from .oscore_material import OscoreInputMaterial

#: Refresh the token this many seconds before it expires.
EXPIRY_MARGIN = 5.0
MAX_RESPONSE = 4096

Peer = Literal["as", "rs"]


@dataclass(frozen=True)
class Send:
    """One CoAP request for the transport.

    ``security`` is ``"as"`` (the provisioned client-AS OSCORE context),
    ``"rs"`` (the context derived with the RS; :attr:`AceClient.context`) or
    ``None`` (unprotected).
    """

    peer: Peer
    method: str
    path: str
    payload: bytes = b""
    content_format: int | None = None
    security: Peer | None = None


@dataclass(frozen=True)
class Reply:
    """What came back: the CoAP code as (class, detail), payload and Content-Format."""

    code: tuple[int, int]
    payload: bytes = b""
    content_format: int | None = None

    @property
    def success(self) -> bool:
        return self.code[0] == 2

    def __str__(self) -> str:
        return f"{self.code[0]}.{self.code[1]:02d}"


class FlowError(KeyboundError):
    """a step of the ACE flow failed"""

    def __init__(self, description: str, reply: Reply | None = None) -> None:
        super().__init__(description)
        self.reply = reply


@dataclass
class TokenGrant:
    """What the AS answered (RFC 9200 §5.8.2)."""

    access_token: bytes = field(repr=False)
    material: OscoreInputMaterial = field(repr=False)
    expires_at: float | None
    profile: int


def parse_token_response(payload: bytes, *, now: float) -> TokenGrant:
    """Check the AS's 2.01 answer: an access token and OSCORE input material."""
    body = cbor.loads(payload, max_size=MAX_RESPONSE)
    if not isinstance(body, dict):
        raise DecodeError("the token response must be a CBOR map")
    token = body.get(AceParameter.ACCESS_TOKEN)
    if not isinstance(token, bytes) or not token:
        raise DecodeError("the token response has no access_token")
    cnf = body.get(AceParameter.CNF)
    if not isinstance(cnf, dict) or not isinstance(cnf.get(CnfMethod.OSC), dict):
        raise DecodeError("the token response carries no OSCORE input material (cnf osc)")
    material = OscoreInputMaterial.from_cbor_map(cnf[CnfMethod.OSC])
    profile = body.get(AceParameter.ACE_PROFILE, AceProfile.COAP_OSCORE)
    if profile != AceProfile.COAP_OSCORE:
        raise DecodeError(f"the AS chose ACE profile {profile!r}, not coap_oscore")
    expires_in = body.get(AceParameter.EXPIRES_IN)
    if expires_in is not None and (type(expires_in) is not int or expires_in < 0):
        raise DecodeError("expires_in must be a non-negative integer")
    expires_at = now + expires_in if expires_in is not None else None
    return TokenGrant(token, material, expires_at, int(profile))


def error_description(reply: Reply) -> str:
    """A readable summary of an error reply (its ACE error map when it has one)."""
    text = str(reply)
    try:
        body = cbor.loads(reply.payload, max_size=MAX_RESPONSE) if reply.payload else None
    except KeyboundError:
        return text
    if isinstance(body, dict):
        error, description = body.get(AceParameter.ERROR), body.get(AceParameter.ERROR_DESCRIPTION)
        if error is not None:
            text += f" error={error}"
        if isinstance(description, str):
            text += f" ({description})"
        if 1 in body and isinstance(body[1], str) and error is None:
            text += f" AS={body[1]}"
    return text


class AceClient:
    """A client's ACE state for one RS: its token and the derived OSCORE context."""

    def __init__(
        self,
        *,
        audience: str,
        scope: str | None,
        recipient_id: bytes = b"\x01",
        random_bytes: Callable[[int], bytes],
    ) -> None:
        if not recipient_id or len(recipient_id) > 7:
            raise InvalidRequest("the client's recipient ID must be 1 to 7 bytes")
        self.audience = audience
        self.scope = scope
        self.recipient_id = recipient_id
        self._random = random_bytes
        self.grant: TokenGrant | None = None
        self.context: DerivedContext | None = None
        self.log: list[str] = []

    def _note(self, line: str) -> None:
        self.log.append(line)

    def forget(self, *, token: bool) -> None:
        """Drop the derived context (and the token, when ``token``)."""
        self.context = None
        if token:
            self.grant = None

    def token_request(self) -> Send:
        body: dict[int, object] = {int(AceParameter.AUDIENCE): self.audience}
        if self.scope is not None:
            body[int(AceParameter.SCOPE)] = self.scope
        return Send("as", "POST", "token", cbor.dumps(body), CONTENT_FORMAT_ACE_CBOR, "as")

    def request(
        self,
        method: str,
        path: str,
        payload: bytes = b"",
        *,
        now: float,
        content_format: int | None = None,
    ) -> Generator[Send, Reply, Reply]:
        """The whole flow for one request; returns the RS's final reply."""
        for attempt in range(2):
            grant = self.grant
            if grant and grant.expires_at is not None and now >= grant.expires_at - EXPIRY_MARGIN:
                self._note("token expired: asking the AS for a new one")
                self.forget(token=True)
            if self.grant is None:
                reply = yield self.token_request()
                if reply.code != (2, 1):
                    raise FlowError(f"token request refused: {error_description(reply)}", reply)
                self.grant = parse_token_response(reply.payload, now=now)
                self._note(f"token received ({len(self.grant.access_token)} bytes)")
            if self.context is None:
                nonce1 = self._random(8)
                post = AuthzInfoRequest(self.grant.access_token, nonce1, self.recipient_id)
                reply = yield Send(
                    "rs", "POST", "authz-info", post.encode(), CONTENT_FORMAT_ACE_CBOR
                )
                if reply.code != (2, 1):
                    self.forget(token=True)
                    raise FlowError(f"/authz-info refused: {error_description(reply)}", reply)
                answer = AuthzInfoResponse.decode(reply.payload)
                self.context = derive_context_parameters(
                    self.grant.material, nonce1, answer.nonce2, self.recipient_id,
                    answer.server_recipient_id, role="client",
                )  # fmt: skip
                self._note("security context derived (RFC 9203 §4.3)")
            reply = yield Send("rs", method, path, payload, content_format, "rs")
            if reply.code == (4, 1) and attempt == 0:
                self._note(f"RS answered 4.01 ({error_description(reply)}): starting over")
                self.forget(token=True)
                continue
            return reply
        raise FlowError("the RS refused the request after a fresh token")  # pragma: no cover


__all__ = [
    "EXPIRY_MARGIN",
    "AceClient",
    "FlowError",
    "Reply",
    "Send",
    "TokenGrant",
    "error_description",
    "parse_token_response",
]
