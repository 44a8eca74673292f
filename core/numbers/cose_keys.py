"""IANA "COSE Key Common Parameters", "COSE Key Types", "COSE Key Type Parameters"
and "COSE Elliptic Curves" registries (RFC 9052 §7, RFC 9053 §7).

One enum per key type, so that ``-1`` means ``crv`` for EC2/OKP and ``k`` for
Symmetric without members aliasing each other.
"""

from enum import IntEnum


class KeyCommon(IntEnum):
    KTY = 1
    KID = 2
    ALG = 3
    KEY_OPS = 4
    BASE_IV = 5


class KeyType(IntEnum):
    OKP = 1
    EC2 = 2
    SYMMETRIC = 4


class EC2Param(IntEnum):
    CRV = -1
    X = -2
    Y = -3
    D = -4


class OKPParam(IntEnum):
    CRV = -1
    X = -2
    D = -4


class SymmetricParam(IntEnum):
    K = -1


class Curve(IntEnum):
    P_256 = 1
    P_384 = 2
    P_521 = 3
    X25519 = 4
    X448 = 5
    ED25519 = 6
    ED448 = 7

    @property
    def jose_name(self) -> str:
        return {
            Curve.P_256: "P-256",
            Curve.P_384: "P-384",
            Curve.P_521: "P-521",
            Curve.X25519: "X25519",
            Curve.X448: "X448",
            Curve.ED25519: "Ed25519",
            Curve.ED448: "Ed448",
        }[self]
