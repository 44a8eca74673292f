"""The CPython client of the EDHOC and OSCORE profile (draft-ietf-ace-edhoc-oscore-profile-11).

:class:`EdhocAceClient` runs the whole flow for a client whose private key never
left it and that the AS knows by its credential only:

1. token request over OSCORE with the client-AS context (as the OSCORE profile's
   client does): ``ace_profile`` coap_edhoc_oscore and ``req_cnf`` ``kccs`` with the
   client's CCS by value (draft §3.1); the answer carries the token and ``rs_cnf``,
   the RS's credential (draft §3.3), checked to be a CCS keybound can use;
2. the token POSTed to ``/authz-info`` unprotected (``{1: token}``);
3. EDHOC with the RS as Initiator (method 3, cipher suite 2, the client's credential
   by kid, the RS's as ``rs_cnf`` gave it), by aiocoap, then the request over the
   OSCORE context EDHOC derives (RFC 9528 Appendix A.1, the combined request of
   RFC 9668);
4. on a 4.01, or a refused OSCORE exchange, once more from step 1 (the token may
   have expired or been superseded, the RS may have restarted: draft §4.4).
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import aiocoap
from aiocoap import error as aiocoap_error
from aiocoap.edhoc import EdhocCredentials, EdhocInitiatorContext

from keybound.core import cbor
from keybound.core.client_flow import Reply
from keybound.core.edhoc import AuthKey, Credential, Initiator
from keybound.core.edhoc_credentials import Ccs
from keybound.core.edhoc_suites import SUITE_2
from keybound.core.errors import DecodeError, KeyboundError
from keybound.core.numbers.ace_parameters import CONTENT_FORMAT_ACE_CBOR, AceParameter
from keybound.core.numbers.ace_profiles import AceProfile
from keybound.core.numbers.edhoc_profile import CIPHER_SUITE_2, CNF_KCCS, METHOD_STATIC_DH

from .client import PeerUnreachable
from .oscore_contexts import DurableSecurityContext

log = logging.getLogger("keybound.client.edhoc")

_METHODS = {"GET": aiocoap.GET, "POST": aiocoap.POST, "PUT": aiocoap.PUT, "DELETE": aiocoap.DELETE}
#: Bound on the AS's token response.
MAX_TOKEN_RESPONSE = 4096


@dataclass
class EdhocGrant:
    """A token of the EDHOC profile and the RS credential that came with it."""

    access_token: bytes = field(repr=False)
    rs_credential: Ccs
    expires_at: float


def read_token_response(payload: bytes, *, now: float) -> EdhocGrant:
    """The token, ``rs_cnf`` (a ``kccs``) and lifetime of a token response (draft §3.3)."""
    body = cbor.loads(payload, max_size=MAX_TOKEN_RESPONSE)
    if not isinstance(body, dict):
        raise DecodeError("a token response is a CBOR map")
    token = body.get(AceParameter.ACCESS_TOKEN.value)
    rs_cnf = body.get(AceParameter.RS_CNF.value)
    expires_in = body.get(AceParameter.EXPIRES_IN.value, 3600)
    if body.get(AceParameter.ACE_PROFILE.value) != AceProfile.COAP_EDHOC_OSCORE:
        raise DecodeError("the AS did not issue a token of the EDHOC profile")
    if not isinstance(token, bytes) or not isinstance(rs_cnf, dict) or list(rs_cnf) != [CNF_KCCS]:
        raise DecodeError("the token response lacks access_token or a kccs rs_cnf")
    if type(expires_in) is not int or expires_in <= 0:
        raise DecodeError("expires_in must be a positive integer")
    rs_credential = Ccs.decode(cbor.dumps_ordered(rs_cnf[CNF_KCCS]))
    return EdhocGrant(token, rs_credential, now + expires_in)


class _OwnInitiatorContext(EdhocInitiatorContext):  # type: ignore[misc]
    """aiocoap's OSCORE context of an EDHOC Initiator, made by keybound's own EDHOC.

    message_3 goes with the first OSCORE request (the combined request, RFC 9668 §3).
    """

    def __init__(self, initiator: Initiator, c_i: bytes, c_r: bytes, logger: object) -> None:
        self.log = logger
        self._message_3 = initiator.message_3()
        self._make_ready(initiator, c_i, c_r)
        self._incomplete = False
        self._init_details = None


class OwnEdhocCredentials(EdhocCredentials):  # type: ignore[misc]
    """aiocoap client credentials that run keybound's own EDHOC as Initiator.

    For the methods lakers does not run: the client's or the RS's credential is an
    ES256 signature key (methods 0, 1, 2; RFC 9528 §3.2). ``peer`` is the RS's
    credential (``rs_cnf``); ID_CRED_R must name it.
    """

    def __init__(self, key: AuthKey, peer: Ccs, method: int) -> None:
        super().__init__(suite=CIPHER_SUITE_2, method=method)
        self._key = key
        self._peer = peer
        self._peer_credential: Credential = peer.edhoc()

    async def establish_context(
        self,
        wire: object,
        underlying_address: object,
        underlying_proxy_scheme: object,
        underlying_uri_host: object,
        logger: object,
    ) -> _OwnInitiatorContext:
        c_i = bytes((secrets.randbelow(24),))
        initiator = Initiator(self._key, method=self.method, c_i=c_i)
        request = aiocoap.Message(
            code=aiocoap.POST,
            proxy_scheme=underlying_proxy_scheme,
            uri_host=underlying_uri_host,
            uri_path=[".well-known", "edhoc"],
            payload=b"\xf5" + initiator.message_1(),
        )
        request.remote = underlying_address
        answer = await wire.request(request).response_raising  # type: ignore[attr-defined]
        c_r, id_cred_r, ead_2 = initiator.parse_message_2(answer.payload)
        if any(item.critical for item in ead_2):
            raise aiocoap_error.BadRequest("a critical EAD_2 item is not supported")
        if not self._peer.matches_id_cred(id_cred_r):
            raise aiocoap_error.Unauthorized("ID_CRED_R does not name the RS's credential")
        initiator.verify_message_2(self._peer_credential)
        return _OwnInitiatorContext(initiator, c_i, c_r, logger)


def method_for(own: Ccs, peer: Ccs) -> int:
    """The EDHOC method two credentials make (RFC 9528 §3.2): who signs, who uses DH."""
    return {(True, True): 0, (True, False): 1, (False, True): 2, (False, False): 3}[
        (own.signs, peer.signs)
    ]


class EdhocAceClient:
    """One client's EDHOC-profile state for one RS, performed with an aiocoap context.

    ``private_key`` (``d`` of P-256) and ``credential`` are the client's own;
    ``as_uri`` and ``rs_uri`` are ``coap://host:port``.
    """

    def __init__(
        self,
        coap: aiocoap.Context,
        *,
        as_uri: str,
        rs_uri: str,
        as_context: DurableSecurityContext,
        private_key: bytes,
        credential: Ccs,
        audience: str,
        scope: str | None,
        token_path: str = "token",  # noqa: S107 - a URI path
        clock: Callable[[], float] = time.time,
        on_step: Callable[[str], None] | None = None,
    ) -> None:
        self.coap = coap
        self.as_uri = as_uri.rstrip("/")
        self.rs_uri = rs_uri.rstrip("/")
        self.as_context = as_context
        self._private_key = private_key
        self.credential = credential
        self.audience = audience
        self.scope = scope
        self.token_path = token_path.strip("/")
        self.clock = clock
        self._say = on_step or (lambda line: log.info("%s", line))
        self.grant: EdhocGrant | None = None

    async def request(self, method: str, path: str, payload: bytes = b"") -> Reply:
        """The request to the RS, with a token and an EDHOC session made as needed."""
        reply = Reply((4, 1))
        for _attempt in range(2):
            if self.grant is None or self.clock() >= self.grant.expires_at:
                self.grant = await self._token()
                await self._post_token(self.grant)
                self.use_edhoc(self.grant)
            reply = await self.send(method, path, payload)
            if reply.code != (4, 1):
                return reply
            self._say("the RS refused the session or token: starting over")
            self.grant = None
            self.coap.client_credentials.pop(f"{self.rs_uri}/*", None)
        return reply

    async def _exchange(self, message: aiocoap.Message, peer: str) -> aiocoap.Message:
        try:
            response: aiocoap.Message = await self.coap.request(message).response
        except aiocoap_error.NetworkError as exc:
            raise PeerUnreachable(f"{peer} at {message.get_request_uri()} is unreachable") from exc
        return response

    async def _token(self) -> EdhocGrant:
        body: dict[int, object] = {
            AceParameter.AUDIENCE.value: self.audience,
            AceParameter.ACE_PROFILE.value: int(AceProfile.COAP_EDHOC_OSCORE),
            AceParameter.REQ_CNF.value: {CNF_KCCS: self.credential.claims()},
        }
        if self.scope:
            body[AceParameter.SCOPE.value] = self.scope
        uri = f"{self.as_uri}/{self.token_path}"
        message = aiocoap.Message(
            code=aiocoap.POST,
            uri=uri,
            payload=cbor.dumps(body),
            content_format=CONTENT_FORMAT_ACE_CBOR,
        )
        self.coap.client_credentials[uri] = self.as_context
        try:
            response = await self._exchange(message, "the AS")
        finally:
            self.coap.client_credentials.pop(uri, None)
        self._say(f"POST {uri} [OSCORE (client-AS)] -> {response.code}")
        if not response.code.is_successful():
            raise KeyboundError(f"the AS refused the token request: {response.code}")
        return read_token_response(response.payload, now=self.clock())

    async def _post_token(self, grant: EdhocGrant) -> None:
        uri = f"{self.rs_uri}/authz-info"
        self.coap.client_credentials.pop(f"{self.rs_uri}/*", None)
        message = aiocoap.Message(
            code=aiocoap.POST,
            uri=uri,
            payload=cbor.dumps({AceParameter.ACCESS_TOKEN.value: grant.access_token}),
            content_format=CONTENT_FORMAT_ACE_CBOR,
        )
        response = await self._exchange(message, "the RS")
        self._say(f"POST {uri} [plain CoAP] -> {response.code}")
        if response.code != aiocoap.CREATED:
            raise KeyboundError(f"the RS refused the token: {response.code}")

    def use_edhoc(self, grant: EdhocGrant) -> None:
        """Run EDHOC with the RS of ``grant``'s ``rs_cnf`` for requests to it.

        Method 3 (two static DH credentials) by aiocoap's EDHOC on lakers, any other
        method by keybound's own (:class:`OwnEdhocCredentials`).
        """
        method = method_for(self.credential, grant.rs_credential)
        if method != METHOD_STATIC_DH:
            key = AuthKey(SUITE_2, self.credential.edhoc(), self._private_key)
            self.coap.client_credentials[f"{self.rs_uri}/*"] = OwnEdhocCredentials(
                key, grant.rs_credential, method
            )
            return
        self.coap.client_credentials[f"{self.rs_uri}/*"] = EdhocCredentials(
            suite=CIPHER_SUITE_2,
            method=METHOD_STATIC_DH,
            own_cred_style="by-key-id",
            own_cred={14: self.credential.claims()},
            private_key={1: 2, -1: 1, -4: self._private_key},
            peer_cred={14: grant.rs_credential.claims()},
        )

    async def send(self, method: str, path: str, payload: bytes) -> Reply:
        """One request to the RS as it stands (EDHOC as needed), no starting over."""
        uri = f"{self.rs_uri}/{path.lstrip('/')}"
        message = aiocoap.Message(code=_METHODS[method.upper()], uri=uri, payload=payload)
        try:
            response = await self._exchange(message, "the RS")
        except (aiocoap_error.Error, ValueError) as exc:
            self._say(f"{method} {uri}: EDHOC or OSCORE refused ({type(exc).__name__})")
            return Reply((4, 1))
        code = int(response.code)
        self._say(f"{method} {uri} [OSCORE (EDHOC)] -> {response.code}")
        content_format = response.opt.content_format
        return Reply(
            (code >> 5, code & 0x1F),
            bytes(response.payload),
            int(content_format) if content_format is not None else None,
        )


__all__ = [
    "EdhocAceClient",
    "EdhocGrant",
    "OwnEdhocCredentials",
    "method_for",
    "read_token_response",
]
