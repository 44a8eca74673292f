"""The OSCORE profile of ACE (RFC 9203): input material, ``/authz-info`` payloads, key setup.

Three pieces, all pure functions of their inputs:

* :class:`OscoreInputMaterial`, the ``osc`` confirmation method of RFC 9203 §3.2.1,
  carried in ``cnf`` of the token response and of the token, as a CBOR map
  (:meth:`~OscoreInputMaterial.to_cbor_map`) or, for a JWT, as a JSON object
  (:meth:`~OscoreInputMaterial.to_dict`).
* :class:`AuthzInfoRequest` and :class:`AuthzInfoResponse`, the payloads the client
  and the RS exchange on ``/authz-info`` (RFC 9203 §4.1, §4.2).
* :func:`derive_context_parameters` (RFC 9203 §4.3) and :func:`derive_keys`
  (RFC 8613 §3.2.1), which turn the material, both nonces and both Recipient IDs
  into an OSCORE Security Context.

Decisions where the RFCs leave room, each checked on decoding and on construction:

* ``id`` and ``ms`` are required: the AS MUST send both (RFC 9203 §3.2).
* ``hkdf`` names an HMAC algorithm of the "COSE Algorithms" registry (RFC 9203
  §3.2.1); keybound implements HMAC 256/256 (5, HKDF SHA-256), the OSCORE default.
  ``alg`` must be one of the AEAD algorithms of :class:`Algorithm`. Integers and
  the registry's case-sensitive names are both accepted. A well-formed value that
  keybound cannot use raises :class:`~keybound.core.errors.UnsupportedPopKey`
  (a COSE direct+HKDF value such as -10 in ``hkdf`` is named as that mistake).
* ``version`` must be 1, the only OSCORE version (RFC 8613 §5.4); any other is
  unsupported.
* Unrecognised parameters are refused with 4.00 (RFC 9203 §4.2).
* The Master Secret is 16 to 64 bytes; ``id``, ``salt`` and ``contextId`` at most
  64 bytes.
* Nonces are 8 to 32 bytes: RFC 9203 §4.1 and §4.2 recommend 64-bit random nonces,
  keybound generates 8 bytes and refuses shorter ones, since they carry the
  freshness of the derived keys.
* Recipient IDs are at most ``nonce length - 6`` bytes for the AEAD in use
  (RFC 8613 §3.3: 7 bytes for AES-CCM-16-64-128); on ``/authz-info``, before the
  algorithm is known, at most 7 bytes, the largest any supported AEAD allows.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from . import cbor
from .errors import DecodeError, InvalidRequest, UnsupportedPopKey
from .numbers.ace_parameters import AceParameter
from .numbers.cose_algorithms import HKDF_SHA256, OSCORE_DEFAULT_AEAD, Algorithm
from .numbers.oscore_input import OscoreParameter

#: The only OSCORE version (RFC 8613 §5.4).
OSCORE_VERSION = 1
#: Bounds on the byte-string parameters of the input material.
MIN_MASTER_SECRET_BYTES = 16
MAX_MASTER_SECRET_BYTES = 64
MAX_MATERIAL_FIELD_BYTES = 64
#: Bounds on N1 and N2 (RFC 9203 §4.1, §4.2 recommend 8 bytes).
MIN_NONCE_BYTES = 8
MAX_NONCE_BYTES = 32
#: The nonce length keybound generates.
NONCE_BYTES = 8
#: Largest OSCORE Sender/Recipient ID of any supported AEAD (RFC 8613 §3.3: 13 - 6).
MAX_RECIPIENT_ID_BYTES = 7
#: Bound on the access token carried in an ``/authz-info`` request.
MAX_ACCESS_TOKEN_BYTES = 8 * 1024
#: Bound on a whole ``/authz-info`` payload.
MAX_AUTHZ_INFO_PAYLOAD_BYTES = MAX_ACCESS_TOKEN_BYTES + 256

#: HKDF algorithms keybound implements, keyed by the HMAC algorithm value (RFC 9203 §3.2.1).
_HKDF_HASHES: dict[int, type[hashes.HashAlgorithm]] = {HKDF_SHA256: hashes.SHA256}
#: COSE direct+HKDF values that are sometimes put in ``hkdf`` by mistake.
_DIRECT_HKDF_VALUES = frozenset({-10, -11, -12, -13})

_PARAMETER_NAMES: dict[int, str] = {
    OscoreParameter.ID: "id",
    OscoreParameter.VERSION: "version",
    OscoreParameter.MS: "ms",
    OscoreParameter.HKDF: "hkdf",
    OscoreParameter.ALG: "alg",
    OscoreParameter.SALT: "salt",
    OscoreParameter.CONTEXT_ID: "contextId",
}
_JSON_NAMES = frozenset(_PARAMETER_NAMES.values())

_BASE64URL = re.compile(r"[A-Za-z0-9_-]*={0,2}")
_BASE64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")


# ---- helpers ------------------------------------------------------------------------------


def _bytes_param(value: object, name: str, *, low: int, high: int) -> bytes:
    if not isinstance(value, bytes):
        raise InvalidRequest(f"OSCORE input material: {name} must be a byte string", claim=name)
    if not low <= len(value) <= high:
        raise InvalidRequest(
            f"OSCORE input material: {name} must be {low} to {high} bytes, not {len(value)}",
            claim=name,
        )
    return value


def _aead(value: object, name: str = "alg") -> Algorithm:
    """The AEAD algorithm named by an integer or a registry name (RFC 9203 §3.2.1)."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise InvalidRequest(
            f"OSCORE input material: {name} must be an integer or a text string", claim=name
        )
    for alg in Algorithm:
        if alg.kind == "aead" and value in (alg.id, alg.value.name):
            return alg
    raise UnsupportedPopKey(f"OSCORE AEAD algorithm {value!r} is not supported", claim=name)


