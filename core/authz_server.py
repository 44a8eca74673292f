"""The Authorization Server's token and introspection logic, sans-IO (RFC 9200 §5.8, §5.9).

Sans-IO: the functions here take the records a request names (the client's,
the RS's, the token's) and return what to record; they touch no store.
:class:`keybound.coap.authz_service.AuthzService` reads and writes the store
around them.

A token request runs through the checks of RFC 9200 §5.8.1-§5.8.3 in order
(:func:`authorize`), each raising the :class:`~keybound.core.errors.KeyboundError`
the bindings render:

1. the client is authenticated by the binding (OSCORE context on CoAP,
   RFC 9203 §3.1; ``client_secret_basic`` on HTTP, RFC 6749 §2.3.1) and
   must be known to the store (:class:`InvalidClient`);
2. ``grant_type`` is ``client_credentials``, implied when absent
   (RFC 9200 §5.8.1; :class:`UnsupportedGrantType`);
3. ``audience`` names a registered resource server. An unknown audience is
   :class:`AccessDenied` (the PoP key-distribution draft, §4); the CoAP
   binding sends it as ``invalid_request`` because RFC 9200 §5.8.3 and the
   ACE error registry (RFC 9200 §8.4) have no ``access_denied``;
4. the scope: absent means everything the client may have at that audience;
   otherwise the AS grants the *intersection* of the request and the grant,
   and returns ``scope`` when it differs (RFC 6749 §3.3). An empty
   intersection is :class:`InvalidScope`;
5. the PoP key (RFC 9200 §5.8.4.5, RFC 8747 §3): the client's public key
   (``req_cnf`` / ``key``), the thumbprint of a DPoP proof's key checked by
   the HTTP binding (``cnf.jkt``, RFC 9449 §5, §6.1; JWTs only, answered
   with ``token_type`` ``DPoP``), the thumbprint of the TLS client certificate
   the client authenticated with (``cnf`` ``x5t#S256``, RFC 8705 §3; JWTs only,
   answered with ``token_type`` ``Bearer``), OSCORE input material for the OSCORE
   profile (RFC 9203 §3.2), a fresh symmetric key, or, only when the AS is
   configured for it, a key pair the AS generates. Anything else is
   :class:`UnsupportedPopKey`. The ACE profile decides the key when the client
   sent none (:mod:`keybound.core.authz_profiles`);
6. the ACE profile (RFC 9200 §5.8.4.3): the requested one if the RS speaks it,
   else the RS's first (:class:`IncompatibleAceProfiles`);
7. the token (:func:`mint_token`). An RS with a clock gets ``exp`` and a
   random ``cti``. An RS without one gets ``exi`` and, as ``cti``, the per-RS
   sequence number the caller took from
   :meth:`~keybound.core.authz_store.AuthzStore.next_sequence`, encoded by
   :mod:`keybound.core.exi` (the shortest CBOR encoding of the unsigned
   integer, in a byte string; RFC 9200 §5.10.3); the RS reads it back with
   the same module.

Protection: a ``cnf`` carrying a secret (a symmetric key, or an OSCORE master
secret) is always encrypted for the RS with the RS's token key (COSE_Encrypt0,
RFC 8392 §7.1; by default with the AS's COSE_Sign1 nested inside so the RS can
check who issued it, RFC 8392 Appendix A.6). A public-key ``cnf`` is a
COSE_Sign1 with ES256. JWTs likewise: a JWE for the RS (RFC 7516, ``dir`` +
A128GCM) for secrets, a JWS ES256 otherwise.

Every token is recorded (:attr:`TokenResponse.record`, by the caller).
Sequence-number ``cti`` values repeat across resource servers, so such
tokens are recorded under :func:`record_cti`, ``b"AUDIENCE#SEQ"``; random
``cti`` values are recorded as they are.

No refresh tokens are issued: the only grant is client credentials, for
which RFC 6749 §4.4.3 says a refresh token should not be included, so the
binding of public clients' refresh tokens (RFC 9449 §5) never arises.

Time (``now``) and randomness (``random_bytes``) are parameters.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from . import cbor, cwt, jwt, trl
from .authz_profiles import PopBinding, PopRequest, as_profile
from .authz_store import (
    TOKEN_FORMATS,
    Client,
    IssuedToken,
    RsRecord,
    TokenFormat,
)
from .edhoc_credentials import MAX_KID_BYTES
from .errors import (
    AccessDenied,
    DecodeError,
    IncompatibleAceProfiles,
    InvalidClient,
    InvalidRequest,
    InvalidScope,
    KeyboundError,
    UnsupportedGrantType,
    UnsupportedPopKey,
)
from .exi import decode_exi_sequence, encode_exi_sequence
from .keys import Key, b64u_decode, b64u_encode
from .numbers.ace_parameters import AceParameter, IntrospectionParameter
from .numbers.ace_profiles import AceProfile
from .numbers.cnf_methods import CnfMethod
from .numbers.cose_algorithms import Algorithm
from .numbers.cose_keys import Curve, KeyType
from .numbers.edhoc_profile import CNF_KCCS
from .numbers.grant_types import GrantType
from .numbers.token_types import TOKEN_TYPE_NAMES, TokenType
from .oscore_material import OscoreInputMaterial
from .scope import TextScope
from .token import AccessToken, Cnf, CnfEncryptedKey, CnfJkt, CnfKey, CnfX5tS256

__all__ = [
    "MAX_REQUEST_BYTES",
    "AuthzServerConfig",
    "IntrospectionResult",
    "PopKeyKind",
    "TokenGrant",
    "TokenRequest",
    "TokenResponse",
    "authorize",
    "introspection_result",
    "mint_token",
    "on_record_as",
    "parse_cbor_introspection_request",
    "parse_cbor_token_request",
    "parse_form_token_request",
    "record_cti",
    "sequence_cti",
    "sequence_record_cti",
]

MAX_REQUEST_BYTES = 4096
"""Largest token or introspection request body accepted (CBOR or form-encoded)."""

RandomBytes = Callable[[int], bytes]

PopKeyKind = Literal["auto", "symmetric", "generated-pair"]
"""What PoP key the client asks for when it sends none of its own:
``auto`` lets the profile decide (OSCORE input material for ``coap_oscore``,
a symmetric key otherwise); ``generated-pair`` asks the AS for a key pair
(refused unless :attr:`AuthzServerConfig.allow_generated_key_pairs`)."""

_CLIENT_CREDENTIALS_NAMES = frozenset({"client_credentials"})
_CWT, _JWT = TOKEN_FORMATS
_POP = TOKEN_TYPE_NAMES["pop"]
_DPOP = TOKEN_TYPE_NAMES["dpop"]


def _token_type(token: AccessToken) -> str:
    """``DPoP`` for a token bound with ``cnf.jkt`` (RFC 9449 §5, §6.2), ``Bearer`` for a
    certificate-bound one (RFC 8705 §3: presented as a bearer token over mutual TLS),
    else ``pop``."""
    if isinstance(token.cnf, CnfJkt):
        return _DPOP
    if isinstance(token.cnf, CnfX5tS256):
        return "Bearer"
    return _POP


@dataclass(frozen=True)
class AuthzServerConfig:
    """The AS's identity and policy."""

    issuer: str
    signing_key: Key = field(repr=False)
    """The AS's ES256 key, with its private part (RFC 9053 §2.1)."""
    nested: bool = True
    """Put the AS's Sign1 inside the Encrypt0 of secret-carrying CWTs (RFC 8392 Appendix A.6)."""
    allow_generated_key_pairs: bool = False
    """Let the AS generate a key pair for a client that asks for one; off by default because
    the private key then exists outside the client (draft-ietf-oauth-pop-key-distribution §4)."""
    max_lifetime: int = 24 * 3600
    oscore_salt: bool = True
    """Include an 8-byte random salt in OSCORE input material (RFC 9203 §3.2.1)."""

    @property
    def public_key(self) -> Key:
        """The public half of :attr:`signing_key`, for resource servers."""
        return self.signing_key.public_key()


