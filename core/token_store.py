"""What the Resource Server keeps of an accepted token: the token store and its persistence.

A :class:`VerifiedToken` is a token that passed
:meth:`~keybound.core.resource_server.ResourceServer.verify`; a :class:`StoredToken`
adds the :class:`ContextParameters` of the ``/authz-info`` exchange that set up its
OSCORE context (RFC 9203 §4.1-§4.3), or none when a later handshake sets up the
context (EDHOC, draft-ietf-ace-edhoc-oscore-profile). A restarted RS reloads them from durable
storage (:class:`keybound.coap.state_writer.RsStateStore`) as
:class:`PersistedContext` records.

Storage policy
--------------

:class:`TokenStore` keeps at most ``capacity`` tokens, one per PoP key (the OSCORE
input material's ``id``, ``contextId`` and Master Secret): a new token for the same
key supersedes the old one and its OSCORE context. When the store is full,
expired tokens are evicted first; if it is still full, the new token is refused
with :class:`~keybound.core.errors.CapacityExceeded` (5.03) rather than evicting a
live token, so one client cannot push out the others. Each stored token's RFC 9770
token hash is computed once, when it is stored, and indexed: the tokens a TRL update
lists are found in O(listed) (:meth:`TokenStore.key_ids_of`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TypeAlias

from . import cbor
from .authz_info import MAX_RECIPIENT_ID_BYTES
from .edhoc_credentials import Ccs
from .errors import CapacityExceeded
from .oscore_derivation import DerivedContext
from .oscore_material import OscoreInputMaterial
from .scope import AifScope, Scope, TextScope
from .token import AccessToken
from .trl import response_token_hash

#: What a profile reads from ``cnf`` as the PoP key: OSCORE input material (RFC 9203)
#: or an EDHOC authentication credential (draft-ietf-ace-edhoc-oscore-profile).
PopKey: TypeAlias = OscoreInputMaterial | Ccs

# ---- verified tokens and stored state ------------------------------------------------------


def pop_key_id(material: OscoreInputMaterial) -> bytes:
    """An identifier of the PoP key: SHA-256 over id, contextId and Master Secret.

    Two tokens with the same identifier are bound to the same key (one token per
    key). It is a hash, so it can be stored and logged without revealing the secret.
    """
    digest = hashlib.sha256(_POP_KEY_HEAD)
    for part in (material.id, material.context_id or b"", material.ms):  # byte strings, checked
        digest.update(cbor.head(2, len(part)))
        digest.update(part)
    return digest.digest()


#: The CBOR array ``["keybound-pop-key", id, contextId, ms]`` up to its three byte
#: strings, which are hashed after it head by head: the same bytes as the array
#: encoded whole.
_POP_KEY_HEAD = cbor.head(4, 4) + cbor.dumps("keybound-pop-key")


@dataclass(frozen=True)
class VerifiedToken:
    """A token that passed :meth:`~keybound.core.resource_server.ResourceServer.verify`.

    ``profile`` is the number of the ACE profile it was accepted for (RFC 9200 §8.8;
    :data:`keybound.core.profiles.PROFILES` has its implementation); ``material`` the
    PoP key that profile read from ``cnf`` and ``key_id`` its identifier.
    """

    token: AccessToken
    raw: bytes = field(repr=False)
    material: PopKey = field(repr=False)
    key_id: bytes
    sequence: int | None
    expires_at: int | None
    expires_monotonic: float | None
    signed: bool
    profile: int

    def expired(self, *, now: int | None, monotonic: float, leeway: int = 0) -> bool:
        """True once ``exp`` (with a clock) or ``exi`` (from receipt) has passed."""
        if now is not None and self.expires_at is not None and now >= self.expires_at + leeway:
            return True
        return self.expires_monotonic is not None and monotonic >= self.expires_monotonic

    def describe(self) -> str:
        """A log line without secrets: cti, subject, scope, expiry, key identifier."""
        cti = self.token.cti.hex() if self.token.cti is not None else "-"
        scope = _scope_text(self.token.scope)
        expiry = f"exp={self.expires_at}" if self.expires_at is not None else ""
        if self.token.exi is not None:
            expiry = (expiry + " " if expiry else "") + f"exi={self.token.exi}"
        return (
            f"cti={cti} sub={self.token.sub or '-'} scope={scope!r} {expiry} "
            f"key={self.key_id[:6].hex()}"
        )


@dataclass(frozen=True)
class ContextParameters:
    """The nonces and identifiers of one ``/authz-info`` exchange (RFC 9203 §4.1, §4.2).

    ``client_id`` is ID1 (the RS's Sender ID), ``server_id`` ID2 (its Recipient ID).
    """

    nonce1: bytes
    nonce2: bytes
    client_id: bytes
    server_id: bytes


@dataclass
class StoredToken:
    """A token in the store and the OSCORE context its ``/authz-info`` exchange set up.

    ``context`` is None for a profile whose security context a later handshake sets
    up (EDHOC). ``derived`` caches the context parameters once derived
    (:func:`keybound.core.profiles.derived_context`).
    """

    verified: VerifiedToken
    context: ContextParameters | None
    received_at: int | None = None
    derived: DerivedContext | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def key_id(self) -> bytes:
        return self.verified.key_id

    @property
    def lookup(self) -> tuple[bytes, bytes | None] | None:
        """``(Recipient ID, ID Context)``: how an incoming OSCORE request finds it, or
        None when no ``/authz-info`` exchange set up its context."""
        material = self.verified.material
        if self.context is None or not isinstance(material, OscoreInputMaterial):
            return None
        return self.context.server_id, material.context_id


class TokenStore:
    """At most ``capacity`` tokens, one per PoP key, each with its OSCORE context.

    Full: expired tokens are evicted first, then new tokens are refused with
    :class:`CapacityExceeded` (5.03); live tokens are never evicted.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self._by_key: dict[bytes, StoredToken] = {}
        self._by_lookup: dict[tuple[bytes, bytes | None], bytes] = {}
        # RFC 9770 token hash -> key: computed once per stored token, so a TRL update
        # finds the tokens it lists in O(listed), not by hashing every stored token
        self._by_hash: dict[bytes, bytes] = {}
        self._hash_of: dict[bytes, bytes] = {}  # key -> its token's hash
        self._server_ids: dict[bytes, int] = {}  # Recipient ID -> number of contexts using it
        self._id_hint = 0  # where the search for a free Recipient ID resumes

    def hold_server_id(self, server_id: bytes) -> None:
        """Keep ``server_id`` from :meth:`free_server_id`: a Recipient ID another
        context uses (an EDHOC C_R, RFC 9528 Appendix A.1), until :meth:`release_server_id`."""
        self._server_ids[server_id] = self._server_ids.get(server_id, 0) + 1

    def release_server_id(self, server_id: bytes) -> None:
        """Undo one :meth:`hold_server_id` (or one stored context's use) of ``server_id``."""
        left = self._server_ids.get(server_id, 0) - 1
        if left > 0:
            self._server_ids[server_id] = left
        else:
            self._server_ids.pop(server_id, None)

    def __len__(self) -> int:
        return len(self._by_key)

    def __iter__(self) -> Iterator[StoredToken]:
        return iter(list(self._by_key.values()))

    def get(self, key_id: bytes) -> StoredToken | None:
        return self._by_key.get(key_id)

    def key_ids_of(self, token_hashes: Iterable[bytes]) -> list[bytes]:
        """The keys of the stored tokens whose RFC 9770 token hash is in ``token_hashes``."""
        found = (self._by_hash.get(h) for h in token_hashes)
        return [key_id for key_id in found if key_id is not None]

    def find(self, recipient_id: bytes, id_context: bytes | None) -> StoredToken | None:
        key_id = self._by_lookup.get((recipient_id, id_context))
        return None if key_id is None else self._by_key.get(key_id)

    def free_server_id(self, client_id: bytes, *, reusable: bytes | None = None) -> bytes:
        """A free Recipient ID (RFC 9203 §4.2): != ID1, unused by other contexts.

        The shortest length with room to spare is searched from where the last
        search stopped, so picking an ID costs O(1) on average however many
        contexts are stored, rather than a scan of all of them.
        """
        used = self._server_ids
        for length in range(1, MAX_RECIPIENT_ID_BYTES + 1):
            space = 256**length
            if len(used) + 2 > space // 2 and length < MAX_RECIPIENT_ID_BYTES:
                continue
            for step in range(space):
                number = (self._id_hint + step) % space
                candidate: bytes = number.to_bytes(length, "big")
                if candidate != client_id and (candidate not in used or candidate == reusable):
                    self._id_hint = number + 1
                    return candidate
        raise CapacityExceeded("no free OSCORE Recipient ID")  # pragma: no cover - 2**56 contexts

    def put(self, entry: StoredToken) -> StoredToken | None:
        """Store ``entry``; return the entry it superseded (same PoP key), if any."""
        old = self.remove(entry.key_id) if entry.key_id in self._by_key else None
        if old is None and len(self._by_key) >= self.capacity:
            raise CapacityExceeded(f"the RS stores at most {self.capacity} tokens")
        self._by_key[entry.key_id] = entry
        token_hash = response_token_hash(entry.verified.raw)
        self._by_hash[token_hash] = entry.key_id
        self._hash_of[entry.key_id] = token_hash
        lookup = entry.lookup
        if lookup is not None:
            self._by_lookup[lookup] = entry.key_id
            self.hold_server_id(lookup[0])
        return old

    def remove(self, key_id: bytes) -> StoredToken | None:
        entry = self._by_key.pop(key_id, None)
        token_hash = self._hash_of.pop(key_id, None)
        if token_hash is not None and self._by_hash.get(token_hash) == key_id:
            del self._by_hash[token_hash]
        lookup = None if entry is None else entry.lookup
        if lookup is not None:
            if self._by_lookup.get(lookup) == key_id:
                del self._by_lookup[lookup]
            self.release_server_id(lookup[0])
        return entry

    def expired(self, *, now: int | None, monotonic: float, leeway: int = 0) -> list[StoredToken]:
        return [
            e
            for e in self._by_key.values()
            if e.verified.expired(now=now, monotonic=monotonic, leeway=leeway)
        ]


# ---- persistence interface ------------------------------------------------------------------


@dataclass(frozen=True)
class PersistedReplayWindow:
    """A replay window saved at a clean shutdown (RFC 8613 §7.4, Appendix B.1.2).

    ``index`` is the lowest Partial IV the window still tracks (every lower one is
    refused), bit ``i`` of ``bitfield`` stands for ``index + i`` having been
    received, and ``size`` is the window size it was saved with.
    """

    index: int
    bitfield: int
    size: int


@dataclass(frozen=True)
class ShutdownRecord:
    """What a clean shutdown saves of one context (RFC 8613 Appendix B.1.1, B.1.2).

    ``replay_window`` is None when the window was not known (a context restored
    after a crash that has not yet completed its Echo exchange); ``sender_next`` is
    the exact next Sender Sequence Number: none at or above it was ever used.
    """

    key_id: bytes
    replay_window: PersistedReplayWindow | None
    sender_next: int


@dataclass(frozen=True)
class PersistedContext:
    """What a restarted RS needs to re-derive a context (RFC 9203 §4.3, RFC 8613 B.1.1).

    ``sender_mark`` is the persisted Sender Sequence Number high-water mark: no
    number at or above it was ever used. ``shutdown`` is what the previous run
    saved of the context at a clean shutdown; a store returns it only when
    :attr:`PersistedState.clean_shutdown` is True (RFC 8613 Appendix B.1.2).
    """

    key_id: bytes
    token: bytes = field(repr=False)
    nonce1: bytes
    nonce2: bytes
    client_id: bytes
    server_id: bytes
    received_at: int | None
    sender_mark: int = 0
    shutdown: ShutdownRecord | None = None


@dataclass(frozen=True)
class PersistedState:
    """The whole persisted state; ``clean_shutdown`` tells the previous run ended cleanly."""

    contexts: tuple[PersistedContext, ...] = ()
    exi_sequence_mark: int | None = None
    clean_shutdown: bool = False


def _scope_text(scope: Scope | None) -> str:
    if scope is None:
        return "-"
    if isinstance(scope, TextScope):
        return str(scope)
    if isinstance(scope, AifScope):
        return " ".join(f"{e.path}:{e.permissions}" for e in scope.entries)
    return "?"  # pragma: no cover - the two kinds above are all there is


__all__ = [
    "ContextParameters",
    "PersistedContext",
    "PersistedReplayWindow",
    "PersistedState",
    "PopKey",
    "ShutdownRecord",
    "StoredToken",
    "TokenStore",
    "VerifiedToken",
    "pop_key_id",
]