def _hkdf(value: object, name: str = "hkdf") -> int:
    """The HMAC algorithm value of the HKDF (RFC 9203 §3.2.1), checked against the allow-list."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise InvalidRequest(
            f"OSCORE input material: {name} must be an integer or a text string", claim=name
        )
    if isinstance(value, str):
        for alg in Algorithm:
            if alg.kind == "mac" and alg.value.name == value:
                value = alg.id
                break
        else:
            raise UnsupportedPopKey(f"OSCORE HKDF algorithm {value!r} is not supported", claim=name)
    if value in _DIRECT_HKDF_VALUES:
        raise UnsupportedPopKey(
            f"OSCORE hkdf {value} is a COSE direct+HKDF value; hkdf names an HMAC algorithm "
            f"(HMAC 256/256 is {HKDF_SHA256})",
            claim=name,
        )
    if value not in _HKDF_HASHES:
        raise UnsupportedPopKey(f"OSCORE HKDF algorithm {value} is not supported", claim=name)
    return value


def _b64_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64_decode(value: object, name: str) -> bytes:
    """Decode base64url or base64, padding optional (RFC 9203 §3.2.1 says "base64-encoded")."""
    if not isinstance(value, str):
        raise InvalidRequest(f"OSCORE input material: {name} must be a base64 string", claim=name)
    if len(value) > 4 * MAX_MASTER_SECRET_BYTES:
        raise InvalidRequest(f"OSCORE input material: {name} is too long", claim=name)
    if _BASE64URL.fullmatch(value):
        alphabet = b"-_"
    elif _BASE64.fullmatch(value):
        alphabet = b"+/"
    else:
        raise InvalidRequest(f"OSCORE input material: {name} is not base64", claim=name)
    stripped = value.rstrip("=")
    if len(stripped) % 4 == 1:
        raise InvalidRequest(f"OSCORE input material: {name} is not base64", claim=name)
    try:
        return base64.b64decode(stripped + "=" * (-len(stripped) % 4), altchars=alphabet)
    except (binascii.Error, ValueError) as exc:
        raise InvalidRequest(f"OSCORE input material: {name} is not base64", claim=name) from exc


# ---- OSCORE input material (RFC 9203 §3.2.1) ------------------------------------------------


@dataclass(frozen=True, eq=False)
class OscoreInputMaterial:
    """An OSCORE_Input_Material object (RFC 9203 §3.2.1).

    ``None`` means absent; the OSCORE defaults then apply (RFC 8613 §3.2):
    version 1, HKDF SHA-256 (``hkdf`` 5), AES-CCM-16-64-128 (``alg`` 10), an
    empty salt and no ID Context. ``alg`` and ``hkdf`` hold COSE integer values.
    """

    id: bytes
    ms: bytes = field(repr=False)
    version: int | None = None
    hkdf: int | None = None
    alg: int | None = None
    salt: bytes | None = None
    context_id: bytes | None = None

    def __post_init__(self) -> None:
        _bytes_param(self.id, "id", low=0, high=MAX_MATERIAL_FIELD_BYTES)
        _bytes_param(self.ms, "ms", low=MIN_MASTER_SECRET_BYTES, high=MAX_MASTER_SECRET_BYTES)
        if self.version is not None:
            if isinstance(self.version, bool) or not isinstance(self.version, int):
                raise InvalidRequest(
                    "OSCORE input material: version must be an integer", claim="version"
                )
            if self.version != OSCORE_VERSION:
                raise UnsupportedPopKey(
                    f"OSCORE version {self.version} is not supported", claim="version"
                )
        if self.hkdf is not None:
            if not isinstance(self.hkdf, int) or isinstance(self.hkdf, bool):
                raise InvalidRequest("OSCORE input material: hkdf must be an integer", claim="hkdf")
            _hkdf(self.hkdf)
        if self.alg is not None:
            if not isinstance(self.alg, int) or isinstance(self.alg, bool):
                raise InvalidRequest("OSCORE input material: alg must be an integer", claim="alg")
            _aead(self.alg)
        if self.salt is not None:
            _bytes_param(self.salt, "salt", low=0, high=MAX_MATERIAL_FIELD_BYTES)
        if self.context_id is not None:
            _bytes_param(self.context_id, "contextId", low=0, high=MAX_MATERIAL_FIELD_BYTES)

    def _public(self) -> tuple[object, ...]:
        return (self.id, self.version, self.hkdf, self.alg, self.salt, self.context_id)

    def __eq__(self, other: object) -> bool:
        """Equality; the Master Secret is compared in constant time."""
        if not isinstance(other, OscoreInputMaterial):
            return NotImplemented
        return hmac.compare_digest(self.ms, other.ms) and self._public() == other._public()

    def __hash__(self) -> int:
        return hash(self._public())

    @property
    def aead(self) -> Algorithm:
        """The AEAD algorithm, the default AES-CCM-16-64-128 if absent."""
        return _aead(OSCORE_DEFAULT_AEAD if self.alg is None else self.alg)

    @property
    def hkdf_value(self) -> int:
        """The HMAC algorithm value of the HKDF, the default HMAC 256/256 (5) if absent."""
        return HKDF_SHA256 if self.hkdf is None else self.hkdf

    # -- CBOR --

    def to_cbor_map(self) -> dict[int, object]:
        """The CBOR map of RFC 9203 §3.2.1, absent parameters omitted."""
        out: dict[int, object] = {OscoreParameter.ID.value: self.id}
        if self.version is not None:
            out[OscoreParameter.VERSION.value] = self.version
        out[OscoreParameter.MS.value] = self.ms
        optional: tuple[tuple[OscoreParameter, object], ...] = (
            (OscoreParameter.HKDF, self.hkdf),
            (OscoreParameter.ALG, self.alg),
            (OscoreParameter.SALT, self.salt),
            (OscoreParameter.CONTEXT_ID, self.context_id),
        )
        for label, value in optional:
            if value is not None:
                out[label.value] = value
        return out

    @classmethod
    def from_cbor_map(cls, m: object) -> OscoreInputMaterial:
        """Validate a decoded CBOR map (RFC 9203 §3.2.1); errors name the parameter."""
        if not isinstance(m, Mapping):
            raise InvalidRequest("OSCORE input material must be a CBOR map", claim="osc")
        for key in m:
            if isinstance(key, bool) or not isinstance(key, int) or key not in _PARAMETER_NAMES:
                raise InvalidRequest(
                    f"OSCORE input material: unrecognised parameter {key!r}", claim="osc"
                )
        if OscoreParameter.MS not in m:
            raise InvalidRequest("OSCORE input material: ms is missing", claim="ms")
        if OscoreParameter.ID not in m:
            raise InvalidRequest("OSCORE input material: id is missing", claim="id")
        version = m.get(OscoreParameter.VERSION)
        if version is not None and (isinstance(version, bool) or not isinstance(version, int)):
            raise InvalidRequest(
                "OSCORE input material: version must be an integer", claim="version"
            )
        hkdf = m.get(OscoreParameter.HKDF)
        alg = m.get(OscoreParameter.ALG)
        return cls(
            id=_bytes_param(m[OscoreParameter.ID], "id", low=0, high=MAX_MATERIAL_FIELD_BYTES),
            ms=_bytes_param(
                m[OscoreParameter.MS],
                "ms",
                low=MIN_MASTER_SECRET_BYTES,
                high=MAX_MASTER_SECRET_BYTES,
            ),
            version=version,
            hkdf=None if hkdf is None else _hkdf(hkdf),
            alg=None if alg is None else _aead(alg).id,
            salt=m.get(OscoreParameter.SALT),
            context_id=m.get(OscoreParameter.CONTEXT_ID),
        )

    # -- JSON (a JWT ``cnf``) --

    def to_dict(self) -> dict[str, object]:
        """The JSON object of RFC 9203 §3.2.1: base64url byte strings, algorithm names."""
        out: dict[str, object] = {"id": _b64_encode(self.id)}
        if self.version is not None:
            out["version"] = self.version
        out["ms"] = _b64_encode(self.ms)
        if self.hkdf is not None:
            out["hkdf"] = next(a.value.name for a in Algorithm if a.id == self.hkdf)
        if self.alg is not None:
            out["alg"] = self.aead.value.name
        if self.salt is not None:
            out["salt"] = _b64_encode(self.salt)
        if self.context_id is not None:
            out["contextId"] = _b64_encode(self.context_id)
        return out

    @classmethod
    def from_dict(cls, d: object) -> OscoreInputMaterial:
        """Validate the JSON form; byte strings may be base64url or base64, padded or not."""
        if not isinstance(d, Mapping):
            raise InvalidRequest("OSCORE input material must be a JSON object", claim="osc")
        for key in d:
            if key not in _JSON_NAMES:
                raise InvalidRequest(
                    f"OSCORE input material: unrecognised parameter {key!r}", claim="osc"
                )
        if "ms" not in d:
            raise InvalidRequest("OSCORE input material: ms is missing", claim="ms")
        if "id" not in d:
            raise InvalidRequest("OSCORE input material: id is missing", claim="id")
        version = d.get("version")
        if version is not None and (isinstance(version, bool) or not isinstance(version, int)):
            raise InvalidRequest(
                "OSCORE input material: version must be an integer", claim="version"
            )
        hkdf = d.get("hkdf")
        alg = d.get("alg")
        salt = d.get("salt")
        context_id = d.get("contextId")
        return cls(
            id=_b64_decode(d["id"], "id"),
            ms=_b64_decode(d["ms"], "ms"),
            version=version,
            hkdf=None if hkdf is None else _hkdf(hkdf),
            alg=None if alg is None else _aead(alg).id,
            salt=None if salt is None else _b64_decode(salt, "salt"),
            context_id=None if context_id is None else _b64_decode(context_id, "contextId"),
        )


# ---- /authz-info payloads (RFC 9203 §4.1, §4.2) -------------------------------------------


def _check_nonce(value: object, name: str) -> bytes:
    if not isinstance(value, bytes):
        raise InvalidRequest(f"{name} must be a byte string", claim=name)
    if not MIN_NONCE_BYTES <= len(value) <= MAX_NONCE_BYTES:
        raise InvalidRequest(
            f"{name} must be {MIN_NONCE_BYTES} to {MAX_NONCE_BYTES} bytes, not {len(value)}",
            claim=name,
        )
    return value


def _check_recipient_id(value: object, name: str, limit: int = MAX_RECIPIENT_ID_BYTES) -> bytes:
    if not isinstance(value, bytes):
        raise InvalidRequest(f"{name} must be a byte string", claim=name)
    if len(value) > limit:
        raise InvalidRequest(f"{name} must be at most {limit} bytes, not {len(value)}", claim=name)
    return value


def _decode_map(payload: bytes, what: str) -> Mapping[object, object]:
    value = cbor.loads(payload, max_size=MAX_AUTHZ_INFO_PAYLOAD_BYTES, max_depth=4)
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


@dataclass(frozen=True)
class AuthzInfoRequest:
    """The client's ``/authz-info`` payload (RFC 9203 §4.1): token, N1 and ID1.

    When the request updates access rights it is OSCORE-protected and carries the
    token alone; ``nonce1`` and ``client_recipient_id`` are then ``None``.
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
        if self.nonce1 is not None:
            _check_nonce(self.nonce1, "nonce1")
            _check_recipient_id(self.client_recipient_id, "ace_client_recipientId")

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
        """Validate a decoded payload.

        ``protected`` says the request arrived under an existing OSCORE context, an
        update of access rights: nonce and identifier are then ignored (RFC 9203 §4.2).
        Otherwise both are required (RFC 9203 §4.1.1, §4.1.2).
        """
        _refuse_unknown(m, _REQUEST_KEYS, "authz-info request")
        if AceParameter.ACCESS_TOKEN not in m:
            raise InvalidRequest("authz-info request: access_token is missing")
        token = m[AceParameter.ACCESS_TOKEN]
        if not isinstance(token, bytes):
            raise InvalidRequest("access_token must be a byte string")
        if protected:
            return cls(access_token=token)
        if AceParameter.NONCE1 not in m:
            raise InvalidRequest("authz-info request: nonce1 is missing", claim="nonce1")
        if AceParameter.ACE_CLIENT_RECIPIENTID not in m:
            raise InvalidRequest(
                "authz-info request: ace_client_recipientId is missing",
                claim="ace_client_recipientId",
            )
        return cls(
            access_token=token,
            nonce1=_check_nonce(m[AceParameter.NONCE1], "nonce1"),
            client_recipient_id=_check_recipient_id(
                m[AceParameter.ACE_CLIENT_RECIPIENTID], "ace_client_recipientId"
            ),
        )

    @classmethod
    def decode(cls, payload: bytes, *, protected: bool = False) -> AuthzInfoRequest:
        """Decode and validate an ``application/ace+cbor`` payload (bounded CBOR)."""
        return cls.from_cbor_map(_decode_map(payload, "authz-info request"), protected=protected)