@dataclass(frozen=True)
class TokenRequest:
    """A token request after parsing (RFC 9200 §5.8.1, RFC 6749 §4.4.2)."""

    client_id: str
    """The authenticated client (from its OSCORE context or HTTP credentials)."""
    audience: str | None = None
    scope: str | None = None
    grant_type: str | int | None = None
    req_cnf: Key | None = None
    """A public key of the client's own (``req_cnf`` COSE_Key, or ``key`` JWK)."""
    req_credential: bytes | None = field(default=None, repr=False)
    """An EDHOC credential by value (``req_cnf`` ``kccs``, the EDHOC profile)."""
    req_credential_kid: bytes | None = None
    """An EDHOC credential by reference (``req_cnf`` ``kid``, the EDHOC profile)."""
    pop_key: PopKeyKind = "auto"
    ace_profile: int | None = None
    """A profile the client asks for; ``None`` leaves the choice to the AS."""
    token_format: TokenFormat = _CWT
    lifetime: int | None = None
    dpop_jkt: str | None = None
    """The RFC 7638 thumbprint of a verified DPoP proof's key: the token is bound to it
    with ``cnf.jkt`` (RFC 9449 §5, §6.1). Set only by a binding that checked the proof."""
    tls_x5t: str | None = None
    """The ``x5t#S256`` of the TLS client certificate the client authenticated with
    (RFC 8705 §2): the token is bound to it (§3.1). Set only by a binding that checked it."""


