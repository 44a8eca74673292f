"""Token Revocation Lists (RFC 9770): token hashes, the TRL endpoint's answers, and
what a registered device makes of them.

Pure functions and values; the AS keeps the TRL and the update collections in its
database and serves them (``keybound.tools.authz_server``), the RS follows the TRL
(``keybound.tools.resource_server``).

- **Token hashes** (§4): :func:`token_hash` of a HASH_INPUT, which the AS and the
  client take from the ``access_token`` of the AS-to-Client response
  (:func:`hash_input_of_response`), and the RS from what it was given
  (:func:`rs_cwt_token_hash`, :func:`rs_jwt_token_hashes`).
- **Issued CWTs** (§3, §7.1): :func:`check_cwt_layout` is the rule a token must meet
  for its hash to be the same at the AS, the client and the RS: ``61(COSE tag(...))``
  with minimal tag heads and every ``unprotected`` map empty.
- **The endpoint** (§6-§8): :func:`parse_query` reads ``diff`` and ``cursor``,
  :func:`full_query` and :func:`diff_query` answer from a requester's
  :class:`UpdateCollection` with the "Cursor" extension; errors are
  :class:`TrlQueryError`, rendered as Concise Problem Details (RFC 9290).
- **The requester** (§10.1): :func:`read_response` decodes a 2.05 payload into the
  hashes added and removed and the cursor to continue from; :func:`catch_up` is
  the cursor-based follow-up both the CoAP and the HTTP followers run.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from . import cbor
from .errors import DecodeError, InvalidRequest, InvalidToken, KeyboundError
from .numbers.trl import (
    NamedInformationHash,
    ProblemDetail,
    TrlErrorField,
    TrlErrorId,
    TrlParameter,
)

T = TypeVar("T")

#: the largest token a hash is computed of (a token larger than this is refused
#: before it is hashed or base64url-decoded: far above what ``/authz-info`` accepts)
MAX_TOKEN_BYTES = 8192
#: the largest TRL response payload a requester decodes: a full query of up to about
#: 14,900 SHA-256 token hashes (35 bytes each in CBOR), above what an RS keeps
#: (:class:`KnownHashes`' default capacity, 10,000); a larger answer is refused
MAX_RESPONSE_BYTES = 512 * 1024
#: digits of a ``diff`` or ``cursor`` query value: up to 2**64 - 1
_MAX_QUERY_DIGITS = 20

#: the minimal heads of the COSE tags (RFC 9052 §2) and the array length of each
_COSE_TAG_HEADS: dict[bytes, tuple[int, int]] = {
    b"\xd0": (16, 3),  # COSE_Encrypt0
    b"\xd1": (17, 4),  # COSE_Mac0
    b"\xd2": (18, 4),  # COSE_Sign1
    b"\xd8\x60": (96, 4),  # COSE_Encrypt
    b"\xd8\x61": (97, 5),  # COSE_Mac
    b"\xd8\x62": (98, 4),  # COSE_Sign
}
_CWT_TAG_HEAD = b"\xd8\x3d"  # tag 61, RFC 8392 §6
_EMPTY_MAP = 0xA0


# -- token hashes (§4)


def token_hash(
    hash_input: bytes, alg: NamedInformationHash = NamedInformationHash.SHA_256
) -> bytes:
    """The token hash of HASH_INPUT: RFC 6920 §6 binary format (the algorithm's ID in
    the first byte, then the digest), RFC 9770 §4.4."""
    digest = hashlib.new(alg.digest_name, hash_input).digest()[: alg.length]
    return bytes([alg]) + digest


def _b64u(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def hash_input_of_response(access_token: bytes | str) -> bytes:
    """HASH_INPUT of the ``access_token`` of an AS-to-Client response (RFC 9770 §4.2).

    A byte string is the value in a CBOR response (``application/ace+cbor``): the
    input is its base64url encoding (§4.2.1). A text string is the value in a JSON
    response: the input is its UTF-8 encoding (§4.2.2).
    """
    if isinstance(access_token, str):
        return access_token.encode("utf-8")
    return _b64u(bytes(access_token))


def response_token_hash(
    access_token: bytes | str, alg: NamedInformationHash = NamedInformationHash.SHA_256
) -> bytes:
    """The token hash the AS and the client compute of an issued ``access_token``."""
    return token_hash(hash_input_of_response(access_token), alg)


def _bounded(token_info: bytes) -> bytes:
    if len(token_info) > MAX_TOKEN_BYTES:
        raise InvalidToken(f"the token is larger than {MAX_TOKEN_BYTES} bytes")
    return bytes(token_info)


def rs_cwt_token_hash(
    token_info: bytes,
    verify: Callable[[bytes], T],
    alg: NamedInformationHash = NamedInformationHash.SHA_256,
) -> tuple[T, bytes]:
    """Verify a CWT the RS received and compute its token hash (RFC 9770 §4.3.1).

    ``verify`` checks a tagged CWT (RFC 9200 §5.10.1.1) and raises a
    :class:`KeyboundError` when it fails. TOKEN_INFO is first taken as the token
    itself (the client had a CBOR response: the hash input is its base64url
    encoding); if that does not verify, as the base64url text of the token (a JSON
    response: the hash input is TOKEN_INFO). Returns what ``verify`` returned and
    the hash; raises the first failure when neither reading verifies.
    """
    token_info = _bounded(token_info)
    try:
        return verify(token_info), token_hash(_b64u(token_info), alg)
    except KeyboundError as first:
        try:
            decoded = base64.b64decode(
                token_info + b"=" * (-len(token_info) % 4), altchars=b"-_", validate=True
            )
        except (binascii.Error, ValueError):
            raise first from None
        if _b64u(decoded) != token_info:  # not the canonical unpadded form
            raise first from None
        try:
            verified = verify(decoded)
        except KeyboundError:
            raise first from None
        return verified, token_hash(token_info, alg)


def rs_jwt_token_hashes(
    token_info: bytes, alg: NamedInformationHash = NamedInformationHash.SHA_256
) -> tuple[bytes, bytes]:
    """Both token hashes of a verified JWT at the RS (RFC 9770 §4.3.2, §13.6): as sent
    in a JSON response (TOKEN_INFO itself) and in a CBOR one (its base64url)."""
    token_info = _bounded(token_info)
    return token_hash(token_info, alg), token_hash(_b64u(token_info), alg)


def _head_length(data: bytes, pos: int) -> tuple[int, int, int]:
    """(major type, argument, position after the head) of the CBOR head at ``pos``."""
    if pos >= len(data):
        raise DecodeError("truncated CBOR")
    first = data[pos]
    major, info = first >> 5, first & 0x1F
    if info < 24:
        return major, info, pos + 1
    size = {24: 1, 25: 2, 26: 4, 27: 8}.get(info)
    if size is None or pos + 1 + size > len(data):
        raise DecodeError("CBOR head with an indefinite or truncated length")
    return major, int.from_bytes(data[pos + 1 : pos + 1 + size], "big"), pos + 1 + size


def check_cwt_layout(token: bytes) -> int:
    """Check the layout RFC 9770 §3 requires of an issued CWT and §7.1 of a received
    one; return the COSE tag number.

    The token must be exactly ``61(T([protected, {}, ...]))`` with ``T`` one of the
    COSE_Tagged_Message tags in its shortest head, the CWT tag 61 as ``d8 3d``, no
    further tag, and an empty ``unprotected`` map. Single-layer COSE objects
    (Encrypt0, Mac0, Sign1) are checked through; the multi-recipient ones are refused
    (keybound neither issues nor accepts them). Whether the inner tag matches the
    object is the COSE decoder's check. Raises :class:`InvalidToken`.
    """
    data = bytes(token)
    if not data.startswith(_CWT_TAG_HEAD):
        raise InvalidToken("the token is not wrapped in the CWT tag 61 (RFC 9770 §3)")
    pos = len(_CWT_TAG_HEAD)
    head = next((h for h in _COSE_TAG_HEADS if data.startswith(h, pos)), None)
    if head is None:
        raise InvalidToken(
            "the CWT tag does not wrap a COSE tag in its shortest encoding (RFC 9770 §3)"
        )
    tag, length = _COSE_TAG_HEADS[head]
    if tag in (96, 97, 98):
        raise InvalidToken(f"COSE objects with recipients or signers (tag {tag}) are refused")
    pos += len(head)
    try:
        major, count, pos = _head_length(data, pos)
        if major != 4 or count != length:
            raise InvalidToken(f"the COSE object of tag {tag} is not an array of {length}")
        major, size, pos = _head_length(data, pos)
    except DecodeError as exc:
        raise InvalidToken(f"malformed CWT: {exc.description}") from None
    if major != 2:
        raise InvalidToken("the protected header of the CWT is not a byte string")
    pos += size
    if pos >= len(data) or data[pos] != _EMPTY_MAP:
        raise InvalidToken("the CWT's unprotected header is not empty (RFC 9770 §3)")
    return tag


# -- the TRL endpoint (§6-§8)


class TrlQueryError(InvalidRequest):
    """a TRL query with a wrong parameter (RFC 9770 §6.3): a 4.00 with problem details

    ``error_id`` is the ACE Token Revocation List Error; ``cursor`` is sent in the
    ``ace-trl-error`` entry when ``has_cursor`` (``None`` there is CBOR ``null``).
    """

    def __init__(
        self,
        error_id: TrlErrorId,
        description: str,
        *,
        cursor: int | None = None,
        has_cursor: bool = False,
    ) -> None:
        super().__init__(description)
        self.error_id = error_id
        self.cursor = cursor
        self.has_cursor = has_cursor

    def problem_details(self) -> bytes:
        """The Concise Problem Details payload (RFC 9290 §2, RFC 9770 §6.1)."""
        entry: dict[int, object] = {TrlErrorField.ERROR_ID: int(self.error_id)}
        if self.has_cursor:
            entry[TrlErrorField.CURSOR] = self.cursor
        return cbor.dumps(
            {
                ProblemDetail.TITLE: self.error_id.title,
                ProblemDetail.DETAIL: self.description,
                ProblemDetail.ACE_TRL_ERROR: entry,
            }
        )


@dataclass(frozen=True)
class TrlLimits:
    """The AS's constants of RFC 9770 §6.2 and Appendix B."""

    #: series items kept in each requester's update collection (MAX_N >= 1)
    max_n: int = 32
    #: diff entries in one response with the "Cursor" extension (1 <= MAX_DIFF_BATCH <= MAX_N)
    max_diff_batch: int = 8
    #: the largest ``index`` before it wraps to 0 (MAX_N - 1 <= MAX_INDEX <= 2**64 - 1)
    max_index: int = 2**32 - 1

    def __post_init__(self) -> None:
        if self.max_n < 1:
            raise ValueError("MAX_N must be at least 1")
        if not 1 <= self.max_diff_batch <= self.max_n:
            raise ValueError("MAX_DIFF_BATCH must be between 1 and MAX_N")
        if not self.max_n - 1 <= self.max_index <= 2**64 - 1:
            raise ValueError("MAX_INDEX must be between MAX_N - 1 and 2**64 - 1")


