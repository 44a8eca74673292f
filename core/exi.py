"""The ``cti`` of a token for a resource server without a clock (RFC 9200 §5.10.3).

Such tokens carry ``exi`` (seconds of validity counted from receipt) and, as ``cti``,
a sequence number the AS keeps per RS; the RS refuses a number not above the
highest it has seen, so an old token cannot be replayed after a newer one. The AS
(:mod:`keybound.core.authz_server`) writes the number and the RS
(:mod:`keybound.core.resource_server`) reads it with the functions here, so both
sides agree on one encoding.
"""

from __future__ import annotations

from . import cbor
from .errors import InvalidClaim, KeyboundError

#: Sequence numbers are 64-bit unsigned integers.
MAX_EXI_SEQUENCE = 2**64 - 1


def encode_exi_sequence(number: int) -> bytes:
    """The ``cti`` of a token with ``exi``: the sequence number as a CBOR uint, in a bstr.

    RFC 9200 §5.10.3 has the AS put a per-RS sequence number into ``cti`` of every
    token with ``exi``. keybound's encoding: ``cti`` is the byte string holding the
    shortest CBOR encoding of the unsigned integer (0 is ``h'00'``, 24 is
    ``h'1818'``, 500 is ``h'1901f4'``).
    """
    if isinstance(number, bool) or not isinstance(number, int):
        raise TypeError("the exi sequence number must be an integer")
    if not 0 <= number <= MAX_EXI_SEQUENCE:
        raise ValueError("the exi sequence number must be a 64-bit unsigned integer")
    return cbor.dumps(number)


def decode_exi_sequence(cti: bytes) -> int:
    """The sequence number of :func:`encode_exi_sequence`; refuses any other encoding."""
    try:
        value = cbor.loads(cti, max_size=9, max_depth=1)
    except KeyboundError as exc:
        raise InvalidClaim(
            "cti of an exi token is not a CBOR sequence number", claim="cti"
        ) from exc
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidClaim("cti of an exi token must hold an unsigned integer", claim="cti")
    if cbor.dumps(value) != cti:
        raise InvalidClaim("cti of an exi token must use the shortest encoding", claim="cti")
    return value


__all__ = ["MAX_EXI_SEQUENCE", "decode_exi_sequence", "encode_exi_sequence"]