@dataclass(frozen=True)
class TokenResponse:
    """What the AS answers (RFC 9200 §5.8.2) and records."""

    access_token: bytes | str = field(repr=False)
    expires_in: int
    token: AccessToken = field(repr=False)
    scope: TextScope
    scope_changed: bool
    record: IssuedToken
    ace_profile: int | None = None
    osc: OscoreInputMaterial | None = field(default=None, repr=False)
    client_key: Key | None = field(default=None, repr=False)
    """A key the AS generated for the client (symmetric, or a private key): returned to it."""
    rs_cnf: Cnf | None = field(default=None, repr=False)
    """The RS's authentication credential (RFC 9201 §5): a ``kccs`` for EDHOC."""
    parameters: Mapping[int, object] = field(default_factory=dict, repr=False)
    """Parameters the ACE profile adds (e.g. ``edhoc_info``)."""

    def to_cbor_map(self) -> dict[int, object]:
        """The CBOR response of RFC 9200 §5.8.2 with the abbreviations of §8.10."""
        out: dict[int, object] = {}
        token = self.access_token
        out[AceParameter.ACCESS_TOKEN.value] = token if isinstance(token, bytes) else token.encode()
        out[AceParameter.EXPIRES_IN.value] = self.expires_in
        if self.osc is not None:
            out[AceParameter.CNF.value] = {CnfMethod.OSC.value: self.osc.to_cbor_map()}
        elif self.client_key is not None:
            out[AceParameter.CNF.value] = {
                CnfMethod.COSE_KEY.value: self.client_key.to_cose_key(include_private=True)
            }
        if self.scope_changed:
            out[AceParameter.SCOPE.value] = str(self.scope)
        if self.ace_profile is not None:
            out[AceParameter.ACE_PROFILE.value] = self.ace_profile
        if self.rs_cnf is not None:
            out[AceParameter.RS_CNF.value] = AccessToken(cnf=self.rs_cnf).to_cwt_claims()[
                int(AceParameter.CNF)
            ]
        out.update(self.parameters)
        return out

    def to_json(self) -> dict[str, Any]:
        """The JSON response (RFC 6749 §5.1, draft-ietf-oauth-pop-key-distribution §4)."""
        token = self.access_token
        out: dict[str, Any] = {
            "access_token": token if isinstance(token, str) else b64u_encode(token),
            "token_type": _token_type(self.token),
            "expires_in": self.expires_in,
        }
        if self.client_key is not None:
            out["key"] = self.client_key.to_jwk(include_private=True)
        if self.osc is not None:
            out["cnf"] = {"osc": self.osc.to_dict()}
        if self.scope_changed:
            out["scope"] = str(self.scope)
        if self.ace_profile is not None:
            out["ace_profile"] = AceProfile(self.ace_profile).text
        return out


# ---- parsing ----------------------------------------------------------------------------------


def _text_param(value: object, name: str) -> str:
    if not isinstance(value, str) or not value or len(value) > 1024:
        raise InvalidRequest(f"{name} must be a non-empty text string", claim=name)
    return value


