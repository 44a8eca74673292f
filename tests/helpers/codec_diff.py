"""Differential testing of the codec against its reference copy (tests/helpers/codec_reference).

:func:`run` draws inputs from one seeded ``random.Random``: random CBOR items (heads of
every width, indefinite lengths, tags, duplicate and odd keys), mutations of valid
tokens, and COSE messages assembled from random or mutated parts whose MAC, signature
or AEAD tag is computed over those very parts, so that the claims decoder behind the
cryptography is reached as well. Each input goes through the current code and the
reference; their outcomes must be equal: the same value, or the same exception class
with the same OAuth/ACE error code and claim. A crash (an exception that is not a
KeyboundError) in either is a mismatch too.

``python -m tests.helpers.soak codec --count 1000000`` runs the long mode.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import cbor2

from keybound.core import cbor, cose, cwt
from keybound.core.errors import KeyboundError
from keybound.core.keys import Key
from keybound.core.numbers.cose_algorithms import Algorithm
from keybound.core.numbers.cose_keys import Curve
from keybound.core.oscore_material import OscoreInputMaterial
from keybound.core.scope import TextScope
from keybound.core.token import AccessToken, CnfCkt, CnfKey, CnfKid, CnfOsc
from tests.helpers.codec_reference import cbor as ref_cbor
from tests.helpers.codec_reference import cose as ref_cose
from tests.helpers.codec_reference import cwt as ref_cwt
from tests.helpers.codec_reference import token as ref_token

# ---- outcomes --------------------------------------------------------------------------


def _same_value(a: Any, b: Any) -> bool:
    """Equality where NaN equals NaN and types must match (1 is not True, not 1.0)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return (math.isnan(a) and math.isnan(b)) or a == b
    if isinstance(a, dict):
        return _same_value(list(a.items()), list(b.items()))
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(map(_same_value, a, b))
    if isinstance(a, cbor2.CBORTag):
        return a.tag == b.tag and _same_value(a.value, b.value)
    return bool(a == b)


def outcome(fn: Callable[[], Any]) -> tuple[Any, ...]:
    """("ok", value) or ("error", class, error, ACE code, claim) or ("crash", class, text)."""
    try:
        return ("ok", fn())
    except KeyboundError as exc:
        return ("error", type(exc), exc.error, exc.ace_code, exc.claim)
    except Exception as exc:  # a crash is a finding, not a test failure of this module
        return ("crash", type(exc), repr(exc)[:200])


def same_outcome(mine: tuple[Any, ...], ref: tuple[Any, ...], view: Callable[[Any], Any]) -> bool:
    if mine[0] == "crash" or ref[0] == "crash":
        return False
    if mine[0] != ref[0]:
        return False
    if mine[0] == "error":
        return mine == ref
    return _same_value(view(mine[1]), view(ref[1]))


def _token_view(token: AccessToken) -> tuple[Any, ...]:
    """A token as comparable values (``extra`` may hold NaN, keys compare by material)."""
    cnf = token.cnf
    cnf_view: Any = cnf
    if isinstance(cnf, CnfKey):
        key = cnf.key
        cnf_view = (
            "key", key.kty, key.curve, key.kid, key.alg, key.secret,
            key.cose_thumbprint(), key.private is not None,
        )  # fmt: skip
    return (replace(token, extra={}, cnf=None), cnf_view, dict(token.extra))


def _message_view(msg: Any) -> tuple[Any, ...]:
    return (msg.kind, msg.alg, msg.payload, dict(msg.protected), dict(msg.unprotected),
            msg.tagged, msg.key is not None)  # fmt: skip


def _decoded_view(decoded: Any) -> tuple[Any, ...]:
    layers = tuple((layer.kind, layer.alg, layer.kid, layer.tagged) for layer in decoded.layers)
    return (_token_view(decoded.token), layers, decoded.cwt_tag, decoded.claims)


def _opened_view(opened: Any) -> tuple[Any, ...]:
    layers = tuple((layer.kind, layer.alg, layer.kid, layer.tagged) for layer in opened.layers)
    return (layers, opened.cwt_tag, opened.claims)


# ---- keys and valid seeds ---------------------------------------------------------------