@dataclass(frozen=True)
class AuthzInfoResponse:
    """The RS's 2.01 (Created) ``/authz-info`` payload (RFC 9203 §4.2): N2 and ID2."""

    nonce2: bytes
    server_recipient_id: bytes

    def __post_init__(self) -> None:
        _check_nonce(self.nonce2, "nonce2")
        _check_recipient_id(self.server_recipient_id, "ace_server_recipientId")

    def to_cbor_map(self) -> dict[int, object]:
        return {
            AceParameter.NONCE2.value: self.nonce2,
            AceParameter.ACE_SERVER_RECIPIENTID.value: self.server_recipient_id,
        }

    def encode(self) -> bytes:
        """The ``application/ace+cbor`` payload (deterministic CBOR)."""
        return cbor.dumps(self.to_cbor_map())

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
            nonce2=_check_nonce(m[AceParameter.NONCE2], "nonce2"),
            server_recipient_id=_check_recipient_id(
                m[AceParameter.ACE_SERVER_RECIPIENTID], "ace_server_recipientId"
            ),
        )

    @classmethod
    def decode(cls, payload: bytes) -> AuthzInfoResponse:
        """Decode and validate an ``application/ace+cbor`` payload (bounded CBOR)."""
        return cls.from_cbor_map(_decode_map(payload, "authz-info response"))


