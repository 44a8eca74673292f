"""EDHOC cipher suites 0 and 2 (RFC 9528 §3.6) on ``cryptography``.

A :class:`CipherSuite` names its IANA number and carries the sizes EDHOC needs
(AEAD key, tag and nonce, hash, MAC length for static DH), and does the four
operations of the suite: ephemeral key generation, ECDH, signing and verifying.

* Suite 0: AES-CCM-16-64-128, SHA-256, MAC 8, X25519, EdDSA (Ed25519).
* Suite 2: AES-CCM-16-64-128, SHA-256, MAC 8, P-256, ES256.

Public keys are as EDHOC sends them: X25519/Ed25519 32 bytes; a P-256 ECDH key is
its x-coordinate alone (RFC 9528 §3.7, the y sign does not change the shared
secret), a P-256 signature key x || y (64 bytes). Every peer key is checked to be
a point of the curve before use (``cryptography`` raises on one that is not); an
X25519 result of all zeros is refused (RFC 7748 §6.1). Every failure here is
:class:`SuiteError`, a :class:`ValueError`.
"""

from __future__ import annotations

import hashlib
import hmac
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, x25519
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from cryptography.hazmat.primitives.ciphers.aead import AESCCM

PrivateKey = ec.EllipticCurvePrivateKey | x25519.X25519PrivateKey | ed25519.Ed25519PrivateKey


class SuiteError(ValueError):
    """A key, signature or ciphertext the suite refuses."""


def hkdf_extract(salt: bytes, ikm: bytes) -> bytes:
    """HKDF-Extract with SHA-256 (RFC 5869 §2.2)."""
    return hmac.digest(salt, ikm, "sha256")


def hkdf_expand(prk: bytes, info: bytes, length: int) -> bytes:
    """HKDF-Expand with SHA-256 (RFC 5869 §2.3), for ``length`` up to 255 * 32."""
    if not 0 < length <= 255 * 32:
        raise SuiteError("HKDF-Expand length out of range")
    out = b""
    block = b""
    counter = 1
    while len(out) < length:
        block = hmac.digest(prk, block + info + bytes((counter,)), "sha256")
        out += block
        counter += 1
    return out[:length]


@dataclass(frozen=True)
class CipherSuite(ABC):
    """One EDHOC cipher suite: its number, sizes, and operations (subclassed per curve)."""

    value: int
    key_length: int = 16
    tag_length: int = 8
    iv_length: int = 13
    hash_length: int = 32
    mac_length: int = 8
    """EDHOC MAC length, the MAC_2/MAC_3 size with static DH authentication."""
    ephemeral_length: int = 32
    """Bytes of G_X and G_Y."""
    names: ClassVar[str] = ""

    def hash(self, data: bytes) -> bytes:
        return hashlib.sha256(data).digest()

    def encrypt(self, key: bytes, iv: bytes, plaintext: bytes, aad: bytes) -> bytes:
        return AESCCM(key, tag_length=self.tag_length).encrypt(iv, plaintext, aad)

    def decrypt(self, key: bytes, iv: bytes, ciphertext: bytes, aad: bytes) -> bytes:
        try:
            return AESCCM(key, tag_length=self.tag_length).decrypt(iv, ciphertext, aad)
        except InvalidTag:
            raise SuiteError("the ciphertext does not decrypt (AES-CCM tag)") from None

    # per curve
    @abstractmethod
    def generate(self) -> PrivateKey: ...

    @abstractmethod
    def private_key(self, raw: bytes, *, signing: bool) -> PrivateKey: ...

    @abstractmethod
    def public_dh(self, key: PrivateKey) -> bytes: ...

    @abstractmethod
    def public_signing(self, key: PrivateKey) -> bytes: ...

    @abstractmethod
    def dh(self, key: PrivateKey, public: bytes) -> bytes: ...

    @abstractmethod
    def sign(self, key: PrivateKey, message: bytes) -> bytes: ...

    @abstractmethod
    def verify(self, public: bytes, message: bytes, signature: bytes) -> None: ...