def parse_cbor_token_request(payload: bytes, client_id: str) -> TokenRequest:
    """Decode a CBOR token request (RFC 9200 §5.8.1, abbreviations of §8.10).

    Raises :class:`DecodeError` / :class:`PayloadTooLarge` for bad CBOR and
    :class:`InvalidRequest` for parameters of the wrong type.
    """
    body = cbor.loads(payload, max_size=MAX_REQUEST_BYTES)
    if not isinstance(body, dict):
        raise DecodeError("a token request is a CBOR map")
    audience = body.get(AceParameter.AUDIENCE.value)
    scope = body.get(AceParameter.SCOPE.value)
    if isinstance(scope, bytes):
        raise InvalidScope("only text scopes are supported by this AS", claim="scope")
    grant = body.get(AceParameter.GRANT_TYPE.value)
    if grant is not None and (isinstance(grant, bool) or not isinstance(grant, int | str)):
        raise InvalidRequest("grant_type must be an integer or text", claim="grant_type")
    req_cnf: Key | None = None
    credential: bytes | None = None
    credential_kid: bytes | None = None
    if AceParameter.REQ_CNF.value in body:
        req_cnf, credential, credential_kid = _req_cnf(body[AceParameter.REQ_CNF.value])
    profile = body.get(AceParameter.ACE_PROFILE.value)
    if profile is not None and (isinstance(profile, bool) or not isinstance(profile, int)):
        raise InvalidRequest("ace_profile must be null or an integer", claim="ace_profile")
    claimed = body.get(AceParameter.CLIENT_ID.value)
    if claimed is not None and claimed != client_id:
        raise InvalidClient("client_id does not match the authenticated client")
    return TokenRequest(
        client_id=client_id,
        audience=None if audience is None else _text_param(audience, "audience"),
        scope=None if scope is None else _text_param(scope, "scope"),
        grant_type=grant,
        req_cnf=req_cnf,
        req_credential=credential,
        req_credential_kid=credential_kid,
        ace_profile=profile,
        token_format=_CWT,
    )


def _req_cnf(value: object) -> tuple[Key | None, bytes | None, bytes | None]:
    """The client's key from ``req_cnf`` (RFC 9201 §5, RFC 8747 §3.1): a COSE_Key, or an
    EDHOC credential by value (``kccs``) or by ``kid`` (draft-ietf-ace-edhoc-oscore-profile
    §3.1), as ``(key, credential, credential kid)``."""
    if not isinstance(value, dict) or len(value) != 1:
        raise InvalidRequest("req_cnf must be a map with one confirmation method", claim="req_cnf")
    ((method, body),) = value.items()
    if method == CNF_KCCS and type(method) is int:
        if not isinstance(body, dict):
            raise InvalidRequest("req_cnf kccs must be a CCS map", claim="req_cnf")
        return None, cbor.dumps_ordered(body), None
    if method == CnfMethod.KID.value and type(method) is int:
        if not isinstance(body, bytes) or not 0 < len(body) <= MAX_KID_BYTES:
            raise InvalidRequest("req_cnf kid must be a short byte string", claim="req_cnf")
        return None, None, body
    if method != CnfMethod.COSE_KEY.value or not isinstance(body, dict):
        raise UnsupportedPopKey("only a COSE_Key (1) is accepted in req_cnf", claim="req_cnf")
    try:
        key = Key.from_cose_key(body)
    except KeyboundError as exc:
        raise UnsupportedPopKey(f"req_cnf: {exc.description}", claim="req_cnf") from None
    return _client_public_key(key), None, None


def _client_public_key(key: Key) -> Key:
    if key.is_symmetric:
        raise UnsupportedPopKey("a client may not choose a symmetric PoP key", claim="cnf")
    if key.has_private:
        raise UnsupportedPopKey("the PoP key must not include its private part", claim="cnf")
    if (key.kty, key.curve) not in ((KeyType.EC2, Curve.P_256), (KeyType.OKP, Curve.ED25519)):
        raise UnsupportedPopKey("the RS accepts P-256 or Ed25519 PoP keys only", claim="cnf")
    return key


_JWS_ALG_KEYS = {"ES256": (KeyType.EC2, Curve.P_256), "EdDSA": (KeyType.OKP, Curve.ED25519)}


