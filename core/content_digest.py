"""The ``Content-Digest`` field of RFC 9530: a digest of a message's content, sans-IO.

``Content-Digest`` is a Dictionary Structured Field (RFC 8941 §3.2, RFC 9530 §2)
whose keys name hash algorithms from the "Hash Algorithms for HTTP Digest Fields"
registry (RFC 9530 §5) and whose values are Byte Sequences (``:base64:``) of the
digest of the content as sent (after content coding, before transfer coding)::

    Content-Digest: sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:

Only the two algorithms RFC 9530 §5 registers as "Active" are known here,
``sha-256`` and ``sha-512``. :func:`verify_content_digest` needs at least one of
the accepted algorithms, checks every one present (in constant time), and
ignores unknown keys, as RFC 9530 §3 allows. A field value is bounded
(:data:`MAX_FIELD_LENGTH` characters, :data:`MAX_MEMBERS` members): an attacker
chooses it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable, Collection, Mapping
from types import MappingProxyType
from typing import Final

from .errors import InvalidRequest
from .structured_fields import Item, StructuredFieldError, parse_dictionary

__all__ = [
    "DIGEST_ALGORITHMS",
    "MAX_FIELD_LENGTH",
    "MAX_MEMBERS",
    "ContentDigestMismatch",
    "content_digest",
    "parse_content_digest",
    "verify_content_digest",
]

#: RFC 9530 §5, the "Active" algorithms: the field key and the hash function.
DIGEST_ALGORITHMS: Final[Mapping[str, Callable[[bytes], bytes]]] = MappingProxyType(
    {
        "sha-256": lambda data: hashlib.sha256(data).digest(),
        "sha-512": lambda data: hashlib.sha512(data).digest(),
    }
)
#: Longest ``Content-Digest`` value read, in characters.
MAX_FIELD_LENGTH: Final = 1024
#: Most dictionary members read.
MAX_MEMBERS: Final = 8


class ContentDigestMismatch(InvalidRequest):
    """the content does not match its Content-Digest (RFC 9530 §2)"""


def content_digest(body: bytes, algorithms: Collection[str] = ("sha-256",)) -> str:
    """The ``Content-Digest`` value of ``body`` (RFC 9530 §2), one member per algorithm."""
    members: list[str] = []
    for name in algorithms:
        digest = DIGEST_ALGORITHMS.get(name)
        if digest is None:
            raise ValueError(f"unknown digest algorithm {name!r} (RFC 9530 §5)")
        members.append(f"{name}=:{base64.b64encode(digest(body)).decode('ascii')}:")
    if not members:
        raise ValueError("at least one digest algorithm is needed")
    return ", ".join(members)


def parse_content_digest(value: str) -> dict[str, bytes]:
    """The members of a ``Content-Digest`` value (RFC 8941 §4.2.2), key to digest bytes.

    Raises :class:`~keybound.core.errors.InvalidRequest` for a value that is too
    long, has too many members, or is no Dictionary of Byte Sequences.
    """
    if len(value) > MAX_FIELD_LENGTH:
        raise InvalidRequest(f"Content-Digest is longer than {MAX_FIELD_LENGTH} characters")
    try:
        parsed = parse_dictionary(value)
    except StructuredFieldError as err:
        raise InvalidRequest(f"Content-Digest: {err.description}") from None
    if len(parsed) > MAX_MEMBERS:
        raise InvalidRequest(f"Content-Digest has more than {MAX_MEMBERS} members")
    members: dict[str, bytes] = {}
    for name, member in parsed.items():
        if not isinstance(member, Item) or not isinstance(member.value, bytes):
            raise InvalidRequest(f"Content-Digest {name} is not a byte sequence")
        members[name] = member.value
    return members


def verify_content_digest(
    value: str, body: bytes, *, accepted: Collection[str] = ("sha-256", "sha-512")
) -> None:
    """Check ``body`` against a ``Content-Digest`` value (RFC 9530 §2, §3).

    At least one algorithm of ``accepted`` must be present and every accepted one
    present must match; other keys are ignored. Raises
    :class:`ContentDigestMismatch` for a wrong digest and
    :class:`~keybound.core.errors.InvalidRequest` for an unusable field.
    """
    members = parse_content_digest(value)
    checked = [name for name in members if name in accepted and name in DIGEST_ALGORITHMS]
    if not checked:
        raise InvalidRequest(
            f"Content-Digest has none of the accepted algorithms {', '.join(sorted(accepted))}"
        )
    for name in checked:
        if not hmac.compare_digest(members[name], DIGEST_ALGORITHMS[name](body)):
            raise ContentDigestMismatch(f"the content does not match its {name} Content-Digest")
