"""The ``osc`` confirmation method of the OSCORE profile (RFC 9203 §3.2.1): OSCORE input material.

:class:`OscoreInputMaterial` is carried in ``cnf`` of the token response and of the
token, as a CBOR map (:meth:`~OscoreInputMaterial.to_cbor_map`) or, for a JWT, as a
JSON object (:meth:`~OscoreInputMaterial.to_dict`).

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
"""

from __future__ import annotations

import base64
import binascii
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from cryptography.hazmat.primitives import hashes

from .errors import InvalidRequest, UnsupportedPopKey
from .numbers.cose_algorithms import HKDF_SHA256, OSCORE_DEFAULT_AEAD, Algorithm
from .numbers.oscore_input import OscoreParameter
from .records import frozen_record

#: The only OSCORE version (RFC 8613 §5.4).
OSCORE_VERSION = 1
#: Bounds on the byte-string parameters of the input material.
MIN_MASTER_SECRET_BYTES = 16
MAX_MASTER_SECRET_BYTES = 64
MAX_MATERIAL_FIELD_BYTES = 64

#: HKDF algorithms keybound implements, keyed by the HMAC algorithm value (RFC 9203 §3.2.1).
HKDF_HASHES: dict[int, type[hashes.HashAlgorithm]] = {HKDF_SHA256: hashes.SHA256}
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
#: The parameters' labels as plain integers (an IntEnum member is a slower class lookup).
_ID = int(OscoreParameter.ID)
_VERSION = int(OscoreParameter.VERSION)
_MS = int(OscoreParameter.MS)
_HKDF = int(OscoreParameter.HKDF)
_ALG = int(OscoreParameter.ALG)
_SALT = int(OscoreParameter.SALT)
_CONTEXT_ID = int(OscoreParameter.CONTEXT_ID)

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


def aead_algorithm(value: object, name: str = "alg") -> Algorithm:
    """The AEAD algorithm named by an integer or a registry name (RFC 9203 §3.2.1)."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise InvalidRequest(
            f"OSCORE input material: {name} must be an integer or a text string", claim=name
        )
    try:
        alg = Algorithm.from_id(value) if isinstance(value, int) else Algorithm.from_name(value)
    except KeyError:
        alg = None
    if alg is not None and alg.kind == "aead" and value in (alg.id, alg.value.name):
        return alg
    raise UnsupportedPopKey(f"OSCORE AEAD algorithm {value!r} is not supported", claim=name)


def hkdf_algorithm(value: object, name: str = "hkdf") -> int:
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
    if value not in HKDF_HASHES:
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
            hkdf_algorithm(self.hkdf)
        if self.alg is not None:
            if not isinstance(self.alg, int) or isinstance(self.alg, bool):
                raise InvalidRequest("OSCORE input material: alg must be an integer", claim="alg")
            aead_algorithm(self.alg)
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
        return aead_algorithm(OSCORE_DEFAULT_AEAD if self.alg is None else self.alg)

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
        """Validate a decoded CBOR map (RFC 9203 §3.2.1); errors name the parameter.

        Each parameter is checked once, here, in the order :meth:`__post_init__`
        would check it after the map's own checks, so the object is made without
        running them a second time.
        """
        if type(m) is not dict and not isinstance(m, Mapping):  # a dict skips the ABC check
            raise InvalidRequest("OSCORE input material must be a CBOR map", claim="osc")
        for key in m:
            if isinstance(key, bool) or not isinstance(key, int) or key not in _PARAMETER_NAMES:
                raise InvalidRequest(
                    f"OSCORE input material: unrecognised parameter {key!r}", claim="osc"
                )
        if _MS not in m:
            raise InvalidRequest("OSCORE input material: ms is missing", claim="ms")
        if _ID not in m:
            raise InvalidRequest("OSCORE input material: id is missing", claim="id")
        version = m.get(_VERSION)
        if version is not None and (isinstance(version, bool) or not isinstance(version, int)):
            raise InvalidRequest(
                "OSCORE input material: version must be an integer", claim="version"
            )
        id_ = _bytes_param(m[_ID], "id", low=0, high=MAX_MATERIAL_FIELD_BYTES)
        ms = _bytes_param(m[_MS], "ms", low=MIN_MASTER_SECRET_BYTES, high=MAX_MASTER_SECRET_BYTES)
        hkdf = m.get(_HKDF)
        if hkdf is not None:
            hkdf = hkdf_algorithm(hkdf)
        alg = m.get(_ALG)
        if alg is not None:
            alg = aead_algorithm(alg).id
        if version is not None and version != OSCORE_VERSION:
            raise UnsupportedPopKey(f"OSCORE version {version} is not supported", claim="version")
        salt = m.get(_SALT)
        if salt is not None:
            _bytes_param(salt, "salt", low=0, high=MAX_MATERIAL_FIELD_BYTES)
        context_id = m.get(_CONTEXT_ID)
        if context_id is not None:
            _bytes_param(context_id, "contextId", low=0, high=MAX_MATERIAL_FIELD_BYTES)
        return frozen_record(
            cls,
            id=id_,
            ms=ms,
            version=version,
            hkdf=hkdf,
            alg=alg,
            salt=salt,
            context_id=context_id,
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
            hkdf=None if hkdf is None else hkdf_algorithm(hkdf),
            alg=None if alg is None else aead_algorithm(alg).id,
            salt=None if salt is None else _b64_decode(salt, "salt"),
            context_id=None if context_id is None else _b64_decode(context_id, "contextId"),
        )


__all__ = [
    "HKDF_HASHES",
    "MAX_MASTER_SECRET_BYTES",
    "MAX_MATERIAL_FIELD_BYTES",
    "MIN_MASTER_SECRET_BYTES",
    "OSCORE_VERSION",
    "OscoreInputMaterial",
    "aead_algorithm",
    "hkdf_algorithm",
]