def parse_form_token_request(
    form: Mapping[str, str],
    client_id: str,
    *,
    token_format: TokenFormat = _JWT,
    dpop_jkt: str | None = None,
    tls_x5t: str | None = None,
) -> TokenRequest:
    """A form-encoded token request (RFC 6749 §4.4.2) with the PoP parameters of
    draft-ietf-oauth-pop-key-distribution §4 (``token_type=pop``, ``alg``, ``key``,
    ``aud``; RFC 8707 ``resource`` is read as ``aud`` when ``aud`` is absent).

    ``key`` (a public JWK) binds the client's key; without it the AS makes a
    symmetric key, or a key pair when ``alg`` names a signature algorithm.

    ``dpop_jkt`` is the thumbprint of the key of a DPoP proof the binding has
    verified (RFC 9449 §5): the token is bound to that key, and the PoP
    parameters ``token_type``, ``alg`` and ``key``, which would name another
    key, are refused alongside it.

    ``tls_x5t`` is the thumbprint of the TLS client certificate the client
    authenticated with (RFC 8705 §2). Without a DPoP proof and without the PoP
    parameters the token is bound to that certificate (§3); a client that asks
    for a PoP key of another kind gets that one instead.
    """
    if dpop_jkt is not None:
        for name in ("token_type", "alg", "key"):
            if name in form:
                raise InvalidRequest(
                    f"{name} cannot be combined with a DPoP proof (RFC 9449 §5)", claim=name
                )
    token_type = form.get("token_type")
    if token_type is not None and token_type.lower() != "pop":
        raise InvalidRequest("token_type must be pop", claim="token_type")
    audience = form.get("aud") or form.get("audience") or form.get("resource")
    req_cnf: Key | None = None
    pop: PopKeyKind = "auto"
    alg = form.get("alg")
    if "key" in form:
        try:
            key = Key.from_jwk(form["key"])
        except KeyboundError as exc:
            raise UnsupportedPopKey(f"key: {exc.description}", claim="key") from None
        req_cnf = _client_public_key(key)
        if alg is not None and _JWS_ALG_KEYS.get(alg) != (key.kty, key.curve):
            raise UnsupportedPopKey(f"alg {alg} does not fit the key", claim="alg")
    elif alg is not None:
        if alg in _JWS_ALG_KEYS:
            pop = "generated-pair"
        elif alg in ("HS256", "A128GCM", "dir"):
            pop = "symmetric"
        else:
            raise UnsupportedPopKey(f"PoP algorithm {alg!r} is not supported", claim="alg")
    elif dpop_jkt is None and (tls_x5t is None or token_type is not None):
        pop = "symmetric"
    bound_to_certificate = (
        tls_x5t is not None and dpop_jkt is None and req_cnf is None and pop == "auto"
    )
    client = form.get("client_id")
    if client is not None and client != client_id:
        raise InvalidClient("client_id does not match the authenticated client")
    return TokenRequest(
        client_id=client_id,
        audience=None if audience is None else _text_param(audience, "aud"),
        scope=None if form.get("scope") is None else _text_param(form["scope"], "scope"),
        grant_type=form.get("grant_type"),
        req_cnf=req_cnf,
        pop_key=pop,
        token_format=token_format,
        dpop_jkt=dpop_jkt,
        tls_x5t=tls_x5t if bound_to_certificate else None,
    )


def parse_cbor_introspection_request(payload: bytes) -> bytes:
    """The ``token`` (11) of a CBOR introspection request (RFC 9200 §5.9.1)."""
    body = cbor.loads(payload, max_size=MAX_REQUEST_BYTES)
    if not isinstance(body, dict):
        raise DecodeError("an introspection request is a CBOR map")
    token = body.get(IntrospectionParameter.TOKEN.value)
    if isinstance(token, str):
        token = token.encode("ascii", "replace")
    if not isinstance(token, bytes) or not token:
        raise InvalidRequest("token (11) must be a byte string", claim="token")
    return token


# ---- the checks ---------------------------------------------------------------------------


def _check_client(client: Client | None) -> Client:
    """The client record, or :class:`InvalidClient` (RFC 6749 §5.2)."""
    if client is None:
        raise InvalidClient("unknown client")
    return client


def _check_grant(grant: str | int | None) -> None:
    if grant is None:
        return  # RFC 9200 §5.8.1: client_credentials is implied
    if isinstance(grant, int) and grant == GrantType.CLIENT_CREDENTIALS:
        return
    if isinstance(grant, str) and grant in _CLIENT_CREDENTIALS_NAMES:
        return
    raise UnsupportedGrantType(f"grant type {grant!r} is not supported; use client_credentials")


def _check_audience(rs: RsRecord | None, audience: str | None) -> RsRecord:
    if audience is None:
        raise InvalidRequest("audience is required", claim="audience")
    if rs is None or rs.audience != audience:
        raise AccessDenied(f"unknown audience {audience!r}")
    return rs


def _granted_scope(client: Client, rs: RsRecord, requested: str | None) -> TextScope:
    allowed = client.allowed_scopes(rs.audience)
    if not allowed:
        raise InvalidScope(f"no scope at {rs.audience!r} is granted to this client")
    allowed_scope = TextScope.of(allowed)
    if requested is None:
        return allowed_scope
    granted = TextScope.parse(requested).intersection(allowed_scope)
    if granted is None:
        raise InvalidScope("none of the requested scope is granted to this client")
    return granted


def _profile(rs: RsRecord, requested: int | None) -> int:
    if not rs.profiles:
        raise IncompatibleAceProfiles("the resource server has no ACE profile")
    if requested is None:
        return rs.profiles[0]
    if requested not in rs.profiles:
        raise IncompatibleAceProfiles(f"the resource server does not speak profile {requested}")
    return requested