@dataclass(frozen=True)
class SeriesItem:
    """One TRL update as it pertains to one requester (RFC 9770 §6.2)."""

    index: int
    removed: tuple[bytes, ...] = ()
    added: tuple[bytes, ...] = ()

    def entry(self) -> list[list[bytes]]:
        """The ``diff_entry`` of this item: ``[removed, added]`` (§7.2)."""
        return [list(self.removed), list(self.added)]


@dataclass(frozen=True)
class UpdateCollection:
    """A requester's update collection: at most MAX_N series items, oldest first.

    ``wrapped`` tells whether an ``index`` has ever wrapped around (§6.3's
    out-of-bound check applies only before that).
    """

    items: tuple[SeriesItem, ...] = ()
    wrapped: bool = False

    @property
    def last_index(self) -> int | None:
        return self.items[-1].index if self.items else None

    def add(
        self, removed: Iterable[bytes], added: Iterable[bytes], limits: TrlLimits
    ) -> UpdateCollection:
        """The collection after one TRL update (§6.2 steps 1-6); itself when the update
        does not touch this requester's part of the TRL."""
        removed_set, added_set = tuple(sorted(set(removed))), tuple(sorted(set(added)))
        if not removed_set and not added_set:
            return self
        last = self.last_index
        index = 0 if last is None else (last + 1) % (limits.max_index + 1)
        wrapped = self.wrapped or (last is not None and index == 0)
        items = (*self.items, SeriesItem(index, removed_set, added_set))[-limits.max_n :]
        return UpdateCollection(items, wrapped)