# ---- OSCORE setup (RFC 9203 §4.3) and key derivation (RFC 8613 §3.2) ------------------------


@dataclass(frozen=True, eq=False)
class DerivedContext:
    """The parameters of an OSCORE Security Context (RFC 8613 §3.2), before key derivation."""

    master_secret: bytes = field(repr=False)
    master_salt: bytes
    id_context: bytes | None
    sender_id: bytes
    recipient_id: bytes
    alg: int = OSCORE_DEFAULT_AEAD
    hkdf: int = HKDF_SHA256

    def __post_init__(self) -> None:
        aead = _aead(self.alg)
        _hkdf(self.hkdf)
        for name in ("master_secret", "master_salt", "sender_id", "recipient_id"):
            if not isinstance(getattr(self, name), bytes):
                raise InvalidRequest(f"{name} must be a byte string")
        if self.id_context is not None and not isinstance(self.id_context, bytes):
            raise InvalidRequest("id_context must be a byte string")
        limit = aead.iv_bytes - 6
        _check_recipient_id(self.sender_id, "sender_id", limit)
        _check_recipient_id(self.recipient_id, "recipient_id", limit)
        if self.sender_id == self.recipient_id:
            raise InvalidRequest("Sender ID and Recipient ID must differ")

    def _public(self) -> tuple[object, ...]:
        return (
            self.master_salt,
            self.id_context,
            self.sender_id,
            self.recipient_id,
            self.alg,
            self.hkdf,
        )

    def __eq__(self, other: object) -> bool:
        """Equality; the Master Secret is compared in constant time."""
        if not isinstance(other, DerivedContext):
            return NotImplemented
        same_secret = hmac.compare_digest(self.master_secret, other.master_secret)
        return same_secret and self._public() == other._public()

    def __hash__(self) -> int:
        return hash(self._public())

    @property
    def aead(self) -> Algorithm:
        return _aead(self.alg)