def _check_pop_request(config: AuthzServerConfig, request: TokenRequest) -> None:
    if request.tls_x5t is not None and request.token_format != _JWT:
        raise InvalidRequest("a certificate-bound access token is a JWT (RFC 8705 §3.1)")
    if request.dpop_jkt is not None:
        if request.token_format != _JWT:
            raise InvalidRequest("a DPoP-bound access token is a JWT (RFC 9449 §6.1)")
        if request.req_cnf is not None:
            raise InvalidRequest("a DPoP proof and a key of the client's own exclude each other")
    elif (
        request.req_cnf is None
        and request.pop_key == "generated-pair"
        and not config.allow_generated_key_pairs
    ):
        raise UnsupportedPopKey("this AS does not generate key pairs; send your public key")


def sequence_cti(sequence: int) -> bytes:
    """A sequence number as ``cti`` (RFC 9200 §5.10.3), as the RS reads it (:mod:`.exi`)."""
    return encode_exi_sequence(sequence)


def record_cti(audience: str, cti: bytes, *, sequenced: bool) -> bytes:
    """The key a token is recorded under: ``cti``, or ``b"AUDIENCE#SEQ"`` for sequence numbers.

    ``SEQ`` is the decimal sequence number that ``cti`` encodes
    (:func:`~keybound.core.exi.decode_exi_sequence`, RFC 9200 §5.10.3), so
    ``keybound as revoke AUDIENCE#SEQ`` names the token whose number is SEQ.
    """
    if not sequenced:
        return cti
    return sequence_record_cti(audience, decode_exi_sequence(cti))


def sequence_record_cti(audience: str, sequence: int) -> bytes:
    """The record key of the token with sequence number ``sequence`` for ``audience``."""
    return f"{audience}#{sequence}".encode()


@dataclass(frozen=True)
class TokenGrant:
    """A token request that passed every check (RFC 9200 §5.8.1-§5.8.3): what to issue.

    Made by :func:`authorize` from the records the request names; nothing is
    random or recorded yet. A grant for an RS without a clock needs a sequence
    number (:attr:`needs_sequence`) before :func:`mint_token`.
    """

    request: TokenRequest
    client: Client
    rs: RsRecord
    scope: TextScope
    profile: int | None
    """The ACE profile (RFC 9200 §5.8.4.3); ``None`` for a JWT."""

    @property
    def needs_sequence(self) -> bool:
        """Whether the token carries ``exi`` and a sequence-number ``cti`` (RFC 9200 §5.10.3)."""
        return not self.rs.has_clock


def authorize(
    config: AuthzServerConfig,
    request: TokenRequest,
    *,
    client: Client | None,
    rs: RsRecord | None,
) -> TokenGrant:
    """Run the checks of a token request (RFC 9200 §5.8) on the records it names.

    ``client`` is the record of ``request.client_id`` and ``rs`` that of
    ``request.audience``, each ``None`` when the store has none. Raises the
    error of the first check that fails, in the order of the module docstring.
    """
    known = _check_client(client)
    _check_grant(request.grant_type)
    audience_rs = _check_audience(rs, request.audience)
    scope = _granted_scope(known, audience_rs, request.scope)
    profile = _profile(audience_rs, request.ace_profile) if request.token_format == _CWT else None
    _check_pop_request(config, request)
    named_credential = request.req_credential is not None or request.req_credential_kid is not None
    if named_credential and profile != AceProfile.COAP_EDHOC_OSCORE:
        raise UnsupportedPopKey(
            "only the EDHOC profile binds an authentication credential (kccs or kid)",
            claim="req_cnf",
        )
    return TokenGrant(request=request, client=known, rs=audience_rs, scope=scope, profile=profile)