@dataclass(frozen=True)
class TrlQuery:
    """The TRL query parameters of a GET (§6.3); unknown ones are ignored."""

    diff: int | None = None
    cursor: int | None = None
    #: ``cursor`` was given but is not an unsigned integer (answered with error 0)
    bad_cursor: bool = False


def _uint(value: str) -> int | None:
    if not value or len(value) > _MAX_QUERY_DIGITS or not value.isascii() or not value.isdigit():
        return None
    return int(value)


def parse_query(uri_query: Sequence[str]) -> TrlQuery:
    """Read ``diff`` and ``cursor`` from the Uri-Query options (``name=value`` each).

    A ``diff`` that is not 0 or a positive integer is refused here (error 0, no
    cursor field: §6.3); whether a ``cursor`` is acceptable depends on the
    requester's collection and is decided by :func:`diff_query`. A parameter given
    twice is an invalid value. Everything else is ignored, as §6.3 says.
    """
    found: dict[str, str] = {}
    for option in uri_query:
        name, sep, value = option.partition("=")
        if name not in ("diff", "cursor"):
            continue
        if name in found:
            raise TrlQueryError(
                TrlErrorId.INVALID_PARAMETER_VALUE, f"the query parameter {name!r} is repeated"
            )
        found[name] = value if sep else ""
    diff = None
    if "diff" in found:
        diff = _uint(found["diff"])
        if diff is None:
            raise TrlQueryError(
                TrlErrorId.INVALID_PARAMETER_VALUE,
                f"invalid value for 'diff': {found['diff'][:24]!r} (0 or a positive integer)",
            )
    if "cursor" not in found:
        return TrlQuery(diff=diff)
    cursor = _uint(found["cursor"])
    return TrlQuery(diff=diff, cursor=cursor, bad_cursor=cursor is None)


