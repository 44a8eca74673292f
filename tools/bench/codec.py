"""``keybound bench`` group ``codec``: µs per ES256 token encode and verify+decode.

For a CWT (COSE_Sign1, RFC 8392 §7.1) keybound is set against two peers,
python-cwt and pycose, each from a claims map to CWT bytes and back; for a JWT
(RFC 7519) against joserfc used directly. The floor is what no implementation
can avoid: ``cryptography``'s ECDSA P-256 sign or verify plus cbor2
``dumps``/``loads`` of the same claims (for a JWT: ``json`` and base64url
instead of cbor2). Ratios: keybound against its floor, a peer against keybound,
and a floor against the bare ECDSA operation; each figure is timed with its
baseline in paired rounds on the thread's CPU clock, so a peer's baseline is
keybound's time in the peer's own rounds.

Peers that are not installed (they are development dependencies) are skipped
with the reason.
"""

from __future__ import annotations

import base64
import importlib
import json
import time
from collections.abc import Callable
from typing import Any

import cbor2
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from joserfc import jwt as jose_jwt

from keybound.core import cwt, jwt
from keybound.core.numbers.cose_algorithms import Algorithm
from keybound.tools.bench.fixtures import Keys
from keybound.tools.bench.measure import MICROSECONDS, Figure, Group, Runner

KEYBOUND = "keybound"
PEERS = ("python_cwt", "pycose")
FIGURES = (
    "codec.cwt_sign.keybound",
    "codec.cwt_sign.python_cwt",
    "codec.cwt_sign.pycose",
    "codec.cwt_verify.keybound",
    "codec.cwt_verify.python_cwt",
    "codec.cwt_verify.pycose",
    "codec.jwt_sign.keybound",
    "codec.jwt_sign.joserfc",
    "codec.jwt_verify.keybound",
    "codec.jwt_verify.joserfc",
    "codec.floor.sign",
    "codec.floor.verify",
    "codec.floor.jwt_sign",
    "codec.floor.jwt_verify",
)
_ECDSA = ec.ECDSA(hashes.SHA256())