@dataclass(frozen=True)
class P256Suite(CipherSuite):
    """Cipher suite 2: AES-CCM-16-64-128, SHA-256, 8, P-256, ES256, AES-CCM-16-64-128, SHA-256."""

    names: ClassVar[str] = "AES-CCM-16-64-128, SHA-256, 8, P-256, ES256"

    def generate(self) -> PrivateKey:
        return ec.generate_private_key(ec.SECP256R1())

    def private_key(self, raw: bytes, *, signing: bool) -> PrivateKey:
        if len(raw) != 32:
            raise SuiteError("a P-256 private key is 32 bytes")
        try:
            return ec.derive_private_key(int.from_bytes(raw, "big"), ec.SECP256R1())
        except ValueError:
            raise SuiteError("not a P-256 private key") from None

    def public_dh(self, key: PrivateKey) -> bytes:
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return key.public_key().public_numbers().x.to_bytes(32, "big")

    def public_signing(self, key: PrivateKey) -> bytes:
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        numbers = key.public_key().public_numbers()
        return numbers.x.to_bytes(32, "big") + numbers.y.to_bytes(32, "big")

    def dh(self, key: PrivateKey, public: bytes) -> bytes:
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        if len(public) not in (32, 64):
            raise SuiteError("a P-256 ECDH public key is x (32 bytes) or x || y (64 bytes)")
        point = (b"\x02" if len(public) == 32 else b"\x04") + public
        try:
            peer = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
        except ValueError:
            raise SuiteError("the public key is not a point of P-256") from None
        return key.exchange(ec.ECDH(), peer)

    def sign(self, key: PrivateKey, message: bytes) -> bytes:
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        r, s = decode_dss_signature(key.sign(message, ec.ECDSA(hashes.SHA256())))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")

    def verify(self, public: bytes, message: bytes, signature: bytes) -> None:
        if len(public) != 64 or len(signature) != 64:
            raise SuiteError("ES256 needs a 64-byte public key and signature")
        try:
            peer = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b"\x04" + public)
            der = encode_dss_signature(
                int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
            )
            peer.verify(der, message, ec.ECDSA(hashes.SHA256()))
        except (ValueError, InvalidSignature):
            raise SuiteError("the ES256 signature does not verify") from None


@dataclass(frozen=True)
class Curve25519Suite(CipherSuite):
    """Cipher suite 0: AES-CCM-16-64-128, SHA-256, 8, X25519, EdDSA, AES-CCM-16-64-128, SHA-256."""

    names: ClassVar[str] = "AES-CCM-16-64-128, SHA-256, 8, X25519, EdDSA"

    def generate(self) -> PrivateKey:
        return x25519.X25519PrivateKey.generate()

    def private_key(self, raw: bytes, *, signing: bool) -> PrivateKey:
        if len(raw) != 32:
            raise SuiteError("an X25519 or Ed25519 private key is 32 bytes")
        if signing:
            return ed25519.Ed25519PrivateKey.from_private_bytes(raw)
        return x25519.X25519PrivateKey.from_private_bytes(raw)

    def public_dh(self, key: PrivateKey) -> bytes:
        assert isinstance(key, x25519.X25519PrivateKey)
        return key.public_key().public_bytes_raw()

    def public_signing(self, key: PrivateKey) -> bytes:
        assert isinstance(key, ed25519.Ed25519PrivateKey)
        return key.public_key().public_bytes_raw()

    def dh(self, key: PrivateKey, public: bytes) -> bytes:
        assert isinstance(key, x25519.X25519PrivateKey)
        if len(public) != 32:
            raise SuiteError("an X25519 public key is 32 bytes")
        try:
            return key.exchange(x25519.X25519PublicKey.from_public_bytes(public))
        except ValueError:  # all-zero shared secret (RFC 7748 §6.1)
            raise SuiteError("the X25519 public key gives no shared secret") from None

    def sign(self, key: PrivateKey, message: bytes) -> bytes:
        assert isinstance(key, ed25519.Ed25519PrivateKey)
        return key.sign(message)

    def verify(self, public: bytes, message: bytes, signature: bytes) -> None:
        try:
            ed25519.Ed25519PublicKey.from_public_bytes(public).verify(signature, message)
        except (ValueError, InvalidSignature):
            raise SuiteError("the EdDSA signature does not verify") from None


SUITE_0 = Curve25519Suite(0)
SUITE_2 = P256Suite(2)
#: The suites keybound's EDHOC runs, by number.
SUITES: dict[int, CipherSuite] = {0: SUITE_0, 2: SUITE_2}

__all__ = [
    "SUITES",
    "SUITE_0",
    "SUITE_2",
    "CipherSuite",
    "Curve25519Suite",
    "P256Suite",
    "PrivateKey",
    "SuiteError",
    "hkdf_expand",
    "hkdf_extract",
]
