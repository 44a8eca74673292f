"""IANA "COSE Algorithms" registry (RFC 9052, RFC 9053), named as IANA names them.

Each algorithm carries its sizes; ``value`` is the registered number.
"""

from dataclasses import dataclass
from enum import Enum


@dataclass(frozen=True)
class AlgorithmInfo:
    value: int
    name: str
    kind: str  # "sign", "mac", "aead", "kdf" or "hash"
    key_bytes: int = 0
    tag_bytes: int = 0
    iv_bytes: int = 0
    jose: str | None = None  # the JOSE name, where one exists


class Algorithm(Enum):
    """COSE algorithms keybound implements. ``Algorithm.ES256.value.value == -7``."""

    ES256 = AlgorithmInfo(-7, "ES256", "sign", jose="ES256")
    ES384 = AlgorithmInfo(-35, "ES384", "sign", jose="ES384")
    EDDSA = AlgorithmInfo(-8, "EdDSA", "sign", jose="EdDSA")
    HMAC_256_64 = AlgorithmInfo(4, "HMAC 256/64", "mac", key_bytes=32, tag_bytes=8)
    HMAC_256_256 = AlgorithmInfo(5, "HMAC 256/256", "mac", key_bytes=32, tag_bytes=32, jose="HS256")
    A128GCM = AlgorithmInfo(1, "A128GCM", "aead", key_bytes=16, tag_bytes=16, iv_bytes=12)
    A256GCM = AlgorithmInfo(3, "A256GCM", "aead", key_bytes=32, tag_bytes=16, iv_bytes=12)
    AES_CCM_16_64_128 = AlgorithmInfo(
        10, "AES-CCM-16-64-128", "aead", key_bytes=16, tag_bytes=8, iv_bytes=13
    )
    AES_CCM_16_128_128 = AlgorithmInfo(
        30, "AES-CCM-16-128-128", "aead", key_bytes=16, tag_bytes=16, iv_bytes=13
    )
    CHACHA20_POLY1305 = AlgorithmInfo(
        24, "ChaCha20/Poly1305", "aead", key_bytes=32, tag_bytes=16, iv_bytes=12
    )
    DIRECT = AlgorithmInfo(-6, "direct", "kdf")

    @property
    def id(self) -> int:
        """The registered COSE number."""
        return self.value.value

    @property
    def kind(self) -> str:
        return self.value.kind

    @property
    def key_bytes(self) -> int:
        return self.value.key_bytes

    @property
    def tag_bytes(self) -> int:
        return self.value.tag_bytes

    @property
    def iv_bytes(self) -> int:
        return self.value.iv_bytes

    @classmethod
    def from_id(cls, value: object) -> "Algorithm":
        """The algorithm registered as ``value``; raises ``KeyError`` if keybound lacks it."""
        if type(value) is not int:
            raise KeyError(value)
        return _BY_ID[value]

    @classmethod
    def from_name(cls, name: str) -> "Algorithm":
        """The algorithm by its IANA name, JOSE name or member name; ``KeyError`` if unknown."""
        return _BY_NAME[name]


# Lookup tables, built once: decoders ask for every message.
_BY_ID: dict[int, Algorithm] = {alg.value.value: alg for alg in Algorithm}
_BY_NAME: dict[str, Algorithm] = {
    name: alg
    for alg in Algorithm
    for name in (alg.value.name, alg.value.jose, alg.name)
    if name is not None
}


#: HMAC-based KDF identifiers used in OSCORE input material (RFC 9203 §3.2.1:
#: the ``hkdf`` parameter names an HMAC algorithm; HMAC 256/256 is 5 -> HKDF SHA-256).
HKDF_SHA256 = 5
#: The OSCORE default AEAD, AES-CCM-16-64-128 (RFC 8613 §3.2).
OSCORE_DEFAULT_AEAD = 10
