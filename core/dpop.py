"""DPoP proofs (RFC 9449): creating, checking, replay caches and server nonces.

Sans-IO: the current time comes in as ``now`` (seconds since the epoch), and
randomness as a ``random_bytes`` callable from the caller.

- :func:`create_proof` builds a DPoP proof JWT (RFC 9449 §4.2).
- :func:`verify_proof` runs the checks of RFC 9449 §4.3 (and §7.1 for
  protected resources) and returns a :class:`VerifiedProof`, or raises.
- the replay cache protocol and the server nonces live in
  :mod:`keybound.core.dpop_state`, the caches themselves in
  :mod:`keybound.tools.http.replay_cache`.

What a verifier sees again and again is kept in bounded caches: the public
keys of ``jwk`` headers (imported once, with their RFC 7638 thumbprints;
:data:`KEY_CACHE_SIZE`) and normalised ``htu`` values (:data:`HTU_CACHE_SIZE`).
Only successful results are cached, so a refused key or URI is checked anew
each time. ES256, ES384, ES512 and EdDSA signatures are checked with
``cryptography`` directly; RSA ones through joserfc.

Failures of the proof raise :class:`~keybound.core.errors.InvalidDPoPProof`
(``invalid_dpop_proof``), with a description naming the check that failed. A
proof whose key is not the one the access token is bound to raises
:class:`DPoPKeyMismatch`, an ``invalid_token`` error as in the example of
RFC 9449 §7.1 ("Invalid DPoP key binding"). A missing or stale nonce raises
:class:`~keybound.core.errors.UseDPoPNonce` carrying a fresh nonce.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import json
import math
import re
import string
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, OKPKey, RSAKey
from joserfc.jws import JWSRegistry

from .dpop_state import NonceChecker, ReplayCache
from .errors import InvalidDPoPProof, InvalidToken

__all__ = [
    "DEFAULT_ALGS",
    "DEFAULT_IAT_LEEWAY",
    "DEFAULT_IAT_WINDOW",
    "HTU_CACHE_SIZE",
    "KEY_CACHE_SIZE",
    "MAX_JTI_LENGTH",
    "MAX_PROOF_LENGTH",
    "DPoPKeyMismatch",
    "VerifiedProof",
    "access_token_hash",
    "create_proof",
    "jwk_thumbprint",
    "normalize_htu",
    "verify_proof",
]

#: Algorithms accepted by default (RFC 9449 §4.2: asymmetric only).
DEFAULT_ALGS: tuple[str, ...] = ("ES256", "ES384", "EdDSA")
#: Upper bound of a proof in characters, checked before anything is parsed.
MAX_PROOF_LENGTH = 8192
#: Upper bound of ``jti`` in characters (RFC 9449 §11.1 asks to refuse large ones).
MAX_JTI_LENGTH = 128
#: Upper bound of ``htu`` in characters.
MAX_HTU_LENGTH = 2048
#: How long after ``iat`` a proof is accepted, in seconds (RFC 9449 §11.1).
DEFAULT_IAT_WINDOW = 60
#: How far in the future ``iat`` may be, in seconds, for clock offsets (RFC 9449 §11.1).
DEFAULT_IAT_LEEWAY = 5
#: Imported ``jwk`` header keys kept, least recently used dropped first (each a few hundred
#: bytes, an RSA one a few KB).
KEY_CACHE_SIZE = 1024
#: Normalised ``htu`` values kept (each up to :data:`MAX_HTU_LENGTH` characters twice).
HTU_CACHE_SIZE = 512

_PROOF_TYP = "dpop+jwt"

# The asymmetric algorithms this module can check, with the key type and curves
# each needs. "none" and the HMAC algorithms are absent on purpose: they can
# never be put on an allow-list (RFC 9449 §4.2, §4.3 check 5).
_ALG_KEY_TYPES: Mapping[str, tuple[str, frozenset[str]]] = MappingProxyType(
    {
        "ES256": ("EC", frozenset({"P-256"})),
        "ES384": ("EC", frozenset({"P-384"})),
        "ES512": ("EC", frozenset({"P-521"})),
        "EdDSA": ("OKP", frozenset({"Ed25519", "Ed448"})),
        "Ed25519": ("OKP", frozenset({"Ed25519"})),
        "Ed448": ("OKP", frozenset({"Ed448"})),
        "PS256": ("RSA", frozenset()),
        "PS384": ("RSA", frozenset()),
        "PS512": ("RSA", frozenset()),
        "RS256": ("RSA", frozenset()),
        "RS384": ("RSA", frozenset()),
        "RS512": ("RSA", frozenset()),
    }
)
_MIN_RSA_BITS = 2048

# RFC 7638 §3.2: the required members of each key type, which alone make the thumbprint.
_THUMBPRINT_MEMBERS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "EC": ("crv", "kty", "x", "y"),
        "OKP": ("crv", "kty", "x"),
        "RSA": ("e", "kty", "n"),
        "oct": ("k", "kty"),
    }
)
# JWK members that carry private or secret key material (RFC 7518 §6.2.2, §6.3.2, §6.4; RFC 8037).
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})

_B64URL = re.compile(r"[A-Za-z0-9_-]*")
_COMPACT_JWS = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")


class DPoPKeyMismatch(InvalidToken):
    """the DPoP proof's key is not the key the access token is bound to (RFC 9449 §7.1)"""