def full_query(hashes: Iterable[bytes], collection: UpdateCollection) -> bytes:
    """The 2.05 payload of a full query (§7.1) with the "Cursor" extension (§8.1)."""
    return cbor.dumps(
        {
            TrlParameter.FULL_SET: sorted(set(hashes)),
            TrlParameter.CURSOR: collection.last_index,
        }
    )


def _diff_payload(entries: Sequence[SeriesItem], cursor: int | None, more: bool) -> bytes:
    newest_first = [item.entry() for item in reversed(entries)]
    return cbor.dumps(
        {TrlParameter.DIFF_SET: newest_first, TrlParameter.CURSOR: cursor, TrlParameter.MORE: more}
    )


def diff_query(query: TrlQuery, collection: UpdateCollection, limits: TrlLimits) -> bytes:
    """The 2.05 payload of a diff query with the "Cursor" extension (§7.2, §8.2), or
    :class:`TrlQueryError` for a wrong ``cursor`` (§6.3)."""
    if query.diff is None:
        raise ValueError("not a diff query")  # the caller answers a full query then
    items = collection.items
    if query.cursor is not None or query.bad_cursor:
        cursor = query.cursor
        if cursor is None or cursor > limits.max_index:
            raise TrlQueryError(
                TrlErrorId.INVALID_PARAMETER_VALUE,
                "invalid value for 'cursor' (0 up to MAX_INDEX)",
                cursor=collection.last_index,
                has_cursor=True,
            )
        last = collection.last_index
        if last is not None and not collection.wrapped and cursor > last:
            raise TrlQueryError(
                TrlErrorId.OUT_OF_BOUND_CURSOR_VALUE,
                f"'cursor' {cursor} is beyond the last index of this collection",
            )
    num = limits.max_n if query.diff == 0 or query.diff > limits.max_n else query.diff
    if not items:  # §8.2.1, with or without a cursor
        return _diff_payload((), None, False)
    if query.cursor is None:  # §8.2.2
        u = min(num, len(items))
        chosen = items[len(items) - u :][: limits.max_diff_batch]
        return _diff_payload(chosen, chosen[-1].index, u > limits.max_diff_batch)
    # §8.2.3: resume after the item with index P (or from the one after it)
    p = query.cursor
    following = (p + 1) % (limits.max_index + 1)
    positions = {item.index: n for n, item in enumerate(items)}
    if p in positions:
        after = items[positions[p] + 1 :]
    elif following in positions:
        after = items[positions[following] :]
    else:  # Case A: items after P are gone; the requester should ask for a full query
        return _diff_payload((), None, True)
    sub_u = min(num, len(after))
    chosen = after[len(after) - sub_u :][: limits.max_diff_batch]
    cursor = chosen[-1].index if chosen else collection.last_index
    return _diff_payload(chosen, cursor, sub_u > limits.max_diff_batch)


def answer(
    uri_query: Sequence[str],
    hashes: Callable[[], Iterable[bytes]],
    collection: UpdateCollection,
    limits: TrlLimits,
) -> bytes:
    """The 2.05 payload for a GET with ``uri_query`` (a full or a diff query).

    Raises :class:`TrlQueryError` (4.00 with problem details). ``hashes`` gives the
    requester's part of the TRL, asked for only by a full query; a ``cursor``
    without ``diff`` is error 1 (§6.3).
    """
    query = parse_query(uri_query)
    if query.diff is None:
        if query.cursor is not None or query.bad_cursor:
            raise TrlQueryError(
                TrlErrorId.INVALID_SET_OF_PARAMETERS, "'cursor' is given without 'diff'"
            )
        return full_query(hashes(), collection)
    return diff_query(query, collection, limits)