@dataclass
class Material:
    """Keys, the allow-lists and valid tokens that the inputs start from."""

    mac: Key
    aead: Key
    gcm: Key
    signer: Key
    ed_signer: Key
    pop: Key
    claims: list[bytes] = field(default_factory=list)
    tokens: list[bytes] = field(default_factory=list)

    @property
    def verify_keys(self) -> list[Key]:
        return [self.mac, self.aead, self.gcm, self.signer.public_key(),
                self.ed_signer.public_key()]  # fmt: skip


def material(rng: random.Random) -> Material:
    def secret(size: int) -> bytes:
        return bytes(rng.getrandbits(8) for _ in range(size))

    mat = Material(
        mac=Key.symmetric(secret(32), kid=b"m"),
        aead=Key.symmetric(secret(16), kid=b"a"),
        gcm=Key.symmetric(secret(32), kid=b"g"),
        signer=Key.generate_ec2(Curve.P_256, kid=b"s"),
        ed_signer=Key.generate_okp(Curve.ED25519, kid=b"e"),
        pop=Key.generate_ec2(Curve.P_256),
    )
    for token in sample_tokens(rng, mat):
        mat.claims.append(ref_token.to_cwt_payload(token))
        for protection in protections(mat):
            mat.tokens.append(ref_cwt.encode(token, protection, cwt_tag=rng.random() < 0.3))
    return mat


def protections(mat: Material) -> list[cwt.Protection]:
    iv13, iv12 = bytes(13), bytes(12)
    return [
        cwt.Sign1(mat.signer, Algorithm.ES256),
        cwt.Sign1(mat.ed_signer),
        cwt.Mac0(mat.mac),
        cwt.Mac0(mat.mac, Algorithm.HMAC_256_256),
        cwt.Encrypt0(mat.aead, iv=iv13),
        cwt.Encrypt0(mat.gcm, Algorithm.A256GCM, iv=iv12),
        cwt.Nested(cwt.Sign1(mat.signer), cwt.Encrypt0(mat.aead, iv=iv13)),
        cwt.Nested(cwt.Sign1(mat.ed_signer), cwt.Encrypt0(mat.aead, iv=iv13)),
    ]


def sample_tokens(rng: random.Random, mat: Material) -> list[AccessToken]:
    osc = OscoreInputMaterial(id=b"\x0a\x0b", ms=bytes(range(16)), salt=b"\x01", context_id=b"c")
    base = AccessToken(
        iss="coap://as.example", aud=("rs.example",), exp=1_750_003_600, iat=1_750_000_000,
        cti=bytes(range(16)), scope=TextScope.parse("temp.read temp.write"),
    )  # fmt: skip
    return [
        base.replace(cnf=CnfKey(mat.pop.public_key())),
        base.replace(cnf=CnfOsc(osc), ace_profile=2, aud=("a", "b")),
        base.replace(cnf=CnfKid(b"kid"), nbf=1_750_000_000, exi=3600, cnonce=b"\x01\x02"),
        base.replace(cnf=CnfCkt(bytes(32)), sub="client", extra={"x": 1, -70000: b"\x00"}),
        base.replace(cnf=CnfKey(Key.symmetric(bytes(16), kid=b"p")), iss=None, scope=None),
        AccessToken(extra={100: [1, 2.5, {"a": None}], "t": True}),
        AccessToken(aud=("x",) * rng.randrange(1, 4), exp=rng.randrange(0, 1 << 34)),
    ]


# ---- random CBOR ------------------------------------------------------------------------

_TAGS = (0, 1, 2, 3, 16, 17, 18, 24, 25, 61, 96, 98, 258, 1004, 55799, 6, 37, 100, 1 << 20)
_KEY_POOL: tuple[bytes, ...] = (
    b"\x01", b"\x04", b"\x05", b"\x18\x01", b"\x19\x00\x01", b"\x20", b"\x38\x00", b"\x61a",
    b"\x41a", b"\x78\x01a", b"\x7f\x61a\xff", b"\xf9\x3c\x00", b"\xf5", b"\xf4", b"\xf6",
    b"\xf7", b"\xf0", b"\xf8\x20", b"\xfb\x7f\xf8\x00\x00\x00\x00\x00\x00", b"\x80", b"\xa0",
    b"\xc1\x01", b"\xd8\x3d\x01", b"\x62\xc3\x28", b"\x00", b"\x3b" + b"\xff" * 8,
)  # fmt: skip


