# keybound firmware: NIST P-256 (secp256r1, SEC 2 §2.4.2) in MicroPython
# integers, for EDHOC cipher suite 2 (RFC 9528 §3.6): ECDH, key generation,
# point validation.  Loaded only by the EDHOC profile.
#
# Scalar multiplication is a Montgomery ladder over all 256 bits of the
# scalar, each step one point addition and one doubling, in homogeneous
# projective coordinates (X:Y:Z) with the complete formulas of Renes,
# Costello and Batina (EUROCRYPT 2016, Algorithms 4 and 6, a = -3): the same
# sequence of field operations for every scalar and every point, infinity
# included, and one modular inversion at the end.
#
# NOT CONSTANT-TIME.  MicroPython's integers are arbitrary-precision (mpz):
# multiplication, reduction and inversion take time that depends on the
# values, and the ladder picks its operands by indexing with a key bit.  The
# fixed sequence of operations removes the gross leak of double-and-add
# (one addition per set bit), not the data-dependent timing of the
# arithmetic below it.  A board whose timing can be measured by an attacker
# close to it needs a C implementation.
#
# Every point received from a peer goes through decompress() or
# check_point(): coordinates below p, on the curve (y^2 = x^3 - 3x + b);
# infinity has no 32-byte encoding, and results at infinity are refused.

# The error messages are one string constant, _MSG, cut when an error is
# raised (see cbor.py, "Error messages").

from micropython import const

# Module globals, not const(): a const() integer this large is a constant of
# every function that uses it, and the module's heap grew by 220 bytes.
P = 0xFFFFFFFF00000001000000000000000000000000FFFFFFFFFFFFFFFFFFFFFFFF
N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
B = 0x5AC635D8AA3A93E7B3EBBD55769886BC651D06B0CC53B0F63BCE3C3E27D2604B
GX = 0x6B17D1F2E12C4247F8BCE6E563A440F277037D812DEB33A0F4A13945D898C296
GY = 0x4FE342E2FE1A7F9B8EE7EB4A7C0F9E162BCE33576B315ECECBB6406837BF51F5

_MSG = const(
    "result at infinity|not on P-256|x: not 32 bytes|x not below p|x of no point|bad private key"
)
_INFINITY = const(0)
_NOT_ON = const(1)
_X_LEN = const(2)
_X_RANGE = const(3)
_X_NO_POINT = const(4)
_BAD_KEY = const(5)


class CurveError(ValueError):
    """A point not on P-256, a scalar out of range, or a result at infinity."""


def _error(i):
    return CurveError(_MSG.split("|")[i])


def _add(p1, p2):
    # Complete addition (RCB 2016, Algorithm 4, a = -3): any two points,
    # equal ones and infinity (0:1:0) included.
    x1, y1, z1 = p1
    x2, y2, z2 = p2
    t0 = x1 * x2 % P
    t1 = y1 * y2 % P
    t2 = z1 * z2 % P
    t3 = ((x1 + y1) * (x2 + y2) - t0 - t1) % P
    t4 = ((y1 + z1) * (y2 + z2) - t1 - t2) % P
    y3 = ((x1 + z1) * (x2 + z2) - t0 - t2) % P
    x3 = 3 * (y3 - B * t2) % P
    z3 = t1 - x3
    x3 = t1 + x3
    y3 = 3 * (B * y3 - 3 * t2 - t0) % P
    t0 = 3 * (t0 - t2)
    return (
        (x3 * t3 - t4 * y3) % P,
        (x3 * z3 + t0 * y3) % P,
        (t4 * z3 + t3 * t0) % P,
    )


def _dbl(p1):
    # Complete doubling (RCB 2016, Algorithm 6, a = -3), infinity included.
    x, y, z = p1
    t0 = x * x % P
    t1 = y * y % P
    t2 = z * z % P
    t3 = 2 * x * y % P
    z3 = 2 * x * z % P
    y3 = 3 * (B * t2 - z3) % P
    x3 = t1 - y3
    y3 = (t1 + y3) * x3 % P
    x3 = x3 * t3 % P
    t2 = 3 * t2
    z3 = 3 * (B * z3 - t2 - t0) % P
    t0 = (3 * t0 - t2) * z3
    t3 = 2 * y * z % P
    return (x3 - t3 * z3) % P, (y3 + t0) % P, 4 * t3 * t1 % P


def mul(k, x, y):
    """k * (x, y) -> affine (x, y); CurveError when the result is infinity.

    (x, y) must be a valid point (see check_point); 0 < k < 2**256.
    """
    r = [(0, 1, 0), (x, y, 1)]
    for i in range(255, -1, -1):
        b = (k >> i) & 1
        r[1 - b] = _add(r[0], r[1])
        r[b] = _dbl(r[b])
    x, y, z = r[0]
    if not z:
        raise _error(_INFINITY)
    z = pow(z, P - 2, P)  # the one inversion (Fermat)
    return x * z % P, y * z % P


def _rhs(x):
    return (x * x * x - 3 * x + B) % P


def check_point(x, y):
    """Raise CurveError unless (x, y) is a finite point of P-256."""
    if not (0 <= x < P and 0 <= y < P) or y * y % P != _rhs(x):
        raise _error(_NOT_ON)


def decompress(xb):
    """The point with x-coordinate xb (32 bytes, big-endian), one of its y.

    ECDH needs only x (RFC 9528 §3.6 sends x alone); either y gives the
    same shared x-coordinate.  Raises CurveError for x >= p or an x that
    is on no point of the curve.
    """
    if len(xb) != 32:
        raise _error(_X_LEN)
    x = int.from_bytes(xb, "big")
    if x >= P:
        raise _error(_X_RANGE)
    a = _rhs(x)
    y = pow(a, (P + 1) // 4, P)  # p = 3 mod 4
    if y * y % P != a:
        raise _error(_X_NO_POINT)
    return x, y


def scalar(db):
    """The private scalar of 32 bytes; CurveError unless 1 <= d <= n - 1."""
    d = int.from_bytes(db, "big")
    if len(db) != 32 or not 0 < d < N:
        raise _error(_BAD_KEY)
    return d


def generate(rand):
    """A private key (32 bytes) from rand(32), by rejection sampling in [1, n-1]."""
    while True:
        db = rand(32)
        d = int.from_bytes(db, "big")
        if 0 < d < N:
            return bytes(db)


def public(db):
    """The public key (x, y) of private key db."""
    return mul(scalar(db), GX, GY)


def ecdh(db, x, y):
    """x-coordinate (32 bytes) of db * (x, y): the ECDH shared secret."""
    check_point(x, y)
    return mul(scalar(db), x, y)[0].to_bytes(32, "big")