# -- the requester's side (§10)


@dataclass(frozen=True)
class TrlUpdate:
    """What a registered device learns from one 2.05 of the TRL endpoint."""

    #: a full query's answer: the whole current set (else None)
    full_set: frozenset[bytes] | None = None
    #: diff entries, oldest first: (removed, added) each
    diffs: tuple[tuple[frozenset[bytes], frozenset[bytes]], ...] = ()
    cursor: int | None = None
    more: bool = False
    #: (cursor, more) = (null, true): updates were lost, ask for a full query (§8.2.3)
    needs_full_query: bool = False
    revoked: frozenset[bytes] = field(default_factory=frozenset)


def _hash_list(value: object, what: str) -> frozenset[bytes]:
    if not isinstance(value, list) or not all(isinstance(h, bytes) for h in value):
        raise DecodeError(f"TRL response: {what} must be an array of byte strings")
    for h in value:
        if not 1 <= len(h) <= 65:
            raise DecodeError(f"TRL response: a token hash of {len(h)} bytes in {what}")
    return frozenset(value)


def read_response(payload: bytes) -> TrlUpdate:
    """Decode a 2.05 ``application/ace-trl+cbor`` payload (bounded, every type checked).

    ``revoked`` is every hash the device must act on now (§10.1): those of a full
    set, or those added in the diff entries and not removed again later.
    """
    data = cbor.loads(payload, max_size=MAX_RESPONSE_BYTES, max_depth=4)
    if not isinstance(data, dict):
        raise DecodeError("TRL response payload must be a CBOR map")
    cursor = data.get(TrlParameter.CURSOR)
    if cursor is not None and (type(cursor) is not int or cursor < 0):
        raise DecodeError("TRL response: 'cursor' must be null or an unsigned integer")
    more = data.get(TrlParameter.MORE, False)
    if type(more) is not bool:
        raise DecodeError("TRL response: 'more' must be true or false")
    has_full, has_diff = TrlParameter.FULL_SET in data, TrlParameter.DIFF_SET in data
    if has_full == has_diff:
        raise DecodeError("TRL response must have exactly one of 'full_set' and 'diff_set'")
    if has_full:
        full = _hash_list(data[TrlParameter.FULL_SET], "'full_set'")
        return TrlUpdate(full_set=full, cursor=cursor, revoked=full)
    entries = data[TrlParameter.DIFF_SET]
    if not isinstance(entries, list):
        raise DecodeError("TRL response: 'diff_set' must be an array")
    diffs: list[tuple[frozenset[bytes], frozenset[bytes]]] = []
    for entry in reversed(entries):  # sent newest first; applied oldest first
        if not isinstance(entry, list) or len(entry) != 2:
            raise DecodeError("TRL response: a diff entry must be [removed, added]")
        diffs.append((_hash_list(entry[0], "'removed'"), _hash_list(entry[1], "'added'")))
    revoked: set[bytes] = set()
    for removed, added in diffs:
        revoked -= removed
        revoked |= added
    return TrlUpdate(
        diffs=tuple(diffs),
        cursor=cursor,
        more=more,
        needs_full_query=cursor is None and more,
        revoked=frozenset(revoked),
    )


#: diff queries one catch-up asks at most (each brings up to MAX_DIFF_BATCH entries)
MAX_CATCH_UP_QUERIES = 64
#: the Uri-Query of a full query (§7.1)
FULL_QUERY: tuple[str, ...] = ()


def catch_up(
    cursor: int | None, *, full: bool = False
) -> Generator[tuple[str, ...], TrlUpdate, None]:
    """The queries a requester asks to bring what it knows up to date (§8.2.3), as a
    sans-IO flow: yields the Uri-Query of each GET (:data:`FULL_QUERY` for a full
    query) and is sent back the :func:`read_response` of its answer, once the caller
    has taken that in.

    Without a ``cursor`` (or with ``full``), one full query. With one, diff queries
    from it while the AS says ``more`` (at most :data:`MAX_CATCH_UP_QUERIES`); a full
    query when the AS says updates were lost (``cursor`` null and ``more`` true) or
    has no update for the requester any more (``cursor`` null).
    """
    if full or cursor is None:
        yield FULL_QUERY
        return
    for _ in range(MAX_CATCH_UP_QUERIES):
        update = yield ("diff=0", f"cursor={cursor}")
        if update.needs_full_query or update.cursor is None:
            yield FULL_QUERY
            return
        cursor = update.cursor
        if not update.more:
            return