# ---- helpers: base64url, JSON, RFC 7638, RFC 9449 §4.2 ath ---------------------------------


def _b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_decode(text: str, what: str) -> bytes:
    if _B64URL.fullmatch(text) is None or len(text) % 4 == 1:
        raise InvalidDPoPProof(f"{what} is not base64url without padding")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


_URLSAFE_TO_STANDARD = bytes.maketrans(b"-_", b"+/")


def _b64url_segment(text: str, what: str) -> bytes:
    """:func:`_b64url_decode` of a segment already matched as base64url characters."""
    if len(text) % 4 == 1:
        raise InvalidDPoPProof(f"{what} is not base64url without padding")
    padded = (text + "=" * (-len(text) % 4)).encode("ascii")
    return binascii.a2b_base64(padded.translate(_URLSAFE_TO_STANDARD))


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # dict() does the work in C; only a shorter result means a repeated member.
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise ValueError(f"duplicate member {key!r}")
            seen.add(key)
    return result


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


# One decoder for every proof: json.loads would build one per call.
_JSON = json.JSONDecoder(object_pairs_hook=_no_duplicate_keys, parse_constant=_reject_constant)


def _json_object(segment: str, what: str) -> dict[str, Any]:
    raw = _b64url_segment(segment, what)
    try:
        text = raw.decode("utf-8")
        if text.startswith("\ufeff"):  # as json.loads refuses it
            raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", text, 0)
        value = _JSON.decode(text)
    except (ValueError, RecursionError) as err:
        raise InvalidDPoPProof(f"{what} is not valid JSON: {err}") from err
    if not isinstance(value, dict):
        raise InvalidDPoPProof(f"{what} is not a JSON object")
    return value