def _pop_binding(
    config: AuthzServerConfig,
    grant: TokenGrant,
    token_key: Key,
    random_bytes: RandomBytes,
) -> PopBinding:
    request = grant.request
    if request.dpop_jkt is not None:
        return PopBinding(
            cnf=CnfJkt(request.dpop_jkt), encrypt=False, cnf_id=b64u_decode(request.dpop_jkt)
        )
    if request.tls_x5t is not None:
        return PopBinding(
            cnf=CnfX5tS256(request.tls_x5t), encrypt=False, cnf_id=b64u_decode(request.tls_x5t)
        )
    profile = as_profile(grant.profile)
    if profile is not None:
        bound = profile.bind(
            PopRequest(
                client_key=request.req_cnf,
                automatic=request.pop_key == "auto",
                random_bytes=random_bytes,
                oscore_salt=config.oscore_salt,
                credential=request.req_credential,
                credential_kid=request.req_credential_kid,
                registered_credential=grant.client.credential,
                rs_credential=grant.rs.credential,
            )
        )
        if bound is not None:
            return bound
    if request.req_cnf is not None:
        return PopBinding(
            cnf=CnfKey(request.req_cnf), encrypt=False, cnf_id=request.req_cnf.cose_thumbprint()
        )
    if request.pop_key == "generated-pair":
        pair = Key.generate_ec2(
            Curve.P_256, kid=random_bytes(4).hex().encode(), alg=Algorithm.ES256
        )
        return PopBinding(
            cnf=CnfKey(pair.public_key()),
            encrypt=False,
            cnf_id=pair.cose_thumbprint(),
            client_key=pair,
        )
    symmetric = Key.symmetric(random_bytes(16), kid=random_bytes(4).hex().encode())
    if request.token_format == _JWT:
        sealed = CnfEncryptedKey(jwe=jwt.seal_key(symmetric, token_key))
        return PopBinding(cnf=sealed, encrypt=False, cnf_id=symmetric.kid, client_key=symmetric)
    return PopBinding(
        cnf=CnfKey(symmetric), encrypt=True, cnf_id=symmetric.kid, client_key=symmetric
    )


def _protect(
    token: AccessToken,
    config: AuthzServerConfig,
    token_key: Key,
    *,
    secret: bool,
    token_format: TokenFormat,
    random_bytes: RandomBytes,
) -> bytes | str:
    if token_format == _JWT:
        if secret:
            return jwt.encode_encrypted(token, token_key, alg="dir", enc="A128GCM")
        return jwt.encode(token, config.signing_key, alg="ES256")
    sign = cwt.Sign1(config.signing_key, Algorithm.ES256)
    # RFC 9770 §3: 61(COSE tag(...)) with every header protected, so that the AS, the
    # client and the RS compute one token hash for the token revocation list.
    protection: cwt.Protection = sign
    if secret:
        encrypt = cwt.Encrypt0(token_key, Algorithm.AES_CCM_16_64_128)
        protection = cwt.Nested(sign, encrypt) if config.nested else encrypt
    return cwt.encode(token, protection, random_bytes=random_bytes, cwt_tag=True, protect_all=True)


def mint_token(
    config: AuthzServerConfig,
    grant: TokenGrant,
    *,
    token_key: Key,
    now: int,
    random_bytes: RandomBytes,
    sequence: int | None = None,
) -> TokenResponse:
    """Make the token of ``grant`` and the answer (RFC 9200 §5.8.2); records nothing.

    ``token_key`` is the RS's current token key (RFC 9200 §6.1), parsed;
    ``sequence`` the RS's next sequence number when :attr:`TokenGrant.needs_sequence`
    (RFC 9200 §5.10.3), else ``None``. The caller records
    :attr:`TokenResponse.record` before it sends the token.
    """
    if grant.needs_sequence != (sequence is not None):
        raise ValueError("a sequence number is needed exactly for an RS without a clock")
    request, client, rs, scope = grant.request, grant.client, grant.rs, grant.scope
    binding = _pop_binding(config, grant, token_key, random_bytes)

    lifetime = min(request.lifetime or rs.default_lifetime, config.max_lifetime)
    if sequence is None:
        cti = random_bytes(16)
        exp: int | None = now + lifetime
        exi: int | None = None
    else:
        cti, exp, exi = sequence_cti(sequence), None, lifetime
    jwt_client: dict[str, str] = {}
    if request.token_format == _JWT:
        # RFC 9068 §2.2: a JWT access token names its client in ``client_id`` and, for the
        # client credentials grant (no resource owner), in ``sub`` too. CWTs stay small:
        # the RS learns the client through introspection when it needs to.
        jwt_client = {"client_id": client.client_id}
    token = AccessToken(
        iss=config.issuer,
        sub=client.client_id if jwt_client else None,
        aud=(rs.audience,),
        iat=now,
        exp=exp,
        exi=exi,
        cti=cti,
        scope=scope,
        cnf=binding.cnf,
        ace_profile=grant.profile,
        extra={**jwt_client, **binding.claims},
    )
    encoded = _protect(
        token,
        config,
        token_key,
        secret=binding.encrypt,
        token_format=request.token_format,
        random_bytes=random_bytes,
    )
    record = IssuedToken(
        cti=record_cti(rs.audience, cti, sequenced=sequence is not None),
        client_id=client.client_id,
        audience=rs.audience,
        scope=str(scope),
        format=request.token_format,
        iat=now,
        exp=exp,
        exi=exi,
        sequence=sequence,
        cnf_id=binding.cnf_id,
        token_hash=trl.response_token_hash(encoded),
    )
    return TokenResponse(
        access_token=encoded,
        expires_in=lifetime,
        token=token,
        scope=scope,
        scope_changed=request.scope is not None and str(scope) != request.scope,
        record=record,
        ace_profile=grant.profile,
        osc=binding.osc,
        client_key=binding.client_key,
        rs_cnf=binding.rs_cnf,
        parameters=binding.parameters,
    )


