"""The DPoP proof verifier as it was before keys, thumbprints and ``htu`` were cached.

Kept only as the reference of the differential tests (``tests/unit/test_dpop_differential.py``):
every check in the order RFC 9449 §4.3 lists them, keys imported with joserfc and
signatures checked through joserfc's algorithm models on every call, JSON members
checked one by one, ``htu`` normalised twice. The functions that did not change
(constants, header and claim checks, thumbprint, ``ath``) are taken from the module.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import string
from collections.abc import Collection
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

from joserfc.errors import JoseError
from joserfc.jwk import ECKey, OKPKey, RSAKey

from keybound.core.dpop import (
    _ALG_KEY_TYPES,
    _MIN_RSA_BITS,
    _PRIVATE_MEMBERS,
    _THUMBPRINT_MEMBERS,
    DEFAULT_ALGS,
    DEFAULT_IAT_LEEWAY,
    DEFAULT_IAT_WINDOW,
    MAX_HTU_LENGTH,
    MAX_JTI_LENGTH,
    MAX_PROOF_LENGTH,
    DPoPKeyMismatch,
    PublicKey,
    VerifiedProof,
    _alg_model,
    _b64url_decode,
    _check_allow_list,
    _check_header,
    _iat_claim,
    _string_claim,
    access_token_hash,
    jwk_thumbprint,
)
from keybound.core.dpop_state import NonceChecker, NonceIssuer, ReplayCache
from keybound.core.errors import InvalidDPoPProof, InvalidToken

__all__ = ["normalize_htu", "verify_proof"]

_COMPACT_JWS = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")


# ---- helpers: base64url, JSON, RFC 7638, RFC 9449 §4.2 ath ---------------------------------


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate member {key!r}")
        result[key] = value
    return result


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _json_object(segment: str, what: str) -> dict[str, Any]:
    raw = _b64url_decode(segment, what)
    try:
        value = json.loads(
            raw.decode("utf-8"),
            object_pairs_hook=_no_duplicate_keys,
            parse_constant=_reject_constant,
        )
    except (ValueError, RecursionError) as err:
        raise InvalidDPoPProof(f"{what} is not valid JSON: {err}") from err
    if not isinstance(value, dict):
        raise InvalidDPoPProof(f"{what} is not a JSON object")
    return value


# ---- htu normalisation (RFC 9449 §4.3, RFC 3986 §6.2.2 and §6.2.3) --------------------------

_UNRESERVED = frozenset(string.ascii_letters + string.digits + "-._~")
_URI_CHARS = _UNRESERVED | frozenset(":/?#[]@!$&'()*+,;=%")
_DEFAULT_PORTS = MappingProxyType({"http": 80, "https": 443})


def _normalize_percent_encoding(component: str) -> str:
    """RFC 3986 §6.2.2.1 and §6.2.2.2: upper-case escapes, decode escaped unreserved
    characters; characters a URI cannot hold are UTF-8 percent-encoded (RFC 3987 §3.1)."""
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
    if any(ord(char) <= 0x20 or ord(char) == 0x7F for char in uri):
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


def _public_key_from_header(jwk: object, alg: str) -> tuple[PublicKey, dict[str, str]]:
    """Check the ``jwk`` header (RFC 9449 §4.2, §4.3 checks 5 and 7) and import it."""
    if not isinstance(jwk, dict):
        raise InvalidDPoPProof("the jwk header is missing or not a JSON object")
    kty = jwk.get("kty")
    if kty == "oct":
        raise InvalidDPoPProof("the jwk header holds a symmetric (oct) key")
    private = sorted(_PRIVATE_MEMBERS.intersection(jwk))
    if private:
        raise InvalidDPoPProof(f"the jwk header holds private key material ({', '.join(private)})")
    want_kty, curves = _ALG_KEY_TYPES[alg]
    if kty != want_kty:
        raise InvalidDPoPProof(f"alg {alg} needs a {want_kty} key, the jwk header has {kty!r}")
    public: dict[str, str] = {}
    for name in _THUMBPRINT_MEMBERS[want_kty]:
        value = jwk.get(name)
        if not isinstance(value, str):
            raise InvalidDPoPProof(f"the jwk header lacks the string member {name!r}")
        public[name] = value
    if curves and public["crv"] not in curves:
        raise InvalidDPoPProof(f"alg {alg} cannot use curve {public['crv']!r}")
    key: PublicKey
    try:
        if want_kty == "EC":
            key = ECKey.import_key(dict(public))
        elif want_kty == "OKP":
            key = OKPKey.import_key(dict(public))
        else:
            key = RSAKey.import_key(dict(public))
            if key.raw_value.key_size < _MIN_RSA_BITS:
                raise InvalidDPoPProof(f"the RSA key is shorter than {_MIN_RSA_BITS} bits")
    except (JoseError, ValueError, TypeError) as err:
        raise InvalidDPoPProof(f"the jwk header is not a usable public key: {err}") from err
    return key, public


# ---- checking proofs (RFC 9449 §4.3) --------------------------------------------------------


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
    _check_allow_list(allowed_algs)
    header, claims, signature_segment = _split_proof(proof, max_proof_length)

    # JOSE header: RFC 9449 §4.3 checks 4, 5, 7.
    alg = _check_header(header, allowed_algs)
    key, public_jwk = _public_key_from_header(header.get("jwk"), alg)

    # Signature: check 6.
    signing_input, _, _ = proof.rpartition(".")
    signature = _b64url_decode(signature_segment, "the signature")
    model = _alg_model(alg)
    try:
        model.check_key(key)
        valid = bool(model.verify(signing_input.encode("ascii"), signature, key))
    except (JoseError, ValueError, TypeError) as err:
        raise InvalidDPoPProof(f"the signature cannot be checked: {err}") from err
    if not valid:
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
        expected_htu = normalize_htu(htu)
    except ValueError as err:
        raise ValueError(f"the server's own htu {htu!r} is not usable: {err}") from err
    try:
        normalized_htu = normalize_htu(proof_htu)
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
    jkt = jwk_thumbprint(public_jwk)
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
        claims=MappingProxyType(dict(claims)),
        jwk=MappingProxyType(public_jwk),
    )


_NONCE_CHARS = re.compile(r"[A-Za-z0-9_-]*")


def nonce_accepted(issuer: NonceIssuer, nonce: str, now: int) -> bool:
    """``NonceIssuer.check`` as it was: decode the slot, recompute its nonce, compare.

    With one fix kept: base64url of a length 1 more than a multiple of 4 is refused
    instead of raising ``binascii.Error``.
    """
    current = now // issuer.slot_seconds
    if _NONCE_CHARS.fullmatch(nonce) is not None and len(nonce) <= 64 and len(nonce) % 4 != 1:
        raw = base64.urlsafe_b64decode(nonce + "=" * (-len(nonce) % 4))
        if len(raw) == 24:
            slot = int.from_bytes(raw[:8], "big")
            if slot in (current, current - 1):
                tag = hmac.new(issuer._secret, raw[:8], hashlib.sha256).digest()[:16]
                expected = base64.urlsafe_b64encode(raw[:8] + tag).rstrip(b"=").decode()
                return hmac.compare_digest(expected.encode("ascii"), nonce.encode("ascii"))
    return False