def jwk_thumbprint(jwk: Mapping[str, Any]) -> str:
    """The RFC 7638 JWK SHA-256 thumbprint, base64url: the ``jkt`` of RFC 9449 §6.1.

    Only the required members of the key type enter the hash, in lexicographic
    order, without whitespace (RFC 7638 §3.2, §3.3). Raises :class:`ValueError`
    for an unknown ``kty`` or a missing or non-string member.
    """
    kty = jwk.get("kty")
    if not isinstance(kty, str) or kty not in _THUMBPRINT_MEMBERS:
        raise ValueError(f"unsupported JWK key type {kty!r}")
    members: dict[str, str] = {}
    for name in _THUMBPRINT_MEMBERS[kty]:
        value = jwk.get(name)
        if not isinstance(value, str):
            raise ValueError(f"JWK member {name!r} is missing or not a string")
        members[name] = value
    canonical = json.dumps(members, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return _b64url_encode(hashlib.sha256(canonical.encode("utf-8")).digest())


def access_token_hash(access_token: str) -> str:
    """``ath``: base64url of the SHA-256 of the token's ASCII encoding (RFC 9449 §4.2).

    Raises :class:`UnicodeEncodeError` (a :class:`ValueError`) for a non-ASCII token.
    """
    return _b64url_encode(hashlib.sha256(access_token.encode("ascii")).digest())


# ---- htu normalisation (RFC 9449 §4.3, RFC 3986 §6.2.2 and §6.2.3) --------------------------

_UNRESERVED = frozenset(string.ascii_letters + string.digits + "-._~")
_URI_CHARS = _UNRESERVED | frozenset(":/?#[]@!$&'()*+,;=%")
_DEFAULT_PORTS = MappingProxyType({"http": 80, "https": 443})
# A component of these characters only (no "%") is already in normal form.
_NORMAL_COMPONENT = re.compile(r"[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=]*")
_CONTROL_OR_SPACE = re.compile(r"[\x00-\x20\x7f]")


def _normalize_percent_encoding(component: str) -> str:
    """RFC 3986 §6.2.2.1 and §6.2.2.2: upper-case escapes, decode escaped unreserved
    characters; characters a URI cannot hold are UTF-8 percent-encoded (RFC 3987 §3.1)."""
    if _NORMAL_COMPONENT.fullmatch(component) is not None:
        return component
    out: list[str] = []
    i = 0
    while i < len(component):
        char = component[i]
        if char == "%":
            digits = component[i + 1 : i + 3]
            if len(digits) != 2 or not all(d in string.hexdigits for d in digits):
                raise ValueError("malformed percent-encoding")
            decoded = chr(int(digits, 16))
            out.append(decoded if decoded in _UNRESERVED else "%" + digits.upper())
            i += 3
            continue
        if char in _URI_CHARS:
            out.append(char)
        else:
            out.extend(f"%{byte:02X}" for byte in char.encode("utf-8"))
        i += 1
    return "".join(out)


def _remove_dot_segments(path: str) -> str:
    """RFC 3986 §5.2.4, used by §6.2.2.3 path segment normalisation."""
    if "/." not in path and not path.startswith("."):
        return path  # no segment is "." or ".."
    output: list[str] = []
    rest = path
    while rest:
        if rest.startswith("../"):
            rest = rest[3:]
        elif rest.startswith("./") or rest.startswith("/./"):
            rest = rest[2:]
        elif rest == "/.":
            rest = "/"
        elif rest.startswith("/../"):
            rest = rest[3:]
            if output:
                output.pop()
        elif rest == "/..":
            rest = "/"
            if output:
                output.pop()
        elif rest in (".", ".."):
            rest = ""
        else:
            start = 1 if rest.startswith("/") else 0
            end = rest.find("/", start)
            if end == -1:
                end = len(rest)
            output.append(rest[:end])
            rest = rest[end:]
    return "".join(output)


def normalize_htu(uri: str) -> str:
    """The comparable form of an HTTP target URI without query and fragment.

    RFC 9449 §4.3 asks for syntax-based (RFC 3986 §6.2.2) and scheme-based
    (§6.2.3) normalisation before ``htu`` is compared: the scheme and host are
    lower-cased, the default port is dropped, an empty path becomes ``/``,
    percent-encodings are normalised and dot segments removed. Query and
    fragment are dropped (RFC 9449 §4.2). Raises :class:`ValueError` for
    anything that is not an absolute ``http`` or ``https`` URI with a host and
    without user information.
    """
    if len(uri) > MAX_HTU_LENGTH:
        raise ValueError(f"longer than {MAX_HTU_LENGTH} characters")
    if _CONTROL_OR_SPACE.search(uri) is not None:
        raise ValueError("contains whitespace or control characters")
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise ValueError("not an http or https URI")
    if "@" in parts.netloc:
        raise ValueError("user information is not allowed")
    host = parts.hostname
    if not host:
        raise ValueError("no host")
    port = parts.port  # raises ValueError for a port that is not a number in range
    host = _normalize_percent_encoding(host).lower()
    if ":" in host:
        host = f"[{host}]"
    authority = host if port in (None, _DEFAULT_PORTS[scheme]) else f"{host}:{port}"
    path = _remove_dot_segments(_normalize_percent_encoding(parts.path)) or "/"
    return f"{scheme}://{authority}{path}"


#: :func:`normalize_htu` with its successful results kept (bounded, thread-safe).
_cached_htu = functools.lru_cache(maxsize=HTU_CACHE_SIZE)(normalize_htu)


def _strip_query_and_fragment(uri: str) -> str:
    return uri.split("#", 1)[0].split("?", 1)[0]


# ---- keys -----------------------------------------------------------------------------------

PublicKey = ECKey | OKPKey | RSAKey


def _alg_model(alg: str) -> Any:
    # The models are taken from the registry directly: the allow-list is ours,
    # and JWSRegistry.get_alg would warn about "EdDSA" on every call.
    return JWSRegistry.algorithms[alg]


def _check_allow_list(allowed_algs: Collection[str]) -> None:
    for name in allowed_algs:
        if name not in _ALG_KEY_TYPES:
            raise ValueError(f"{name!r} is not an asymmetric JWS algorithm usable for DPoP")


@dataclass(frozen=True)
class _HeaderKey:
    """A ``jwk`` header key as imported once: joserfc's key, the raw key, its thumbprint."""

    jose: PublicKey
    #: the key ``cryptography`` checks EC and OKP signatures with directly
    raw: Any
    #: the required members only, as the header gave them
    public: Mapping[str, str]
    #: RFC 7638 SHA-256 thumbprint (RFC 9449 §6.1 ``jkt``)
    jkt: str


def _import_public_key(kty: str, members: tuple[tuple[str, str], ...]) -> _HeaderKey:
    """Import the public key of ``kty`` with the thumbprint ``members`` (checked by the caller)."""
    public = dict(members)
    key: PublicKey
    try:
        if kty == "EC":
            key = ECKey.import_key(dict(public))
        elif kty == "OKP":
            key = OKPKey.import_key(dict(public))
        else:
            key = RSAKey.import_key(dict(public))
            if key.raw_value.key_size < _MIN_RSA_BITS:
                raise InvalidDPoPProof(f"the RSA key is shorter than {_MIN_RSA_BITS} bits")
    except (JoseError, ValueError, TypeError) as err:
        raise InvalidDPoPProof(f"the jwk header is not a usable public key: {err}") from err
    return _HeaderKey(key, key.raw_value, MappingProxyType(public), jwk_thumbprint(public))


#: :func:`_import_public_key` with its successful imports kept (bounded, thread-safe).
_cached_key = functools.lru_cache(maxsize=KEY_CACHE_SIZE)(_import_public_key)


def _public_key_from_header(jwk: object, alg: str) -> _HeaderKey:
    """Check the ``jwk`` header (RFC 9449 §4.2, §4.3 checks 5 and 7) and import it."""
    if not isinstance(jwk, dict):
        raise InvalidDPoPProof("the jwk header is missing or not a JSON object")
    kty = jwk.get("kty")
    if kty == "oct":
        raise InvalidDPoPProof("the jwk header holds a symmetric (oct) key")
    if not _PRIVATE_MEMBERS.isdisjoint(jwk):
        private = sorted(_PRIVATE_MEMBERS.intersection(jwk))
        raise InvalidDPoPProof(f"the jwk header holds private key material ({', '.join(private)})")
    want_kty, curves = _ALG_KEY_TYPES[alg]
    if kty != want_kty:
        raise InvalidDPoPProof(f"alg {alg} needs a {want_kty} key, the jwk header has {kty!r}")
    members = []
    for name in _THUMBPRINT_MEMBERS[want_kty]:
        value = jwk.get(name)
        if not isinstance(value, str):
            raise InvalidDPoPProof(f"the jwk header lacks the string member {name!r}")
        members.append((name, value))
    if curves and jwk["crv"] not in curves:
        raise InvalidDPoPProof(f"alg {alg} cannot use curve {jwk['crv']!r}")
    return _cached_key(want_kty, tuple(members))


# ECDSA: the hash and the byte length of r and s per algorithm (RFC 7518 §3.4).
_ECDSA: Mapping[str, tuple[ec.ECDSA, int]] = MappingProxyType(
    {
        "ES256": (ec.ECDSA(hashes.SHA256()), 32),
        "ES384": (ec.ECDSA(hashes.SHA384()), 48),
        "ES512": (ec.ECDSA(hashes.SHA512()), 66),
    }
)


def _signature_valid(alg: str, key: _HeaderKey, signing_input: bytes, signature: bytes) -> bool:
    """RFC 9449 §4.3 check 6: the JWS signature (RFC 7515 §5.2) with the header's key."""
    ecdsa = _ECDSA.get(alg)
    if ecdsa is not None:
        # RFC 7518 §3.4: r and s, each as long as the curve's order, big-endian.
        algorithm, size = ecdsa
        if len(signature) != 2 * size:
            return False
        der = encode_dss_signature(
            int.from_bytes(signature[:size], "big"), int.from_bytes(signature[size:], "big")
        )
        try:
            key.raw.verify(der, signing_input, algorithm)
        except InvalidSignature:
            return False
        return True
    if isinstance(key.raw, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        try:
            key.raw.verify(signature, signing_input)
        except InvalidSignature:
            return False
        return True
    model = _alg_model(alg)
    try:
        model.check_key(key.jose)
        return bool(model.verify(signing_input, signature, key.jose))
    except (JoseError, ValueError, TypeError) as err:
        raise InvalidDPoPProof(f"the signature cannot be checked: {err}") from err


# ---- creating proofs (RFC 9449 §4.2) --------------------------------------------------------


def create_proof(
    private_key: ECKey | OKPKey,
    htm: str,
    htu: str,
    *,
    now: int,
    jti: str | None = None,
    access_token: str | None = None,
    nonce: str | None = None,
    alg: str = "ES256",
    random_bytes: Callable[[int], bytes],
) -> str:
    """A DPoP proof JWT for one HTTP request (RFC 9449 §4.2).

    ``htu`` is the request URI; its query and fragment are removed here. The
    ``jti`` defaults to 128 bits from ``random_bytes`` (``secrets.token_bytes``
    or ``os.urandom``), base64url. ``access_token`` adds
    ``ath`` (RFC 9449 §7.1) and ``nonce`` the server-provided nonce (§8, §9).
    """
    if alg not in _ALG_KEY_TYPES:
        raise ValueError(f"{alg!r} is not an asymmetric JWS algorithm usable for DPoP")
    if not private_key.is_private:
        raise ValueError("a DPoP proof is signed with a private key")
    public_jwk = {
        name: value
        for name, value in private_key.as_dict(private=False).items()
        if name in _THUMBPRINT_MEMBERS[_ALG_KEY_TYPES[alg][0]]
    }
    model = _alg_model(alg)
    try:
        model.check_key(private_key)
    except JoseError as err:
        raise ValueError(f"the key cannot sign {alg}: {err}") from err
    header = {"typ": _PROOF_TYP, "alg": alg, "jwk": public_jwk}
    claims: dict[str, Any] = {
        "jti": jti if jti is not None else _b64url_encode(random_bytes(16)),
        "htm": htm,
        "htu": _strip_query_and_fragment(htu),
        "iat": now,
    }
    if access_token is not None:
        claims["ath"] = access_token_hash(access_token)
    if nonce is not None:
        claims["nonce"] = nonce
    signing_input = (
        _b64url_encode(json.dumps(header, separators=(",", ":")).encode("utf-8"))
        + "."
        + _b64url_encode(json.dumps(claims, separators=(",", ":")).encode("utf-8"))
    )
    signature: bytes = model.sign(signing_input.encode("ascii"), private_key)
    return signing_input + "." + _b64url_encode(signature)


# ---- checking proofs (RFC 9449 §4.3) --------------------------------------------------------


@dataclass(frozen=True)
class VerifiedProof:
    """A DPoP proof that passed every check of RFC 9449 §4.3."""

    #: RFC 7638 thumbprint of the proof's key (RFC 9449 §6.1 ``jkt``)
    jkt: str
    jti: str
    iat: int
    htm: str
    #: the normalised ``htu`` (see :func:`normalize_htu`)
    htu: str
    #: all claims of the proof, read-only
    claims: Mapping[str, Any] = field(repr=False)
    #: the public key from the ``jwk`` header, its required members only
    jwk: Mapping[str, str] = field(repr=False, default_factory=dict)


def _split_proof(proof: str, max_length: int) -> tuple[dict[str, Any], dict[str, Any], str]:
    if not isinstance(proof, str):
        raise InvalidDPoPProof("the DPoP proof is not a string")
    if len(proof) > max_length:
        raise InvalidDPoPProof(f"the DPoP proof is longer than {max_length} characters")
    if _COMPACT_JWS.fullmatch(proof) is None:
        raise InvalidDPoPProof("the DPoP proof is not a single JWS in compact serialization")
    header_segment, payload_segment, signature_segment = proof.split(".")
    header = _json_object(header_segment, "the JOSE header")
    claims = _json_object(payload_segment, "the JWT claims")
    return header, claims, signature_segment


def _check_header(header: Mapping[str, Any], allowed_algs: Collection[str]) -> str:
    if header.get("typ") != _PROOF_TYP:
        raise InvalidDPoPProof(f"the typ header is {header.get('typ')!r}, not {_PROOF_TYP!r}")
    alg = header.get("alg")
    if not isinstance(alg, str):
        raise InvalidDPoPProof("the alg header is missing")
    if alg.lower() == "none":
        raise InvalidDPoPProof("alg 'none' is never accepted for a DPoP proof")
    if alg.upper().startswith("HS"):
        raise InvalidDPoPProof(f"the symmetric alg {alg!r} is never accepted for a DPoP proof")
    if alg not in allowed_algs:
        raise InvalidDPoPProof(f"alg {alg!r} is not allowed (allowed: {' '.join(allowed_algs)})")
    if "crit" in header or "b64" in header:
        raise InvalidDPoPProof("JWS extensions (crit, b64) are not supported in a DPoP proof")
    return alg


def _string_claim(claims: Mapping[str, Any], name: str, max_length: int) -> str:
    value = claims.get(name)
    if value is None:
        raise InvalidDPoPProof(f"the {name} claim is missing", claim=name)
    if not isinstance(value, str) or not value:
        raise InvalidDPoPProof(f"the {name} claim is not a non-empty string", claim=name)
    if len(value) > max_length:
        raise InvalidDPoPProof(
            f"the {name} claim is longer than {max_length} characters", claim=name
        )
    return value


def _iat_claim(claims: Mapping[str, Any]) -> int:
    value = claims.get("iat")
    if value is None:
        raise InvalidDPoPProof("the iat claim is missing", claim="iat")
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidDPoPProof("the iat claim is not a NumericDate", claim="iat")
    return math.floor(value)


def verify_proof(
    proof: str,
    *,
    htm: str,
    htu: str,
    now: int,
    access_token: str | None = None,
    expected_jkt: str | None = None,
    nonce_checker: NonceChecker | None = None,
    replay_cache: ReplayCache | None = None,
    iat_window: int = DEFAULT_IAT_WINDOW,
    iat_leeway: int = DEFAULT_IAT_LEEWAY,
    allowed_algs: Collection[str] = DEFAULT_ALGS,
    max_proof_length: int = MAX_PROOF_LENGTH,
) -> VerifiedProof:
    """Check a DPoP proof against the request it came with (RFC 9449 §4.3).

    ``htm`` is the request method and ``htu`` the request URI as the server
    knows it (from its configured public URL, not from the client's Host
    header); both sides are compared after :func:`normalize_htu`, so query
    and fragment never matter. ``iat`` must lie in
    ``[now - iat_window, now + iat_leeway]`` (RFC 9449 §11.1).

    At a protected resource, pass the presented ``access_token`` (the proof
    must then carry a matching ``ath``, RFC 9449 §7.1) and the token's
    ``cnf.jkt`` as ``expected_jkt`` (RFC 9449 §6.1); a different key raises
    :class:`DPoPKeyMismatch`. With ``nonce_checker`` a nonce is required
    (RFC 9449 §8, §9); a missing or stale one raises
    :class:`~keybound.core.errors.UseDPoPNonce`. With ``replay_cache`` the
    ``jti`` is stored under the normalised ``htu`` until the proof's window
    ends and a second use raises :class:`ReplayedProof`; it is stored last, so
    a proof that fails any other check leaves no entry.
    """
    if allowed_algs is not DEFAULT_ALGS:
        _check_allow_list(allowed_algs)
    header, claims, signature_segment = _split_proof(proof, max_proof_length)

    # JOSE header: RFC 9449 §4.3 checks 4, 5, 7.
    alg = _check_header(header, allowed_algs)
    key = _public_key_from_header(header.get("jwk"), alg)

    # Signature: check 6.
    signing_input = proof[: len(proof) - len(signature_segment) - 1]
    signature = _b64url_segment(signature_segment, "the signature")
    if not _signature_valid(alg, key, signing_input.encode("ascii"), signature):
        raise InvalidDPoPProof("the signature does not verify with the jwk header's key")

    # Required claims: check 3.
    jti = _string_claim(claims, "jti", MAX_JTI_LENGTH)
    proof_htm = _string_claim(claims, "htm", 64)
    proof_htu = _string_claim(claims, "htu", MAX_HTU_LENGTH)
    iat = _iat_claim(claims)
    nonce = claims.get("nonce")
    if nonce is not None and not isinstance(nonce, str):
        raise InvalidDPoPProof("the nonce claim is not a string", claim="nonce")

    # Request binding: checks 8, 9.
    if proof_htm != htm:
        raise InvalidDPoPProof(f"htm {proof_htm!r} does not match the method {htm!r}", claim="htm")
    try:
        expected_htu = _cached_htu(htu)
    except ValueError as err:
        raise ValueError(f"the server's own htu {htu!r} is not usable: {err}") from err
    try:
        normalized_htu = expected_htu if proof_htu == htu else _cached_htu(proof_htu)
    except ValueError as err:
        raise InvalidDPoPProof(f"htu is not a usable http(s) URI: {err}", claim="htu") from err
    if normalized_htu != expected_htu:
        raise InvalidDPoPProof(
            f"htu {normalized_htu!r} does not match the request URI {expected_htu!r}", claim="htu"
        )

    # Creation time: check 11.
    if iat < now - iat_window:
        raise InvalidDPoPProof(f"iat is {now - iat} s old, more than {iat_window} s", claim="iat")
    if iat > now + iat_leeway:
        raise InvalidDPoPProof(f"iat is {iat - now} s in the future", claim="iat")

    # Access token binding: check 12 (RFC 9449 §7.1, §6.1).
    if access_token is not None:
        ath = claims.get("ath")
        if ath is None:
            raise InvalidDPoPProof("the ath claim is missing for an access token", claim="ath")
        try:
            expected_ath = access_token_hash(access_token)
        except ValueError as err:
            raise InvalidToken("the access token is not ASCII") from err
        if not isinstance(ath, str) or not hmac.compare_digest(
            ath.encode("utf-8"), expected_ath.encode("ascii")
        ):
            raise InvalidDPoPProof("ath does not match the hash of the access token", claim="ath")
    jkt = key.jkt
    if expected_jkt is not None and not hmac.compare_digest(
        jkt.encode("ascii"), expected_jkt.encode("utf-8")
    ):
        raise DPoPKeyMismatch(
            "Invalid DPoP key binding: the proof's key is not the token's cnf.jkt"
        )

    # Server nonce: check 10 (RFC 9449 §8, §9, §11.3).
    if nonce_checker is not None:
        nonce_checker.check(nonce, now)

    # Single use: RFC 9449 §11.1, keyed by the target URI.
    if replay_cache is not None:
        replay_cache.check_and_store(expected_htu, jti, iat + iat_window, now)

    return VerifiedProof(
        jkt=jkt,
        jti=jti,
        iat=iat,
        htm=proof_htm,
        htu=normalized_htu,
        claims=MappingProxyType(claims),
        jwk=key.public,
    )
