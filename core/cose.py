"""COSE_Sign1, COSE_Mac0, COSE_Encrypt0 (RFC 9052 §4.2, §6.2, §5.2) on cbor2 and cryptography.

Only the message framing lives here; the primitives are ``cryptography``'s.
Every decode takes an explicit allow-list of algorithms, checks that the key
fits the algorithm (a MAC algorithm with a public key is refused), bounds the
input, and raises a :class:`~keybound.core.errors.KeyboundError` on any
failure. MAC tags are compared in constant time; ``InvalidTag`` and
``InvalidSignature`` are turned into :class:`~keybound.core.errors.BadSignature`
here, at the boundary.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple, cast

import cbor2
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.ciphers.aead import AESCCM, AESGCM, ChaCha20Poly1305

from . import cbor
from .errors import (
    AlgorithmNotAllowed,
    BadSignature,
    DecodeError,
    KeyboundError,
    KeyNotFound,
    PayloadTooLarge,
)
from .keys import Key, RandomBytes
from .numbers.cose_algorithms import Algorithm
from .numbers.cose_headers import CoseTag, HeaderParameter
from .numbers.cose_keys import Curve, KeyType

#: Algorithms accepted by default, per kind.
SIGNATURE_ALGORITHMS = frozenset({Algorithm.ES256, Algorithm.ES384, Algorithm.EDDSA})
MAC_ALGORITHMS = frozenset({Algorithm.HMAC_256_64, Algorithm.HMAC_256_256})
AEAD_ALGORITHMS = frozenset(
    {
        Algorithm.AES_CCM_16_64_128,
        Algorithm.AES_CCM_16_128_128,
        Algorithm.A128GCM,
        Algorithm.A256GCM,
        Algorithm.CHACHA20_POLY1305,
    }
)
DEFAULT_MAX_SIZE = 8 * 1024

KeyLookup = Callable[[bytes | None, Algorithm], Key]


@dataclass(frozen=True)
class CoseMessage:
    """A verified (or decrypted) COSE message."""

    kind: CoseTag
    alg: Algorithm
    payload: bytes
    protected: Mapping[int, Any]
    unprotected: Mapping[int, Any]
    tagged: bool
    key: Key = field(repr=False)

    @property
    def kid(self) -> bytes | None:
        kid = self.protected.get(_KID, self.unprotected.get(_KID))
        return kid if isinstance(kid, bytes) else None


# ---- primitives -------------------------------------------------------------------------


#: Per algorithm, read once (an Enum member's ``value`` is a property): kind, key size,
#: tag size, IV size and name.
_KIND = {alg: alg.value.kind for alg in Algorithm}
_KEY_BYTES = {alg: alg.value.key_bytes for alg in Algorithm}
_TAG_BYTES = {alg: alg.value.tag_bytes for alg in Algorithm}
_IV_BYTES = {alg: alg.value.iv_bytes for alg in Algorithm}
_NAME = {alg: alg.value.name for alg in Algorithm}
#: The key type and curve each signature algorithm takes.
_SIGNATURE_KEYS = {
    Algorithm.ES256: (KeyType.EC2, Curve.P_256),
    Algorithm.ES384: (KeyType.EC2, Curve.P_384),
    Algorithm.EDDSA: (KeyType.OKP, Curve.ED25519),
}
_ECDSA_SHA256 = ec.ECDSA(hashes.SHA256())
_ECDSA_SHA384 = ec.ECDSA(hashes.SHA384())


def _check_key(alg: Algorithm, key: Key, *, signing: bool) -> None:
    """Refuse a key that does not fit ``alg`` (key confusion)."""
    kind = _KIND[alg]
    if kind in ("mac", "aead"):
        if key.kty != KeyType.SYMMETRIC:
            raise AlgorithmNotAllowed(f"{_NAME[alg]} needs a symmetric key")
        assert key.secret is not None
        if len(key.secret) != _KEY_BYTES[alg]:
            raise AlgorithmNotAllowed(f"{_NAME[alg]} needs a {_KEY_BYTES[alg]}-byte key")
        return
    expected = _SIGNATURE_KEYS.get(alg)
    if expected is None or key.kty != expected[0] or key.curve != expected[1]:
        raise AlgorithmNotAllowed(f"{_NAME[alg]} cannot be used with this key")
    if key.alg is not None and key.alg != alg:
        raise AlgorithmNotAllowed(f"the key is restricted to {_NAME[key.alg]}")
    if signing and key.private is None:
        raise KeyNotFound("signing needs a private key")


def _sign(alg: Algorithm, key: Key, data: bytes) -> bytes:
    _check_key(alg, key, signing=True)  # ES256/ES384 with an EC2 key, EdDSA with Ed25519
    priv = key.private
    if alg is not Algorithm.EDDSA:
        ecdsa = _ECDSA_SHA256 if alg == Algorithm.ES256 else _ECDSA_SHA384
        r, s = decode_dss_signature(cast(ec.EllipticCurvePrivateKey, priv).sign(data, ecdsa))
        size = 32 if alg == Algorithm.ES256 else 48
        return r.to_bytes(size, "big") + s.to_bytes(size, "big")
    assert isinstance(priv, ed25519.Ed25519PrivateKey)
    return priv.sign(data)


def _der_signature(signature: bytes, size: int) -> bytes:
    """``encode_dss_signature(r, s)`` of the COSE signature ``r || s`` (RFC 9053 §2.1), each
    ``size`` bytes, straight from the bytes: the DER ``SEQUENCE { r INTEGER, s INTEGER }``
    (RFC 3279 §2.2.3), each INTEGER minimal and non-negative (X.690 §8.3). P-256 and P-384
    fit one-byte lengths (at most 102 bytes in all)."""
    r = signature[:size].lstrip(b"\x00")
    s = signature[size:].lstrip(b"\x00")
    if not r or r[0] & 0x80:
        r = b"\x00" + r
    if not s or s[0] & 0x80:
        s = b"\x00" + s
    return bytes((0x30, len(r) + len(s) + 4, 0x02, len(r))) + r + bytes((0x02, len(s))) + s


def _verify(alg: Algorithm, key: Key, data: bytes, signature: bytes) -> None:
    _check_key(alg, key, signing=False)  # ES256/ES384 with an EC2 key, EdDSA with Ed25519
    pub = key.public
    try:
        if alg is not Algorithm.EDDSA:
            size = 32 if alg == Algorithm.ES256 else 48
            if len(signature) != 2 * size:
                raise BadSignature("ECDSA signature of the wrong length")
            der = _der_signature(signature, size)
            ecdsa = _ECDSA_SHA256 if alg == Algorithm.ES256 else _ECDSA_SHA384
            cast(ec.EllipticCurvePublicKey, pub).verify(der, data, ecdsa)
            return
        assert isinstance(pub, ed25519.Ed25519PublicKey)
        pub.verify(signature, data)
    except InvalidSignature as exc:
        raise BadSignature("signature does not verify") from exc


def _mac(alg: Algorithm, key: Key, data: bytes) -> bytes:
    _check_key(alg, key, signing=True)
    assert key.secret is not None
    return hmac.new(key.secret, data, hashlib.sha256).digest()[: _TAG_BYTES[alg]]


def _aead(alg: Algorithm, key: Key) -> AESCCM | AESGCM | ChaCha20Poly1305:
    _check_key(alg, key, signing=True)
    assert key.secret is not None
    if alg in (Algorithm.AES_CCM_16_64_128, Algorithm.AES_CCM_16_128_128):
        return AESCCM(key.secret, tag_length=_TAG_BYTES[alg])
    if alg in (Algorithm.A128GCM, Algorithm.A256GCM):
        return AESGCM(key.secret)
    return ChaCha20Poly1305(key.secret)


def aead_encrypt(alg: Algorithm, key: Key, nonce: bytes, plaintext: bytes, aad: bytes) -> bytes:
    """Raw AEAD encryption as COSE uses it (ciphertext with the tag appended)."""
    return _aead(alg, key).encrypt(nonce, plaintext, aad)


def aead_decrypt(alg: Algorithm, key: Key, nonce: bytes, ciphertext: bytes, aad: bytes) -> bytes:
    """Raw AEAD decryption; a wrong key or tampered input raises :class:`BadSignature`."""
    if len(nonce) != _IV_BYTES[alg]:
        raise DecodeError(f"{_NAME[alg]} needs a {_IV_BYTES[alg]}-byte IV")
    try:
        return _aead(alg, key).decrypt(nonce, ciphertext, aad)
    except InvalidTag as exc:
        raise BadSignature("decryption failed: authentication tag does not verify") from exc


# ---- encoding ---------------------------------------------------------------------------


#: The protected header of most messages, ``{1: alg}``, encoded once per algorithm.
_ALG_ONLY = {alg: cbor.dumps({int(HeaderParameter.ALG): alg.id}) for alg in Algorithm}


def _protected_bytes(alg: Algorithm, extra: Mapping[int, Any] | None) -> bytes:
    if not extra:
        return _ALG_ONLY[alg]
    headers: dict[int, Any] = {int(HeaderParameter.ALG): alg.id}
    headers.update({int(k): v for k, v in extra.items()})
    return cbor.dumps(headers)


def _unprotected(kid: bytes | None, extra: Mapping[int, Any] | None) -> dict[int, Any]:
    headers: dict[int, Any] = {}
    if kid is not None:
        headers[int(HeaderParameter.KID)] = kid
    if extra:
        headers.update({int(k): v for k, v in extra.items()})
    return headers


def _bstr(data: bytes) -> bytes:
    """A definite-length byte string: its head, then ``data``."""
    size = len(data)
    return (_BSTR_HEADS[size] if size < 0x100 else cbor.head(2, size)) + data


#: The heads of byte strings shorter than 256 bytes.
_BSTR_HEADS = tuple(cbor.head(2, size) for size in range(0x100))


def _to_be_protected(context: bytes, body: bytes, external_aad: bytes, payload: bytes) -> bytes:
    """Sig_structure (RFC 9052 §4.4) or MAC_structure (§6.3) for one signer, by concatenation.

    ``context`` is the encoded array head and context string (``Signature1``, ``MAC0``).
    """
    return context + _bstr(body) + _bstr(external_aad) + _bstr(payload)


_SIGNATURE1 = b"\x84" + cbor.dumps("Signature1")
_MAC0 = b"\x84" + cbor.dumps("MAC0")
#: Enc_structure (RFC 9052 §5.3) starts with the array head and ``Encrypt0``.
_ENCRYPT0 = b"\x83" + cbor.dumps("Encrypt0")


def _frame(tag: CoseTag, items: list[bytes], unprotected: dict[int, Any], tagged: bool) -> bytes:
    """The message: [protected, unprotected, items...], tagged with ``tag`` (RFC 9052 §2)."""
    out = (cbor.head(6, int(tag)) if tagged else b"") + cbor.head(4, len(items) + 1)
    out += _bstr(items[0]) + cbor.dumps_ordered(unprotected)
    for item in items[1:]:
        out += _bstr(item)
    return out


def sign1(
    payload: bytes,
    key: Key,
    *,
    alg: Algorithm | None = None,
    kid: bytes | None = None,
    protected: Mapping[int, Any] | None = None,
    unprotected: Mapping[int, Any] | None = None,
    external_aad: bytes = b"",
    tagged: bool = True,
    protect_all: bool = False,
) -> bytes:
    """COSE_Sign1 (RFC 9052 §4.2, Sig_structure of §4.4).

    With ``protect_all`` the ``kid`` goes in the protected header and the unprotected
    one stays empty (what RFC 9770 §3 asks of access tokens).
    """
    alg = alg or key.alg or (Algorithm.EDDSA if key.kty == KeyType.OKP else Algorithm.ES256)
    kid = kid if kid is not None else key.kid
    if protect_all:
        protected, kid = _with_kid(protected, kid, unprotected), None
    body = _protected_bytes(alg, protected)
    signature = _sign(alg, key, _to_be_protected(_SIGNATURE1, body, external_aad, payload))
    uh = _unprotected(kid, unprotected)
    return _frame(CoseTag.SIGN1, [body, payload, signature], uh, tagged)


def mac0(
    payload: bytes,
    key: Key,
    *,
    alg: Algorithm = Algorithm.HMAC_256_64,
    kid: bytes | None = None,
    protected: Mapping[int, Any] | None = None,
    unprotected: Mapping[int, Any] | None = None,
    external_aad: bytes = b"",
    tagged: bool = True,
    protect_all: bool = False,
) -> bytes:
    """COSE_Mac0 (RFC 9052 §6.2, MAC_structure of §6.3); ``protect_all`` as :func:`sign1`."""
    kid = kid if kid is not None else key.kid
    if protect_all:
        protected, kid = _with_kid(protected, kid, unprotected), None
    body = _protected_bytes(alg, protected)
    tag = _mac(alg, key, _to_be_protected(_MAC0, body, external_aad, payload))
    uh = _unprotected(kid, unprotected)
    return _frame(CoseTag.MAC0, [body, payload, tag], uh, tagged)


def encrypt0(
    plaintext: bytes,
    key: Key,
    *,
    alg: Algorithm = Algorithm.AES_CCM_16_64_128,
    kid: bytes | None = None,
    iv: bytes | None = None,
    random_bytes: RandomBytes | None = None,
    protected: Mapping[int, Any] | None = None,
    unprotected: Mapping[int, Any] | None = None,
    external_aad: bytes = b"",
    tagged: bool = True,
    protect_all: bool = False,
) -> bytes:
    """COSE_Encrypt0 (RFC 9052 §5.2, Enc_structure of §5.3).

    The IV is ``iv``, or drawn from ``random_bytes`` (``os.urandom`` in an
    application) when none is given; one of the two is required. With
    ``protect_all`` the ``kid`` and the IV go in the protected header and the
    unprotected one stays empty (RFC 9770 §3).
    """
    if iv is None:
        if random_bytes is None:
            raise ValueError("encrypt0 needs an iv or random_bytes to draw one")
        iv = random_bytes(_IV_BYTES[alg])
    kid = kid if kid is not None else key.kid
    if protect_all:
        protected = {**_with_kid(protected, kid, unprotected), int(HeaderParameter.IV): iv}
        kid = None
    body = _protected_bytes(alg, protected)
    aad = _ENCRYPT0 + _bstr(body) + _bstr(external_aad)
    ciphertext = aead_encrypt(alg, key, iv, plaintext, aad)
    uh = _unprotected(kid, unprotected)
    if not protect_all:
        uh[int(HeaderParameter.IV)] = iv
    return _frame(CoseTag.ENCRYPT0, [body, ciphertext], uh, tagged)


def _with_kid(
    protected: Mapping[int, Any] | None, kid: bytes | None, unprotected: Mapping[int, Any] | None
) -> dict[int, Any]:
    """The protected headers of ``protect_all``: ``protected`` with the ``kid``."""
    if unprotected:
        raise ValueError("protect_all leaves the unprotected header empty")
    headers = {int(k): v for k, v in (protected or {}).items()}
    if kid is not None:
        headers[int(HeaderParameter.KID)] = kid
    return headers


# ---- decoding ---------------------------------------------------------------------------


class Parsed(NamedTuple):
    """The framing of a COSE message, checked but not verified (:func:`parse`)."""

    kind: CoseTag
    tagged: bool
    items: list[Any]
    protected: dict[int, Any]
    unprotected: dict[int, Any]
    alg: Algorithm


#: The header parameters this module processes, so ``crit`` may name them (RFC 9052 §3.1).
UNDERSTOOD_HEADERS = frozenset({HeaderParameter.ALG, HeaderParameter.KID, HeaderParameter.IV})


def _check_crit(protected: Mapping[Any, Any], unprotected: Mapping[Any, Any]) -> None:
    """RFC 9052 §3.1 ``crit``: protected bucket only, a non-empty array of labels we understand.

    A ``crit`` in the unprotected bucket makes the message invalid (it could be added
    or removed by anyone); so does a label this module does not process.
    """
    if HeaderParameter.CRIT in unprotected:
        raise DecodeError("crit must be in the protected header (RFC 9052 §3.1)")
    if HeaderParameter.CRIT not in protected:
        return
    crit = protected[HeaderParameter.CRIT]
    if not isinstance(crit, list) or not crit:
        raise DecodeError("crit must be a non-empty array of header labels (RFC 9052 §3.1)")
    for label in crit:
        if type(label) not in (int, str):
            raise DecodeError("crit must hold integer or text labels (RFC 9052 §3.1)")
        if label not in UNDERSTOOD_HEADERS:
            raise DecodeError(f"critical header parameter {label!r} is not understood")


#: Header labels as plain integers: a dict lookup by an IntEnum member costs more.
_ALG, _CRIT, _KID, _IV = (int(HeaderParameter.ALG), int(HeaderParameter.CRIT),
                          int(HeaderParameter.KID), int(HeaderParameter.IV))  # fmt: skip
#: The one-byte heads of the COSE tags keybound decodes (RFC 9052 §2), and the size of each.
_TAG_HEADS = {0xD0: CoseTag.ENCRYPT0, 0xD1: CoseTag.MAC0, 0xD2: CoseTag.SIGN1}
_SIZES = {CoseTag.SIGN1: 4, CoseTag.MAC0: 4, CoseTag.ENCRYPT0: 3}
#: The message a kind of algorithm protects.
_KIND_MESSAGE = {"sign": CoseTag.SIGN1, "mac": CoseTag.MAC0, "aead": CoseTag.ENCRYPT0}
#: ``{1: alg}`` protected headers, decoded once: encoded bytes -> the algorithm's number.
_ALG_ONLY_IDS = {encoded: alg.id for alg, encoded in _ALG_ONLY.items()}


def _bstr_span(data: bytes, pos: int, n: int) -> tuple[int, int]:
    """(start, end) of the content of the definite-length byte string at ``pos`` whose head
    has at most 3 bytes, or (-1, -1) for anything else (the caller takes the general path)."""
    if pos < n:
        initial = data[pos]
        if 0x40 <= initial < 0x58:
            start = pos + 1
            end = start + initial - 0x40
        elif initial == 0x58 and pos + 2 <= n:
            start = pos + 2
            end = start + data[pos + 1]
        elif initial == 0x59 and pos + 3 <= n:
            start = pos + 3
            end = start + (data[pos + 1] << 8 | data[pos + 2])
        else:
            return -1, -1
        if end <= n:
            return start, end
    return -1, -1


#: The unprotected header labels :func:`_small_unprotected` reads: kid and IV.
_KID_OR_IV = (_KID, _IV)


def _small_unprotected(data: bytes, pos: int, n: int) -> tuple[dict[int, Any] | None, int]:
    """The unprotected map at ``pos`` and its end when it is empty or holds one or two
    short byte strings under ``kid`` or ``IV`` (the headers of keybound's tokens), else
    (None, -1). These are what the bounded walk and cbor2 give for those bytes; no item
    of them nests, so no depth bound is met.
    """
    initial = data[pos]
    if initial == 0xA0:
        return {}, pos + 1
    if initial not in (0xA1, 0xA2):
        return None, -1
    headers: dict[int, Any] = {}
    pos += 1
    for _ in range(initial - 0xA0):
        if pos + 1 >= n:
            return None, -1
        label, head = data[pos], data[pos + 1]
        if label not in _KID_OR_IV or label in headers or not 0x40 <= head < 0x58:
            return None, -1
        end = pos + 2 + head - 0x40
        if end > n:
            return None, -1
        headers[label] = data[pos + 2 : end]
        pos = end
    return headers, pos


def split(
    data: bytes, pos: int = 0, level: int = 0, *, expected: CoseTag | None = None
) -> tuple[CoseTag, bool, list[Any]] | None:
    """The parts of the COSE message that fills ``data`` from ``pos`` (:func:`_split`)."""
    parts = _split(data, pos, level, expected)
    return None if parts is None else parts[:3]


#: ``{1: alg}`` protected headers, encoded -> (the algorithm's number, the algorithm).
_ALG_ONLY_ALGS = {encoded: (alg.id, alg) for alg, encoded in _ALG_ONLY.items()}
_new_tuple = tuple.__new__


def parse_split(
    data: bytes,
    pos: int = 0,
    level: int = 0,
    *,
    expected: CoseTag | None = None,
    max_size: int = DEFAULT_MAX_SIZE,
) -> Parsed | None:
    """``parse_parts(*split(...))``, or ``None`` where :func:`split` gives ``None``.

    A message whose protected header is only ``{1: alg}`` of an algorithm keybound
    implements and whose unprotected header :func:`_small_unprotected` read (``kid``
    and ``IV`` byte strings) passes every check of :func:`parse_parts`: its labels are
    integers in disjoint buckets, there is no ``crit``, the other items are byte
    strings (split bounds them by their heads), and the algorithm is known. Its
    :class:`Parsed` is built directly; any other message goes through those checks.
    """
    parts = _split(data, pos, level, expected)
    if parts is None:
        return None
    kind, tagged, items, small = parts
    if small:
        known = _ALG_ONLY_ALGS.get(items[0])
        if known is not None:
            return _new_tuple(Parsed, (kind, tagged, items, {1: known[0]}, items[1], known[1]))
    return parse_parts(kind, tagged, items, max_size=max_size)


def _split(
    data: bytes, pos: int, level: int, expected: CoseTag | None
) -> tuple[CoseTag, bool, list[Any], bool] | None:
    """The parts of the COSE message that fills ``data`` from ``pos``, when it has the usual
    shape: a one-byte COSE tag (or none, when ``expected`` names the kind), an array of
    definite-length byte strings around the unprotected map. ``None`` for anything else.

    Only the unprotected map is walked (at nesting ``level`` plus the tag and the array);
    the byte strings are bounded by their heads. The result is what :func:`cbor.loads`
    would give for the same bytes, so the checks that follow are the same either way.
    """
    n = len(data)
    if pos >= n:
        return None
    kind = _TAG_HEADS.get(data[pos])
    tagged = kind is not None
    if kind is not None:
        pos += 1
        level += 1
        if expected is not None and kind != expected:
            return None
    elif expected is None or expected not in _SIZES:
        return None
    else:
        kind = expected
    count = _SIZES[kind]
    if pos >= n or data[pos] != 0x80 | count:
        return None
    start, end = _bstr_span(data, pos + 1, n)
    if end < 0 or end >= n or data[end] >> 5 != 5:
        return None
    headers, map_end = _small_unprotected(data, end, n)
    if map_end < 0:
        map_end = cbor.item_end(data, end, level + 1)
    items: list[Any] = [data[start:end], headers]
    pos = map_end
    for _ in range(count - 2):
        start, pos = _bstr_span(data, pos, n)
        if pos < 0:
            return None
        items.append(data[start:pos])
    if pos != n:
        return None
    if headers is None:
        try:
            items[1] = cbor2.loads(data[end:map_end])
        except Exception as exc:  # as cbor.loads would for the whole message
            raise DecodeError(f"invalid CBOR: {exc}") from exc
    return kind, tagged, items, headers is not None


def parse(
    data: bytes | Any, *, expected: CoseTag | None = None, max_size: int = DEFAULT_MAX_SIZE
) -> Parsed:
    """Parse the framing of a COSE message without verifying it."""
    if isinstance(data, bytes):
        if len(data) > max_size:
            raise PayloadTooLarge(
                f"CBOR input of {len(data)} bytes exceeds the limit of {max_size}"
            )
        parts = split(data, expected=expected)
        if parts is not None:
            return parse_parts(*parts, max_size=max_size)
        data = cbor.loads(data, max_size=max_size)
    obj = data
    tagged = isinstance(obj, cbor2.CBORTag)
    if tagged:
        try:
            kind = CoseTag(obj.tag)
        except ValueError as exc:
            raise DecodeError(f"CBOR tag {obj.tag} is not a COSE message") from exc
        obj = obj.value
    elif expected is None:
        raise DecodeError("an untagged COSE message needs its type from the context")
    else:
        kind = expected
    if expected is not None and kind != expected:
        raise DecodeError(f"expected {expected.name}, found {kind.name}")
    if kind not in _SIZES:
        raise DecodeError(f"{kind.name} is not supported")
    if not isinstance(obj, list) or len(obj) != _SIZES[kind]:
        raise DecodeError(f"{kind.name} must be an array of {_SIZES[kind]} items")
    return parse_parts(kind, tagged, obj, max_size=max_size)


def parse_parts(
    kind: CoseTag, tagged: bool, obj: list[Any], *, max_size: int = DEFAULT_MAX_SIZE
) -> Parsed:
    """The checks of :func:`parse` on a message's items (``obj``, as cbor2 decodes them)."""
    body, unprotected = obj[0], obj[1]
    if not isinstance(body, bytes) or not isinstance(unprotected, dict):
        raise DecodeError("COSE headers must be a byte string and a map")
    alg_id = _ALG_ONLY_IDS.get(body)
    if alg_id is not None:
        protected: Any = {1: alg_id}
    else:
        protected = cbor.loads(body, max_size=max_size) if body else {}
        if not isinstance(protected, dict):
            raise DecodeError("the COSE protected header must encode a map")
        for label in protected:
            if type(label) is not int and type(label) is not str:
                raise DecodeError("COSE header labels must be integers or text")
    for label in unprotected:
        if type(label) is not int and type(label) is not str:
            raise DecodeError("COSE header labels must be integers or text")
    if unprotected and not protected.keys().isdisjoint(unprotected):
        both = set(protected) & set(unprotected)
        raise DecodeError(
            f"header parameters {sorted(both, key=str)} are both protected and unprotected"
        )
    if _CRIT in protected or _CRIT in unprotected:
        _check_crit(protected, unprotected)
    payload = obj[2]
    if type(payload) is not bytes or (len(obj) == 4 and type(obj[3]) is not bytes):
        if any(not isinstance(item, bytes) for item in obj[2:]) and not (
            kind != CoseTag.ENCRYPT0 and payload is None
        ):
            raise DecodeError(f"{kind.name} payload and tag must be byte strings")
        if payload is None:
            raise DecodeError("detached COSE payloads are not supported")
    kid = protected.get(_KID, unprotected.get(_KID))
    if kid is not None and not isinstance(kid, bytes):
        raise DecodeError("COSE kid must be a byte string")
    if _ALG not in protected:
        raise AlgorithmNotAllowed("the algorithm must be in the protected header")
    try:
        alg = Algorithm.from_id(protected[_ALG])
    except KeyError as exc:
        raise AlgorithmNotAllowed(f"COSE algorithm {protected[_ALG]!r} is not supported") from exc
    return Parsed(kind, tagged, obj, protected, unprotected, alg)


def decode(
    data: bytes | Any,
    keys: Key | KeyLookup,
    *,
    allowed: Collection[Algorithm],
    expected: CoseTag | None = None,
    external_aad: bytes = b"",
    max_size: int = DEFAULT_MAX_SIZE,
) -> CoseMessage:
    """Verify or decrypt a COSE_Sign1, COSE_Mac0 or COSE_Encrypt0; raise on any failure.

    ``keys`` is a key or a function ``(kid, alg) -> Key`` that raises
    :class:`KeyNotFound`. ``allowed`` is the explicit algorithm allow-list.
    """
    msg = parse(data, expected=expected, max_size=max_size)
    return verify_parsed(msg, keys, allowed=allowed, external_aad=external_aad)


def verify_parsed(
    msg: Parsed, keys: Key | KeyLookup, *, allowed: Collection[Algorithm], external_aad: bytes
) -> CoseMessage:
    """The cryptographic half of :func:`decode`, on a message :func:`parse` returned."""
    payload, key = verified_payload(msg, keys, allowed=allowed, external_aad=external_aad)
    return CoseMessage(msg.kind, msg.alg, payload, msg.protected, msg.unprotected, msg.tagged, key)


def verified_payload(
    msg: Parsed, keys: Key | KeyLookup, *, allowed: Collection[Algorithm], external_aad: bytes
) -> tuple[bytes, Key]:
    """:func:`verify_parsed` without the :class:`CoseMessage`: the payload and the key."""
    alg = msg.alg
    if alg not in allowed:
        raise AlgorithmNotAllowed(f"{_NAME[alg]} is not allowed here")
    if _KIND_MESSAGE.get(_KIND[alg]) != msg.kind:
        raise AlgorithmNotAllowed(f"{_NAME[alg]} cannot protect a {msg.kind.name}")
    protected, unprotected = msg.protected, msg.unprotected
    kid = protected.get(_KID, unprotected.get(_KID))
    key = keys if isinstance(keys, Key) else keys(kid, alg)
    if not isinstance(key, Key):
        raise KeyNotFound("no key for this message")
    items = msg.items
    body = items[0]
    if msg.kind == CoseTag.SIGN1:
        payload = items[2]
        _verify(alg, key, _to_be_protected(_SIGNATURE1, body, external_aad, payload), items[3])
    elif msg.kind == CoseTag.MAC0:
        payload = items[2]
        mine = _mac(alg, key, _to_be_protected(_MAC0, body, external_aad, payload))
        if not hmac.compare_digest(mine, items[3]):
            raise BadSignature("MAC tag does not verify")
    else:
        iv = unprotected.get(_IV, protected.get(_IV))
        if not isinstance(iv, bytes):
            raise DecodeError("COSE_Encrypt0 without an IV (Partial IV is not supported here)")
        aad = _ENCRYPT0 + _bstr(body) + _bstr(external_aad)
        payload = aead_decrypt(alg, key, iv, items[2], aad)
    return payload, key


def key_lookup(keys: Mapping[bytes, Key], *, default: Key | None = None) -> KeyLookup:
    """A :data:`KeyLookup` over a kid -> key map, optionally with a key for messages without kid."""

    def find(kid: bytes | None, alg: Algorithm) -> Key:
        if kid is None:
            if default is None:
                raise KeyNotFound("the message has no kid and no default key is configured")
            return default
        try:
            return keys[kid]
        except KeyError:
            raise KeyNotFound(f"unknown kid {kid.hex()}") from None

    return find


__all__ = [
    "AEAD_ALGORITHMS",
    "MAC_ALGORITHMS",
    "SIGNATURE_ALGORITHMS",
    "CoseMessage",
    "KeyLookup",
    "KeyboundError",
    "Parsed",
    "aead_decrypt",
    "aead_encrypt",
    "decode",
    "encrypt0",
    "key_lookup",
    "mac0",
    "parse",
    "parse_parts",
    "parse_split",
    "sign1",
    "split",
    "verified_payload",
    "verify_parsed",
]
