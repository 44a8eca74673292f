"""EDHOC authentication credentials: CWT Claims Sets with a COSE_Key (RFC 9528 §3.5.2).

A CCS (RFC 8392 claims, without a COSE wrapper) whose ``cnf`` claim holds a
COSE_Key (RFC 8747 §3.2) is the authentication credential the EDHOC and OSCORE
profile of ACE binds to a token (the draft's ``kccs``). EDHOC uses the encoded
CCS as CRED_x byte for byte, so a :class:`Ccs` keeps the bytes it was read from;
it is sent by value in ID_CRED_x as ``{14: CCS}`` or by reference as
``{4: kid}`` (RFC 9528 §3.5.3), see :meth:`Ccs.id_cred_by_value` and
:meth:`Ccs.id_cred_by_kid`.

Only EC2 P-256 keys are taken: cipher suite 2 (RFC 9528 §3.6), the suite
keybound runs. A key without ``kid`` is refused because ID_CRED_x by reference
needs one.

What the key is for is said by the COSE_Key's ``alg`` (RFC 9052 §7.1): ES256 (-7)
makes it a signature key (the side signs: EDHOC methods 0, and 1 or 2), no ``alg``
a static DH key (methods 3, and 1 or 2), as ``keybound key generate --ccs`` has
always written it. Any other ``alg`` is refused, so one key is never used both
to sign and for Diffie-Hellman.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from . import cbor
from .edhoc import Credential
from .errors import DecodeError, KeyboundError, UnsupportedPopKey
from .keys import Key
from .numbers.cnf_methods import CnfMethod
from .numbers.cose_algorithms import Algorithm
from .numbers.cose_keys import Curve, KeyType
from .numbers.cwt_claims import CWTClaim
from .numbers.edhoc_profile import COSE_HEADER_KCCS, COSE_HEADER_KID

#: Bound on an encoded CCS: a P-256 COSE_Key with kid and subject is about 100 bytes.
MAX_CCS_BYTES = 512
_ES256 = -7
#: Bound on a kid in a CCS, so that ID_CRED_x by reference stays small.
MAX_KID_BYTES = 16


@dataclass(frozen=True)
class Ccs:
    """A CCS with a P-256 COSE_Key in ``cnf``: an EDHOC authentication credential."""

    encoded: bytes = field(repr=False)
    """The CCS bytes exactly as read: CRED_x of EDHOC (RFC 9528 §5.3.2)."""
    key: Key
    """The public key of ``cnf``, with its kid."""
    subject: str | None = None
    signs: bool = False
    """Whether the key signs (COSE_Key ``alg`` ES256), else it is a static DH key."""

    @property
    def kid(self) -> bytes:
        assert self.key.kid is not None  # checked on decoding
        return self.key.kid

    @property
    def fingerprint(self) -> bytes:
        """SHA-256 of the encoded CCS: names the credential without depending on its kid."""
        return hashlib.sha256(self.encoded).digest()

    def claims(self) -> dict[Any, Any]:
        """The decoded CCS map."""
        value = cbor.loads(self.encoded, max_size=MAX_CCS_BYTES)
        assert isinstance(value, dict)
        return value

    def id_cred_by_value(self) -> bytes:
        """ID_CRED_x carrying this CCS by value: ``{14: CCS}`` (RFC 9528 §3.5.3)."""
        return b"\xa1\x0e" + self.encoded

    def id_cred_by_kid(self) -> bytes:
        """ID_CRED_x referring to this CCS by kid: ``{4: kid}`` (RFC 9528 §3.5.3)."""
        return cbor.dumps({COSE_HEADER_KID: self.kid})

    def matches_id_cred(self, id_cred: bytes) -> bool:
        """Whether an ID_CRED_x names this credential, by value or by kid (constant time)."""
        by_value = hmac.compare_digest(id_cred, self.id_cred_by_value())
        by_kid = hmac.compare_digest(id_cred, self.id_cred_by_kid())
        return by_value or by_kid

    def edhoc(self, *, by_value: bool = False) -> Credential:
        """This CCS as keybound's EDHOC takes it: CRED_x, ID_CRED_x, the public key."""
        cose = self.key.to_cose_key()
        id_cred = self.id_cred_by_value() if by_value else self.id_cred_by_kid()
        return Credential(self.encoded, id_cred, cose[-2] + cose[-3], self.signs)

    def same(self, other: Ccs) -> bool:
        """Whether ``other`` is the same credential, byte for byte."""
        return hmac.compare_digest(self.encoded, other.encoded)

    @classmethod
    def decode(cls, encoded: bytes) -> Ccs:
        """Read a CCS; :class:`UnsupportedPopKey` for one keybound cannot use in EDHOC."""
        if not isinstance(encoded, bytes) or len(encoded) > MAX_CCS_BYTES:
            raise UnsupportedPopKey(f"a credential is a CCS of at most {MAX_CCS_BYTES} bytes")
        try:
            claims = cbor.loads(encoded, max_size=MAX_CCS_BYTES)
        except KeyboundError as exc:
            raise UnsupportedPopKey(f"the credential is not CBOR: {exc.description}") from None
        if not isinstance(claims, dict):
            raise UnsupportedPopKey("a CCS is a CBOR map of claims (RFC 8392 §7)")
        cnf = claims.get(int(CWTClaim.CNF))
        if not isinstance(cnf, dict) or list(cnf) != [int(CnfMethod.COSE_KEY)]:
            raise UnsupportedPopKey("the CCS must hold a COSE_Key in its cnf claim (RFC 8747)")
        body = cnf[int(CnfMethod.COSE_KEY)]
        if not isinstance(body, dict) or set(body) - {1, 2, 3, -1, -2, -3}:
            raise UnsupportedPopKey("the credential's COSE_Key must be public and EC2")
        try:
            key = Key.from_cose_key(body)
        except (KeyboundError, ValueError) as exc:
            raise UnsupportedPopKey(f"the credential's COSE_Key: {exc}") from None
        if key.kty != KeyType.EC2 or key.curve != Curve.P_256:
            raise UnsupportedPopKey("only P-256 credentials are supported (cipher suite 2)")
        if key.kid is None or not 0 < len(key.kid) <= MAX_KID_BYTES:
            raise UnsupportedPopKey(f"the credential's key needs a kid of 1-{MAX_KID_BYTES} bytes")
        subject = claims.get(int(CWTClaim.SUB))
        if subject is not None and not isinstance(subject, str):
            raise UnsupportedPopKey("the CCS subject must be text")
        alg = body.get(3)
        if alg not in (None, _ES256):
            raise UnsupportedPopKey("the credential's alg is ES256 (signing) or absent (static DH)")
        return cls(encoded, key, subject, signs=alg == _ES256)

    @classmethod
    def make(cls, key: Key, *, subject: str | None = None, signing: bool = False) -> Ccs:
        """The CCS of ``key``'s public part (kid required), deterministically encoded.

        ``signing``: an ES256 signature key (``alg`` -7), else a static DH key (no ``alg``).
        """
        if key.kid is None:
            raise ValueError("an EDHOC credential's key needs a kid")
        cose_key = key.public_key().with_alg(Algorithm.ES256 if signing else None).to_cose_key()
        claims: dict[int, object] = {int(CWTClaim.CNF): {int(CnfMethod.COSE_KEY): cose_key}}
        if subject is not None:
            claims[int(CWTClaim.SUB)] = subject
        return cls.decode(cbor.dumps(claims))