class DerivedKeys(NamedTuple):
    """Sender Key, Recipient Key and Common IV (RFC 8613 §3.2.1)."""

    sender_key: bytes
    recipient_key: bytes
    common_iv: bytes

    def __repr__(self) -> str:
        return f"DerivedKeys(<{len(self.sender_key)}-byte keys>, common_iv={self.common_iv.hex()})"


def build_master_salt(salt: bytes | None, nonce1: bytes, nonce2: bytes) -> bytes:
    """Master Salt = salt | N1 | N2, each encoded as a CBOR byte string (RFC 9203 §4.3).

    An absent salt is the empty byte string, so it contributes ``0x40``.
    """
    return b"".join(cbor.dumps(part) for part in (salt or b"", nonce1, nonce2))


def derive_context_parameters(
    material: OscoreInputMaterial,
    nonce1: bytes,
    nonce2: bytes,
    client_recipient_id: bytes,
    server_recipient_id: bytes,
    role: Literal["client", "rs"] = "client",
) -> DerivedContext:
    """The OSCORE Security Context parameters of RFC 9203 §4.3.

    ``client_recipient_id`` is ID1 (sent by the client), ``server_recipient_id`` ID2
    (sent by the RS). The client's Sender ID is ID2 and its Recipient ID is ID1; the
    RS has the reverse. ID1 == ID2 is refused: both keys would be equal.
    """
    if role not in ("client", "rs"):
        raise ValueError(f"role must be 'client' or 'rs', not {role!r}")
    _check_nonce(nonce1, "nonce1")
    _check_nonce(nonce2, "nonce2")
    aead = material.aead
    limit = aead.iv_bytes - 6
    id1 = _check_recipient_id(client_recipient_id, "ace_client_recipientId", limit)
    id2 = _check_recipient_id(server_recipient_id, "ace_server_recipientId", limit)
    if id1 == id2:
        raise InvalidRequest("ace_client_recipientId equals ace_server_recipientId")
    sender_id, recipient_id = (id2, id1) if role == "client" else (id1, id2)
    return DerivedContext(
        master_secret=material.ms,
        master_salt=build_master_salt(material.salt, nonce1, nonce2),
        id_context=material.context_id,
        sender_id=sender_id,
        recipient_id=recipient_id,
        alg=aead.id,
        hkdf=material.hkdf_value,
    )