# ---- introspection (RFC 9200 §5.9, RFC 7662) ---------------------------------------------------


@dataclass(frozen=True)
class IntrospectionResult:
    """An introspection answer: ``active`` and, when active, the token's claims."""

    active: bool
    token: AccessToken | None = field(default=None, repr=False)
    record: IssuedToken | None = None

    def to_cbor_map(self) -> dict[int, object]:
        """The CBOR response of RFC 9200 §5.9.2 (abbreviations of §8.12)."""
        if not self.active or self.token is None or self.record is None:
            return {IntrospectionParameter.ACTIVE.value: False}
        claims = self.token.to_cwt_claims()
        out: dict[int, object] = {IntrospectionParameter.ACTIVE.value: True}
        for name in ("ISS", "AUD", "EXP", "IAT", "CTI", "CNF", "SCOPE", "ACE_PROFILE", "EXI"):
            number = IntrospectionParameter[name].value
            if number in claims:
                out[number] = claims[number]
        out[IntrospectionParameter.CLIENT_ID.value] = self.record.client_id
        out[IntrospectionParameter.TOKEN_TYPE.value] = int(TokenType.POP)  # RFC 9200 §8.7
        return out

    def to_json(self) -> dict[str, Any]:
        """The JSON response of RFC 7662 §2.2, with ``cnf`` (RFC 7800 §3)."""
        if not self.active or self.token is None or self.record is None:
            return {"active": False}
        out: dict[str, Any] = {"active": True, **_json_claims(self.token)}
        out["client_id"] = self.record.client_id
        out["token_type"] = _token_type(self.token)
        return out


def _json_claims(token: AccessToken) -> dict[str, Any]:
    try:
        return token.to_jwt_claims()
    except KeyboundError:
        # a CWT cnf without a JSON form: keep the rest
        return token.replace(cnf=None).to_jwt_claims()


def on_record_as(
    config: AuthzServerConfig, token: bytes | str, keys: Sequence[Key]
) -> tuple[AccessToken, bytes] | None:
    """Decode ``token`` for introspection: the token and the key it is recorded under.

    ``keys`` are every key a token of this AS may be protected with: the AS's
    public key and each RS's token keys (:class:`~keybound.coap.authz_service.KeyRing`).
    ``None`` when the token does not decode, was not issued by this AS, or
    names no ``cti`` or audience: it is then inactive without a look at the record.
    """
    try:
        if isinstance(token, bytes) and token[:1] not in (b"e",):
            decoded = cwt.decode(token, list(keys)).token
        else:
            decoded = jwt.decode(token, list(keys)).token
    except KeyboundError:
        return None
    if decoded.iss != config.issuer or decoded.cti is None or not decoded.aud:
        return None
    try:
        key = record_cti(decoded.aud[0], decoded.cti, sequenced=decoded.exi is not None)
    except KeyboundError:
        return None
    return decoded, key


def introspection_result(
    decoded: AccessToken,
    record: IssuedToken | None,
    *,
    now: int,
    audiences: Sequence[str] | None = None,
) -> IntrospectionResult:
    """Whether a decoded token is active, given its record (RFC 7662 §2.2, RFC 9200 §5.9.2).

    Inactive when the token is not on record, is revoked or has expired.
    ``audiences`` restricts the answer to tokens for those audiences (an RS
    asking about tokens of another RS learns only ``active: false``, RFC 7662 §4).
    """
    audience = decoded.aud[0]
    if record is None or record.revoked or record.audience != audience:
        return IntrospectionResult(active=False)
    if record.exp is not None and record.exp <= now:
        return IntrospectionResult(active=False)
    if audiences is not None and audience not in audiences:
        return IntrospectionResult(active=False)
    return IntrospectionResult(active=True, token=decoded, record=record)