def optional_module(name: str) -> Any | None:
    """The module ``name``, or None when it is not installed."""
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def _b64u(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def _b64u_decode(data: bytes) -> bytes:
    return base64.urlsafe_b64decode(data + b"=" * (-len(data) % 4))


class _Fixture:
    """The token, its claims and keys in the form each library takes."""

    def __init__(self) -> None:
        self.keys = Keys.generate()
        self.token = self.keys.key_token(now=int(time.time()))
        self.claims = self.token.to_cwt_claims()
        self.jwt_claims = self.token.to_jwt_claims()
        signing = self.keys.as_signing
        self.verifying = signing.public_key()
        private = signing.private
        assert isinstance(private, ec.EllipticCurvePrivateKey)
        self.private = private
        self.public = private.public_key()
        self.cose_private = signing.to_cose_key(include_private=True) | {3: Algorithm.ES256.id}
        self.cose_public = signing.to_cose_key() | {3: Algorithm.ES256.id}
        self.kid = signing.kid
        self.jwt_header = {"alg": "ES256", "typ": jwt.JWT_TYP, "kid": signing.to_jwk()["kid"]}


def _python_cwt(fx: _Fixture) -> tuple[Callable[[], object], Callable[[bytes], object]] | None:
    lib = optional_module("cwt")
    if lib is None:
        return None
    private = lib.COSEKey.new(fx.cose_private)
    public = lib.COSEKey.new(fx.cose_public)
    claims = fx.claims

    def sign() -> object:
        return lib.encode(claims, private)

    def verify(data: bytes) -> object:
        return lib.decode(data, public)

    return sign, verify


def _pycose(fx: _Fixture) -> tuple[Callable[[], object], Callable[[bytes], object]] | None:
    if optional_module("pycose") is None:
        return None
    messages = importlib.import_module("pycose.messages")
    headers = importlib.import_module("pycose.headers")
    algorithms = importlib.import_module("pycose.algorithms")
    keys = importlib.import_module("pycose.keys")
    private = keys.CoseKey.from_dict(fx.cose_private)
    public = keys.CoseKey.from_dict(fx.cose_public)
    claims, kid = fx.claims, fx.kid

    def sign() -> object:
        message = messages.Sign1Message(
            phdr={headers.Algorithm: algorithms.Es256},
            uhdr={headers.KID: kid},
            payload=cbor2.dumps(claims),
        )
        message.key = private
        return message.encode()

    def verify(data: bytes) -> object:
        message = messages.CoseMessage.decode(data)
        message.key = public
        if not message.verify_signature():
            raise ValueError("pycose: the signature does not verify")
        return cbor2.loads(message.payload)

    return sign, verify


def _bind(fn: Callable[[bytes], object], data: bytes) -> Callable[[], object]:
    return lambda: fn(data)


#: Each figure's baseline: keybound against the floor, a floor against bare ECDSA,
#: a peer against keybound doing the same operation.
BASELINES = {
    "codec.floor.sign": "ecdsa_p256.sign",
    "codec.floor.verify": "ecdsa_p256.verify",
    "codec.floor.jwt_sign": "ecdsa_p256.sign",
    "codec.floor.jwt_verify": "ecdsa_p256.verify",
    "codec.cwt_sign.keybound": "codec.floor.sign",
    "codec.cwt_verify.keybound": "codec.floor.verify",
    "codec.jwt_sign.keybound": "codec.floor.jwt_sign",
    "codec.jwt_verify.keybound": "codec.floor.jwt_verify",
}


def baseline_of(name: str) -> str:
    """The baseline figure ``name`` is read against."""
    return BASELINES.get(name, name.rsplit(".", 1)[0] + "." + KEYBOUND)


def run(runner: Runner) -> list[Figure]:
    fx = _Fixture()
    sign1 = cwt.Sign1(fx.keys.as_signing, Algorithm.ES256)
    allowed = {Algorithm.ES256}
    work: dict[str, Callable[[], object]] = {}

    # the floors: bare ECDSA, then with the claims serialized and parsed
    payload = cbor2.dumps(fx.claims)
    der = fx.private.sign(payload, _ECDSA)
    work["ecdsa_p256.sign"] = lambda: fx.private.sign(payload, _ECDSA)
    work["ecdsa_p256.verify"] = lambda: fx.public.verify(der, payload, _ECDSA)

    def floor_sign() -> object:
        return fx.private.sign(cbor2.dumps(fx.claims), _ECDSA)

    def floor_verify() -> object:
        fx.public.verify(der, payload, _ECDSA)
        return cbor2.loads(payload)

    work["codec.floor.sign"] = floor_sign
    work["codec.floor.verify"] = floor_verify

    header_json = json.dumps(fx.jwt_header, separators=(",", ":")).encode()
    jws_body = json.dumps(fx.jwt_claims, separators=(",", ":")).encode()
    jws_input = _b64u(header_json) + b"." + _b64u(jws_body)
    jws_der = fx.private.sign(jws_input, _ECDSA)

    def floor_jwt_sign() -> object:
        body = json.dumps(fx.jwt_claims, separators=(",", ":")).encode()
        signing_input = _b64u(header_json) + b"." + _b64u(body)
        return signing_input + b"." + _b64u(fx.private.sign(signing_input, _ECDSA))

    def floor_jwt_verify() -> object:
        fx.public.verify(jws_der, jws_input, _ECDSA)
        return json.loads(_b64u_decode(jws_input.split(b".")[1]))

    work["codec.floor.jwt_sign"] = floor_jwt_sign
    work["codec.floor.jwt_verify"] = floor_jwt_verify

    # CWT: keybound and the peers
    token = cwt.encode(fx.token, sign1)
    work["codec.cwt_sign.keybound"] = lambda: cwt.encode(fx.token, sign1)
    work["codec.cwt_verify.keybound"] = lambda: cwt.decode(token, fx.verifying, allowed=allowed)
    for peer, make in (("python_cwt", _python_cwt), ("pycose", _pycose)):
        pair = make(fx)
        if pair is None:
            module = "cwt" if peer == "python_cwt" else "pycose"
            for op in ("cwt_sign", "cwt_verify"):
                runner.skip(f"codec.{op}.{peer}", f"{peer} is not installed (import {module})")
            continue
        sign, verify = pair
        verify(token)  # the peer must accept keybound's token before it is timed
        work[f"codec.cwt_sign.{peer}"] = sign
        work[f"codec.cwt_verify.{peer}"] = _bind(verify, token)

    # JWT: keybound and joserfc
    jose_private = jwt.to_jose_key(fx.keys.as_signing)
    jose_public = jwt.to_jose_key(fx.verifying, private=False)
    compact = jwt.encode(fx.token, fx.keys.as_signing, alg="ES256")
    work["codec.jwt_sign.keybound"] = lambda: jwt.encode(fx.token, fx.keys.as_signing, alg="ES256")
    work["codec.jwt_verify.keybound"] = lambda: jwt.decode(compact, fx.verifying)
    work["codec.jwt_sign.joserfc"] = lambda: jose_jwt.encode(
        fx.jwt_header, fx.jwt_claims, jose_private, algorithms=["ES256"]
    )
    work["codec.jwt_verify.joserfc"] = lambda: jose_jwt.decode(
        compact, jose_public, algorithms=["ES256"]
    )
    figures = []
    for name in FIGURES:
        if name not in work:
            continue
        base = baseline_of(name)
        timed = runner.compare(name, work[name], work[base])
        figures.append(Figure.paired(name, timed, MICROSECONDS, base))
    return figures


GROUP = Group(
    name="codec",
    title="µs per ES256 token encode / verify+decode, against peers and the floor",
    figures=FIGURES,
    run=run,
    steps=len(FIGURES),
)

__all__ = ["BASELINES", "FIGURES", "GROUP", "baseline_of", "optional_module"]