class Generator:
    """Random CBOR items, mostly well formed, with the odd wrong byte."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def junk(self, size: int) -> bytes:
        return bytes(self.rng.getrandbits(8) for _ in range(size))

    def head(self, major: int, arg: int) -> bytes:
        rng = self.rng
        if arg < 24 and rng.random() < 0.85:
            return bytes([major << 5 | arg])
        for info, size in ((24, 1), (25, 2), (26, 4), (27, 8)):
            if arg < 1 << (8 * size) and (rng.random() < 0.8 or size == 8):
                return bytes([major << 5 | info]) + arg.to_bytes(size, "big")
        return bytes([major << 5 | 27]) + (arg & ((1 << 64) - 1)).to_bytes(8, "big")

    def item(self, depth: int = 0) -> bytes:
        rng = self.rng
        kind = rng.randrange(16 if depth < 20 else 8)
        if kind == 0:
            return self.head(0, rng.choice((0, 1, 23, 24, 255, 256, 65535, 1 << 32, (1 << 64) - 1)))
        if kind == 1:
            return self.head(1, rng.randrange(0, 1 << rng.choice((4, 8, 16, 32, 64))))
        if kind == 2:
            return self.string(2, self.junk(rng.randrange(0, 30)))
        if kind == 3:
            text = rng.choice(("", "a", "temp.read", "é", "\u2603", "x" * 30)).encode()
            if rng.random() < 0.1:
                text = self.junk(rng.randrange(1, 5))
            return self.string(3, text)
        if kind == 4:
            return rng.choice((b"\xf4", b"\xf5", b"\xf6", b"\xf7", b"\xe0", b"\xf3", b"\xf8\x20",
                               b"\xf8\x10", b"\xf8\xff", b"\xf9\x7e\x00", b"\xfa\x3f\x80\x00\x00",
                               b"\xfb\x3f\xf0\x00\x00\x00\x00\x00\x00", b"\xfc", b"\xff", b"\x1c",
                               b"\x5f\xff", b"\x3f"))  # fmt: skip
        if kind in (5, 6, 7):
            return self.item(depth + 1) if depth < 30 else b"\x00"
        if kind in (8, 9, 10):
            count = rng.choice((0, 1, 2, 3, 4, rng.randrange(0, 8)))
            items = b"".join(self.item(depth + 1) for _ in range(count))
            if rng.random() < 0.15:
                return b"\x9f" + items + b"\xff"
            return self.head(4, count) + items
        if kind in (11, 12, 13):
            count = rng.choice((0, 1, 2, 3, rng.randrange(0, 6)))
            pairs = b"".join(self.key() + self.item(depth + 1) for _ in range(count))
            if rng.random() < 0.15:
                return (
                    b"\xbf"
                    + pairs
                    + (self.item(depth + 1) if rng.random() < 0.1 else b"")
                    + b"\xff"
                )
            return self.head(5, count) + pairs
        if kind == 14:
            return self.head(6, rng.choice(_TAGS)) + self.item(depth + 1)
        return self.nested(rng.randrange(1, 22))

    def key(self) -> bytes:
        rng = self.rng
        if rng.random() < 0.6:
            return (
                self.head(0, rng.randrange(0, 12)) if rng.random() < 0.7 else rng.choice(_KEY_POOL)
            )
        return self.item(25)

    def string(self, major: int, content: bytes) -> bytes:
        rng = self.rng
        if rng.random() < 0.12:  # indefinite length, sometimes with a chunk of the wrong type
            cut = rng.randrange(0, len(content) + 1)
            chunks = [content[:cut], content[cut:]]
            body = b"".join(
                self.head(major if rng.random() < 0.95 else 5 - major, len(c)) + c for c in chunks
            )
            return bytes([major << 5 | 31]) + body + b"\xff"
        return self.head(major, len(content)) + content

    def nested(self, depth: int) -> bytes:
        rng = self.rng
        out = b""
        for _ in range(depth):
            out += rng.choice((b"\x81", b"\xa1\x01", b"\xd8\x3d", b"\x9f", b"\xbf\x01"))
        core = b"\x00"
        closing = b"".join(b"\xff" if b in (0x9F, 0xBF) else b"" for b in reversed(out))
        return out + core + closing


def mutate(rng: random.Random, data: bytes) -> bytes:
    """One to three byte-level mutations of ``data``."""
    out = bytearray(data)
    for _ in range(rng.randrange(1, 4)):
        if not out:
            out.extend(rng.getrandbits(8) for _ in range(4))
        pos = rng.randrange(len(out))
        op = rng.randrange(8)
        if op == 0:
            out[pos] ^= 1 << rng.randrange(8)
        elif op == 1:
            out[pos] = rng.getrandbits(8)
        elif op == 2:
            out[pos:pos] = bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 6)))
        elif op == 3:
            del out[pos : pos + rng.randrange(1, 8)]
        elif op == 4:
            del out[pos:]
        elif op == 5:
            end = min(len(out), pos + rng.randrange(1, 16))
            out[pos:pos] = out[pos:end]
        elif op == 6:
            out[pos] = rng.choice(
                (0x00, 0xFF, 0x7F, 0x9F, 0xBF, 0x5F, 0x18, 0x1B, 0xA0, 0x80, 0xC0)
            )
        else:
            out[pos] = out[pos] & 0xE0 | rng.randrange(32)
    return bytes(out)


# ---- COSE messages from parts ------------------------------------------------------------


def _bstr(data: bytes) -> bytes:
    return bytes(cbor2.dumps(data))


class Assembler:
    """COSE_Sign1/Mac0/Encrypt0 bytes from (possibly broken) parts, correctly protected."""

    def __init__(self, rng: random.Random, mat: Material) -> None:
        self.rng, self.mat, self.gen = rng, mat, Generator(rng)

    def protected(self, alg: Algorithm) -> bytes:
        rng = self.rng
        choice = rng.randrange(12)
        if choice < 5:
            return bytes(cbor2.dumps({1: alg.id}))
        options: list[Any] = [
            {1: alg.id, 4: b"m"}, {1: alg.id, 2: [1]}, {1: alg.id, 2: [4, 5]}, {1: alg.id, 2: []},
            {1: alg.id, 2: [9]}, {1: alg.id, 2: "x"}, {}, {1: "ES256"}, {1: -999}, [1],
            {1: alg.id, "crit": 1}, {1: alg.id, 5: bytes(13)},
        ]  # fmt: skip
        value = rng.choice(options)
        raw = bytes(cbor2.dumps(value))
        if rng.random() < 0.3:
            raw = mutate(rng, raw) if rng.random() < 0.5 else self.gen.item(10)
        return raw if rng.random() > 0.05 else b""

    def unprotected(self, kid: bytes | None, iv: bytes | None) -> bytes:
        rng = self.rng
        headers: dict[Any, Any] = {}
        if kid is not None and rng.random() < 0.9:
            headers[4] = kid if rng.random() < 0.95 else "m"
        if iv is not None:
            headers[5] = iv if rng.random() < 0.95 else iv[:-1]
        if rng.random() < 0.1:
            headers[rng.choice((1, 2, 3, 6, "x", -1, 100))] = rng.choice((b"", 1, [], "z"))
        raw = bytes(cbor2.dumps(headers))
        if rng.random() < 0.08:  # a value nested near the depth bound (16 in all)
            raw = bytes([0xA0 | len(headers) + 1]) + raw[1:] + b"\x18\x63"
            raw += self.gen.nested(rng.randrange(9, 16))
        if rng.random() < 0.1:
            raw = mutate(rng, raw)
        return raw

    def payload(self) -> bytes:
        rng = self.rng
        roll = rng.random()
        if roll < 0.45:
            return mutate(rng, rng.choice(self.mat.claims))
        if roll < 0.6:
            return rng.choice(self.mat.claims)
        if roll < 0.7:
            return self.claims_from_parts()
        if roll < 0.8:
            return rng.choice(self.mat.tokens)
        return self.gen.item()

    def claims_from_parts(self) -> bytes:
        """A claims map of known claims with values of the wrong (or right) type."""
        rng = self.rng
        values: list[Any] = [
            "a", "", "x" * 1100, b"\x00", bytes(32), 0, -1, 1.5, float("nan"), float("inf"),
            1_750_000_000.9, 253_402_300_800, True, None, [], ["a", "b"], ["a"] * 17, [1], {},
            {1: {1: 2, -1: 1, -2: bytes(32), -3: bytes(32)}}, {4: {0: b"\x01", 2: bytes(16)}},
            {3: b"k"}, {5: bytes(32)}, {5: bytes(31)}, {2: [b"", {}, b""]}, {6: 1}, {3: "k"},
            {1: {1: 4, -1: bytes(16)}}, {1: {1: 2, -1: 1, -2: bytes(31), -3: bytes(32)}},
            {1: {1: 1, -1: 6, -2: bytes(32)}}, {1: {1: 99}}, {4: {0: b"\x01"}}, "read write",
            b"\x83\x18\x1e\x01\x02", [["/a", 1]], ["/a", 5], 2,
        ]  # fmt: skip
        claims: dict[Any, Any] = {}
        for _ in range(rng.randrange(1, 8)):
            claims[rng.choice((1, 2, 3, 4, 5, 6, 7, 8, 9, 38, 39, 40, 41, "iss", -1))] = rng.choice(
                values
            )
        return bytes(cbor2.dumps(claims))

    def message(self) -> tuple[bytes, Key]:
        rng = self.rng
        mat = self.mat
        kind = rng.randrange(10)
        if kind < 4:
            alg, key = Algorithm.HMAC_256_64, mat.mac
        elif kind < 5:
            alg, key = Algorithm.HMAC_256_256, mat.mac
        elif kind < 8:
            alg, key = Algorithm.AES_CCM_16_64_128, mat.aead
        elif kind < 9:
            alg, key = Algorithm.EDDSA, mat.ed_signer
        else:
            alg, key = Algorithm.ES256, mat.signer
        body = self.protected(alg)
        payload = self.payload()
        aad = b"" if rng.random() < 0.9 else b"\x01"
        if alg.kind == "aead":
            iv = bytes(rng.getrandbits(8) for _ in range(13))
            enc_structure = bytes(cbor2.dumps(["Encrypt0", body, aad]))
            content = cose.aead_encrypt(alg, key, iv, payload, enc_structure)
            items = [_bstr(body), self.unprotected(key.kid, iv), _bstr(content)]
            tag = 16
        else:
            label = "MAC0" if alg.kind == "mac" else "Signature1"
            to_be = bytes(cbor2.dumps([label, body, aad, payload]))
            if alg.kind == "mac":
                assert key.secret is not None
                proof = hmac.new(key.secret, to_be, hashlib.sha256).digest()[: alg.tag_bytes]
                tag = 17
            else:
                proof = ref_cose._sign(alg, key, to_be)
                tag = 18
            items = [_bstr(body), self.unprotected(key.kid, None), _bstr(payload), _bstr(proof)]
        framing = rng.random()
        array = bytes([0x80 | len(items)]) + b"".join(items)
        if framing < 0.8:
            data = bytes(cbor2.dumps(cbor2.CBORTag(tag, None)))[:-1] + array
        elif framing < 0.9:
            data = b"\xd8\x3d" + bytes(cbor2.dumps(cbor2.CBORTag(tag, None)))[:-1] + array
        else:
            data = array
        if rng.random() < 0.1:
            data = mutate(rng, data)
        return data, key


# ---- the comparisons ---------------------------------------------------------------------


@dataclass
class Report:
    cases: int = 0
    accepted: int = 0
    mismatches: list[str] = field(default_factory=list)
    #: Inputs that both accepted, by comparison (a check that the deep paths are reached).
    accepted_by: dict[str, int] = field(default_factory=dict)
    rejected_by: dict[str, int] = field(default_factory=dict)

    def check(self, what: str, data: Any, mine: Callable[[], Any], ref: Callable[[], Any],
              view: Callable[[Any], Any] = lambda v: v) -> None:  # fmt: skip
        a, b = outcome(mine), outcome(ref)
        self.cases += 1
        counts = self.accepted_by if a[0] == "ok" else self.rejected_by
        counts[what] = counts.get(what, 0) + 1
        if a[0] == "ok":
            self.accepted += 1
        if not same_outcome(a, b, view):
            self.mismatches.append(f"{what} {data!r}: {a!r} != reference {b!r}")


def compare_cbor(report: Report, data: bytes) -> None:
    report.check("cbor.loads", data, lambda: cbor.loads(data), lambda: ref_cbor.loads(data))
    report.check("cbor.check", data, lambda: cbor.check(data), lambda: ref_cbor.check(data))
    # other bounds, picked from the input so that a run stays reproducible
    depth, size = _BOUNDS[(sum(data[:4]) + len(data)) % len(_BOUNDS)]
    size = {-2: len(data), -3: len(data) - 1}.get(size, size)
    report.check(
        "cbor.loads(bounds)", data,
        lambda: cbor.loads(data, max_depth=depth, max_size=size),
        lambda: ref_cbor.loads(data, max_depth=depth, max_size=size),
    )  # fmt: skip


#: (max_depth, max_size) pairs for :func:`compare_cbor`; -2 is the input's length, -3 one
#: less (a max_depth above 256 is a ValueError of the caller, new since the reference).
_BOUNDS = ((-1, 4096), (0, 4096), (1, 4096), (2, 4096), (3, -2), (256, -3),
           (16, 0), (16, -1), (4, -2), (16, -3), (16, 4096))  # fmt: skip


def compare_cwt(report: Report, data: bytes, mat: Material, key: Key | None = None) -> None:
    keys = mat.verify_keys
    report.check(
        "cwt.decode", data,
        lambda: cwt.decode(data, keys), lambda: ref_cwt.decode(data, keys), _decoded_view,
    )  # fmt: skip
    if key is not None:
        allowed = cose.SIGNATURE_ALGORITHMS | cose.MAC_ALGORITHMS | cose.AEAD_ALGORITHMS
        report.check(
            "cose.decode", data,
            lambda: cose.decode(data, key, allowed=allowed),
            lambda: ref_cose.decode(data, key, allowed=allowed),
            _message_view,
        )  # fmt: skip
        one = key if key.is_symmetric or key.curve == Curve.ED25519 else key.public_key()
        report.check(
            "cwt.decode(one key)", data,
            lambda: cwt.decode(data, one), lambda: ref_cwt.decode(data, one), _decoded_view,
        )  # fmt: skip
        report.check(
            "cwt.open_layers(aad)", data,
            lambda: cwt.open_layers(data, [key], external_aad=b"\x01"),
            lambda: ref_cwt.open_layers(data, [key], external_aad=b"\x01"),
            _opened_view,
        )  # fmt: skip


def _cose_key_variants(rng: random.Random, mat: Material) -> dict[Any, Any]:
    """The PoP key's COSE_Key, or one of its near misses (types, curve, point, private part).

    The same key comes back often, so the claims model's cache of imported keys is hit
    by maps equal to a cached one but for one item's type, or one bit of the point.
    """
    good: dict[Any, Any] = mat.pop.public_key().to_cose_key()
    roll = rng.randrange(12)
    if roll < 4:
        return dict(good)
    variant = dict(good)
    label = rng.choice(list(variant))
    if roll == 4:
        variant[label] = float(variant[label]) if type(variant[label]) is int else "x"
    elif roll == 5:
        variant[label] = True
    elif roll == 6:
        y = bytearray(variant[-3])
        y[rng.randrange(len(y))] ^= 1 << rng.randrange(8)
        variant[-3] = bytes(y)  # off the curve, almost always
    elif roll == 7:
        variant[-4] = bytes(32)
    elif roll == 8:
        variant[2] = rng.choice((b"k1", "k1", 7))
    elif roll == 9:
        variant[3] = rng.choice((-7, -35, -8, "ES256", 1.5))
    elif roll == 10:
        del variant[label]
    else:
        variant = {float(k) if k == 1 else k: v for k, v in variant.items()}
    return variant


def compare_claims(report: Report, rng: random.Random, mat: Material) -> None:
    """The claims model on claim maps of right and wrong types, straight from dicts."""
    if rng.random() < 0.5:
        claims = cbor2.loads(rng.choice(mat.claims))
    else:
        claims = cbor2.loads(Assembler(rng, mat).claims_from_parts())
    if not isinstance(claims, dict):
        return
    if rng.random() < 0.5:
        claims[8] = {1: _cose_key_variants(rng, mat)}
    if rng.random() < 0.2:
        claims[rng.choice((1.0, True, 9.0, 8.0, "cnf", 41, -7))] = rng.choice((1, "a", None))
    if rng.random() < 0.1:
        claims[rng.choice((1, 2, 3, 4, 5, 6, 7, 38, 39, 40))] = None
    report.check(
        "from_cwt_claims", claims,
        lambda: AccessToken.from_cwt_claims(claims),
        lambda: ref_token.from_cwt_claims(claims),
        _token_view,
    )  # fmt: skip


def compare_encode(report: Report, rng: random.Random, mat: Material) -> None:
    """Deterministic encodings (fixed IVs): claims, COSE and CWT bytes must be identical."""
    tokens = sample_tokens(rng, mat)
    token = rng.choice(tokens)
    if rng.random() < 0.5:
        token = token.replace(exp=rng.randrange(0, 1 << 40), cti=bytes(rng.randrange(0, 30)))
    report.check(
        "to_cwt_payload", token, token.to_cwt_payload, lambda: ref_token.to_cwt_payload(token)
    )
    protection = rng.choice([p for p in protections(mat) if not _signs_ecdsa(p)])
    tag = rng.random() < 0.5
    report.check(
        "cwt.encode", token,
        lambda: cwt.encode(token, protection, cwt_tag=tag),
        lambda: ref_cwt.encode(token, protection, cwt_tag=tag),
    )  # fmt: skip
    value = _decoded(Generator(rng).item(12))
    if _encodable(value):
        report.check("cbor.dumps", value, lambda: cbor.dumps(value), lambda: ref_cbor.dumps(value))


def _signs_ecdsa(protection: cwt.Protection) -> bool:
    """ECDSA signatures are randomized: such encodings cannot be compared byte for byte."""
    inner = protection.sign if isinstance(protection, cwt.Nested) else protection
    return isinstance(inner, cwt.Sign1) and inner.key.curve == Curve.P_256


def _decoded(data: bytes) -> Any:
    try:
        return ref_cbor.loads(data)
    except KeyboundError:
        return None


def _encodable(value: Any) -> bool:
    try:
        ref_cbor.dumps(value)
    except Exception:
        return False
    return True


def inputs(rng: random.Random, mat: Material) -> Iterator[tuple[str, bytes, Key | None]]:
    """An endless stream of (kind, bytes, key for cose.decode)."""
    gen = Generator(rng)
    assembler = Assembler(rng, mat)
    while True:
        roll = rng.random()
        if roll < 0.3:
            yield "cbor", gen.item(), None
        elif roll < 0.45:
            yield "cbor", mutate(rng, gen.item()), None
        elif roll < 0.7:
            yield "token", mutate(rng, rng.choice(mat.tokens)), None
        elif roll < 0.75:
            yield "token", rng.choice(mat.tokens), None
        else:
            data, key = assembler.message()
            yield "cose", data, key


def run(count: int, seed: int, *, encodes: int | None = None) -> Report:
    """Compare ``count`` decoder inputs (and ``encodes`` encodings, default count/20)."""
    rng = random.Random(seed)
    mat = material(rng)
    report = Report()
    stream = inputs(rng, mat)
    for _ in range(count):
        kind, data, key = next(stream)
        compare_cbor(report, data)
        if kind != "cbor" or rng.random() < 0.2:
            compare_cwt(report, data, mat, key)
    for _ in range(count // 20 if encodes is None else encodes):
        compare_encode(report, rng, mat)
    for _ in range(count // 8):
        compare_claims(report, rng, mat)
    return report


__all__ = ["Report", "compare_cbor", "compare_cwt", "material", "mutate", "run"]