def read_id_cred_kccs(id_cred: bytes) -> bytes | None:
    """The CCS bytes of an ID_CRED_x ``{14: CCS}``, or None for another form."""
    if id_cred[:2] != b"\xa1\x0e":
        return None
    try:
        cbor.loads(id_cred, max_size=MAX_CCS_BYTES + 2)
    except KeyboundError:
        return None
    return id_cred[2:]


def private_key_map(key: Key) -> dict[int, object]:
    """The minimal COSE_Key of an EC2 P-256 private key: kty, crv, d (RFC 9053 §7.1)."""
    d = key.to_cose_key(include_private=True).get(-4)
    if key.kty != KeyType.EC2 or key.curve != Curve.P_256 or not isinstance(d, bytes):
        raise UnsupportedPopKey("an EDHOC private key is a P-256 key with its private part")
    return {1: int(KeyType.EC2), -1: int(Curve.P_256), -4: d}


def key_from_private_d(d: bytes, *, kid: bytes | None = None) -> Key:
    """The P-256 key of private scalar ``d`` (32 bytes), with its public part."""
    if len(d) != 32:
        raise DecodeError("a P-256 private key is 32 bytes")
    private = ec.derive_private_key(int.from_bytes(d, "big"), ec.SECP256R1())
    return Key.from_cryptography(private, kid=kid)


def holds(d: bytes, credential: Ccs) -> bool:
    """Whether the private key ``d`` is the one of ``credential``'s public key (the point
    alone: the credential's ``alg`` says how the key is used, not which key it is)."""
    ours = key_from_private_d(d, kid=credential.kid).public_key().to_cose_key()
    theirs = credential.key.to_cose_key()
    ours.pop(3, None)
    theirs.pop(3, None)
    return ours == theirs


def private_key_from_map(value: object) -> bytes:
    """The 32 bytes of ``d`` from a COSE_Key ``{1: 2, -1: 1, -4: d}``."""
    if not isinstance(value, dict) or value.get(1) != int(KeyType.EC2):
        raise DecodeError("an EDHOC private key is an EC2 COSE_Key")
    if value.get(-1) != int(Curve.P_256):
        raise DecodeError("an EDHOC private key is a P-256 key")
    d = value.get(-4)
    if not isinstance(d, bytes) or len(d) != 32:
        raise DecodeError("an EDHOC private key needs d, 32 bytes")
    return d


__all__ = [
    "COSE_HEADER_KCCS",
    "MAX_CCS_BYTES",
    "MAX_KID_BYTES",
    "Ccs",
    "holds",
    "key_from_private_d",
    "private_key_from_map",
    "private_key_map",
    "read_id_cred_kccs",
]