def kdf_info(
    id_: bytes, id_context: bytes | None, alg_aead: int, type_: Literal["Key", "IV"], length: int
) -> bytes:
    """The CBOR ``info`` array [id, id_context, alg_aead, type, L] (RFC 8613 §3.2.1)."""
    return cbor.dumps_ordered([id_, id_context, alg_aead, type_, length])


def _hkdf_expand(ctx: DerivedContext, info: bytes, length: int) -> bytes:
    kdf = HKDF(
        algorithm=_HKDF_HASHES[ctx.hkdf](),
        length=length,
        salt=ctx.master_salt,
        info=info,
    )
    return kdf.derive(ctx.master_secret)


def derive_keys(ctx: DerivedContext) -> DerivedKeys:
    """Sender Key, Recipient Key and Common IV by HKDF (RFC 8613 §3.2.1).

    The keys use the Sender/Recipient ID as ``id`` and the AEAD key length as ``L``;
    the Common IV uses the empty ``id`` and the AEAD nonce length.
    """
    aead = ctx.aead

    def key(id_: bytes) -> bytes:
        info = kdf_info(id_, ctx.id_context, aead.id, "Key", aead.key_bytes)
        return _hkdf_expand(ctx, info, aead.key_bytes)

    iv_info = kdf_info(b"", ctx.id_context, aead.id, "IV", aead.iv_bytes)
    return DerivedKeys(
        sender_key=key(ctx.sender_id),
        recipient_key=key(ctx.recipient_id),
        common_iv=_hkdf_expand(ctx, iv_info, aead.iv_bytes),
    )


__all__ = [
    "MAX_NONCE_BYTES",
    "MAX_RECIPIENT_ID_BYTES",
    "MIN_MASTER_SECRET_BYTES",
    "MIN_NONCE_BYTES",
    "NONCE_BYTES",
    "OSCORE_VERSION",
    "AuthzInfoRequest",
    "AuthzInfoResponse",
    "DerivedContext",
    "DerivedKeys",
    "OscoreInputMaterial",
    "build_master_salt",
    "derive_context_parameters",
    "derive_keys",
    "kdf_info",
]
