"""``keybound bench`` group ``size``: bytes on the wire.

The same access token (:mod:`keybound.tools.bench.fixtures`) as a CWT under
COSE_Sign1 (ES256), COSE_Mac0 (HMAC 256/64) and, carrying OSCORE input
material, COSE_Encrypt0 (AES-CCM-16-64-128); and as a JWT under ES256 and
HS256. Each is read against its claims alone (CBOR for a CWT, compact JSON for
a JWT), and ``size.cwt_over_jwt`` sets the CWT Sign1 against the JWT ES256.
``size.cwt_encrypt0_rfc9203`` is the Encrypt0 of the example claims of RFC 9203
§3.2 (audience, iat, exp, scope and ``cnf.osc`` with a 1-byte ``id``).
Then the ``/authz-info`` payloads of RFC 9203 §4.1 and §4.2, and one
OSCORE-protected GET (RFC 8613 §6, serialized by aiocoap) against the same GET
in plain CoAP.
"""

from __future__ import annotations

import json
import os
from typing import Any

import aiocoap
from aiocoap import oscore
from aiocoap.numbers.codes import Code
from aiocoap.numbers.types import Type
from cryptography.hazmat.primitives import hashes

from keybound.core import cwt, jwt
from keybound.core.authz_info import AuthzInfoRequest, AuthzInfoResponse
from keybound.core.numbers.cose_algorithms import Algorithm
from keybound.core.oscore_derivation import DerivedContext, derive_context_parameters, derive_keys
from keybound.core.oscore_material import OscoreInputMaterial
from keybound.core.scope import TextScope
from keybound.core.token import AccessToken, CnfOsc
from keybound.tools.bench.fixtures import (
    CLIENT_ID,
    COAP_MID,
    COAP_PATH,
    COAP_TOKEN,
    NONCE1,
    NONCE2,
    SERVER_ID,
    Keys,
    sample_material,
)
from keybound.tools.bench.measure import Figure, Group, Runner, size_figure

FIGURES = (
    "size.cwt_sign1_es256",
    "size.cwt_mac0",
    "size.cwt_encrypt0_osc",
    "size.cwt_encrypt0_rfc9203",
    "size.jwt_es256",
    "size.jwt_hs256",
    "size.cwt_over_jwt",
    "size.authz_info_request",
    "size.authz_info_response",
    "size.oscore_get",
)


class ClientContext(oscore.CanProtect, oscore.CanUnprotect, oscore.SecurityContextUtils):  # type: ignore[misc]
    """An aiocoap OSCORE context holding keys that keybound derived (RFC 9203 §4.3)."""

    def __init__(self, derived: DerivedContext) -> None:
        keys = derive_keys(derived)
        self.sender_id = derived.sender_id
        self.recipient_id = derived.recipient_id
        self.id_context = derived.id_context
        self.alg_aead = next(
            a for a in oscore.algorithms.values() if getattr(a, "value", None) == derived.alg
        )
        self.hashfun = hashes.SHA256()
        self.sender_key = keys.sender_key
        self.recipient_key = keys.recipient_key
        self.common_iv = keys.common_iv
        self.sender_sequence_number = 0
        self.recipient_replay_window = oscore.ReplayWindow(32, lambda: None)
        self.recipient_replay_window.initialize_empty()

    def post_seqnoincrease(self) -> None:
        """Nothing to persist: the context lives for one measurement."""


def client_context() -> ClientContext:
    """The client's context after the benchmark's ``/authz-info`` exchange."""
    derived = derive_context_parameters(
        sample_material(), NONCE1, NONCE2, CLIENT_ID, SERVER_ID, role="client"
    )
    return ClientContext(derived)


def plain_get() -> Any:
    """A confirmable GET /temp with the benchmark's message ID and token."""
    return aiocoap.Message(
        mtype=Type.CON, code=Code.GET, uri_path=COAP_PATH, mid=COAP_MID, token=COAP_TOKEN
    )


def oscore_get(context: ClientContext) -> bytes:
    """The wire bytes of GET /temp protected with ``context`` (its next sequence number)."""
    protected, _request_id = context.protect(plain_get())
    protected.mid = COAP_MID
    protected.token = COAP_TOKEN
    protected.mtype = Type.CON
    wire: bytes = protected.encode()
    return wire


def rfc9203_token() -> AccessToken:
    """The example claims of RFC 9203 §3.2 ("Example CWT Claims Set with OSCORE Parameters")."""
    return AccessToken(
        aud=("tempSensorInLivingRoom",),
        iat=1360189224,
        exp=1360289224,
        scope=TextScope.parse("temperature_g firmware_p"),
        cnf=CnfOsc(
            OscoreInputMaterial(id=b"\x01", ms=bytes.fromhex("f9af838368e353e78888e1426bd94e6f"))
        ),
    )


def _jwt_claims_json(keys: Keys) -> str:
    claims = keys.key_token().to_jwt_claims()
    return json.dumps(claims, separators=(",", ":"), sort_keys=True)


def run(runner: Runner) -> list[Figure]:
    keys = Keys.generate()
    token = keys.key_token()
    osc_token = keys.osc_token()
    runner.on_step("size")
    sign1 = cwt.encode(token, cwt.Sign1(keys.as_signing, Algorithm.ES256))
    mac0 = cwt.encode(token, cwt.Mac0(keys.as_rs_mac))
    encrypt0 = cwt.encode(osc_token, cwt.Encrypt0(keys.as_rs), random_bytes=os.urandom)
    rfc9203 = rfc9203_token()
    rfc9203_encrypt0 = cwt.encode(rfc9203, cwt.Encrypt0(keys.as_rs), random_bytes=os.urandom)
    jwt_es256 = jwt.encode(token, keys.as_signing, alg="ES256")
    jwt_hs256 = jwt.encode(token, keys.as_rs_mac, alg="HS256")
    claims_cbor = token.to_cwt_payload()
    claims_json = _jwt_claims_json(keys)
    request = AuthzInfoRequest(encrypt0, NONCE1, CLIENT_ID).encode()
    response = AuthzInfoResponse(NONCE2, SERVER_ID).encode()
    plain = plain_get().encode()
    return [
        size_figure("size.cwt_sign1_es256", sign1, claims_cbor, "claims.cbor"),
        size_figure("size.cwt_mac0", mac0, claims_cbor, "claims.cbor"),
        size_figure(
            "size.cwt_encrypt0_osc", encrypt0, osc_token.to_cwt_payload(), "claims_osc.cbor"
        ),
        size_figure(
            "size.cwt_encrypt0_rfc9203",
            rfc9203_encrypt0,
            rfc9203.to_cwt_payload(),
            "claims_rfc9203.cbor",
        ),
        size_figure("size.jwt_es256", jwt_es256, claims_json, "claims.json"),
        size_figure("size.jwt_hs256", jwt_hs256, claims_json, "claims.json"),
        size_figure("size.cwt_over_jwt", sign1, jwt_es256, "size.jwt_es256"),
        size_figure("size.authz_info_request", request, encrypt0, "size.cwt_encrypt0_osc"),
        size_figure(
            "size.authz_info_response",
            response,
            NONCE2 + SERVER_ID,
            "nonce2+id2.raw",
        ),
        size_figure("size.oscore_get", oscore_get(client_context()), plain, "coap.get"),
    ]


GROUP = Group(
    name="size",
    title="bytes on the wire",
    figures=FIGURES,
    run=run,
    steps=1,
)

__all__ = [
    "FIGURES",
    "GROUP",
    "ClientContext",
    "client_context",
    "oscore_get",
    "plain_get",
    "rfc9203_token",
]