class KnownHashes:
    """The token hashes a registered device keeps (RFC 9770 §10.1), bounded.

    A hash is kept once seen on the TRL: a revoked token whose hash is known is
    refused when it is posted again, also after it left the list. A hash may be
    forgotten when its token has expired (:meth:`forget`); past ``capacity`` the
    earliest stored hashes go first, as §10.1 allows under memory limits. A hash may
    carry the sequence number of an ``exi`` token (RFC 9200 §5.10.3, RFC 9770 §10.1):
    :meth:`forget` returns it, so the RS can raise its highest expired number.
    """

    def __init__(self, capacity: int = 10_000) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self._hashes: dict[bytes, int | None] = {}
        self.cursor: int | None = None

    def __contains__(self, token_hash: object) -> bool:
        return token_hash in self._hashes

    def __len__(self) -> int:
        return len(self._hashes)

    def __iter__(self) -> Iterator[bytes]:
        return iter(list(self._hashes))

    def add(self, token_hash: bytes, sequence: int | None = None) -> int | None:
        """Keep ``token_hash``; returns the sequence number of a hash dropped for room."""
        if token_hash in self._hashes:
            if sequence is not None:
                self._hashes[token_hash] = sequence
            return None
        dropped = None
        if len(self._hashes) >= self.capacity:
            oldest = next(iter(self._hashes))
            dropped = self._hashes.pop(oldest)
        self._hashes[token_hash] = sequence
        return dropped

    def forget(self, token_hash: bytes) -> int | None:
        """Forget a hash whose token has expired; returns its sequence number, if any."""
        return self._hashes.pop(token_hash, None)

    def apply(self, update: TrlUpdate) -> tuple[frozenset[bytes], list[int]]:
        """Take in one TRL response: returns the hashes now revoked (expunge their
        tokens: §10.1) and the sequence numbers of forgotten ``exi`` tokens.

        Hashes the AS took off the list stay known unless the device learns otherwise
        that their token expired: the RS keeps refusing a late upload (§10.1).
        """
        numbers: list[int] = []
        for h in sorted(update.revoked):
            dropped = self.add(h)
            if dropped is not None:
                numbers.append(dropped)
        self.cursor = update.cursor
        return update.revoked, numbers

    def to_json(self) -> dict[str, object]:
        return {
            "cursor": self.cursor,
            "hashes": [[h.hex(), n] for h, n in self._hashes.items()],
        }

    @classmethod
    def from_json(cls, data: object, capacity: int = 10_000) -> KnownHashes:
        """Read :meth:`to_json`'s form back; raises :class:`DecodeError`."""
        known = cls(capacity)
        if not isinstance(data, dict):
            raise DecodeError("TRL state must be an object")
        cursor = data.get("cursor")
        if cursor is not None and (type(cursor) is not int or cursor < 0):
            raise DecodeError("TRL state: cursor must be null or an unsigned integer")
        rows = data.get("hashes", [])
        if not isinstance(rows, list):
            raise DecodeError("TRL state: hashes must be a list")
        for row in rows:
            if not (isinstance(row, list) and len(row) == 2 and isinstance(row[0], str)):
                raise DecodeError("TRL state: each hash is [hex, sequence or null]")
            number = row[1]
            if number is not None and (type(number) is not int or number < 0):
                raise DecodeError("TRL state: a sequence number must be an unsigned integer")
            try:
                known.add(bytes.fromhex(row[0]), number)
            except ValueError:
                raise DecodeError("TRL state: a hash is not hexadecimal") from None
        known.cursor = cursor
        return known


__all__ = [
    "FULL_QUERY",
    "MAX_CATCH_UP_QUERIES",
    "MAX_RESPONSE_BYTES",
    "MAX_TOKEN_BYTES",
    "KnownHashes",
    "SeriesItem",
    "TrlLimits",
    "TrlQuery",
    "TrlQueryError",
    "TrlUpdate",
    "UpdateCollection",
    "answer",
    "catch_up",
    "check_cwt_layout",
    "diff_query",
    "full_query",
    "hash_input_of_response",
    "parse_query",
    "read_response",
    "response_token_hash",
    "rs_cwt_token_hash",
    "rs_jwt_token_hashes",
    "token_hash",
]
