"""OSCORE Security Contexts on aiocoap whose sequence numbers survive restarts (RFC 8613 B.1).

:class:`DurableSecurityContext` is an aiocoap security context built from the
parameters keybound derives (:func:`keybound.core.oscore_derivation.derive_keys`).
The RS uses it for the contexts of its clients (RFC 9203 §4.3), clients and the
RS use it towards the AS. It differs from aiocoap's own contexts in this:

* Sender Sequence Numbers come from a
  :class:`~keybound.core.oscore_sequence.SequenceNumberReservation`: the high-water
  mark is written *ahead* through the RS's state store, in chunks, before a number
  is used (RFC 8613 Appendix B.1.1). After a restart, numbers resume at the stored
  mark, so no (key, Sender ID, Partial IV) is ever used twice.
* A context restored after a crash starts with an *uninitialised* replay window
  and an Echo value: aiocoap then answers the first request with a protected 4.01
  carrying Echo, and accepts the retried request once it echoes the value (RFC 8613
  Appendix B.1.2, RFC 9175 §2.4). Replays of requests from before the restart are
  refused.
* After a clean shutdown, the replay window saved from aiocoap's window object
  (:meth:`DurableSecurityContext.shutdown_record`) is restored as known: every Partial IV
  received before is still refused, the next ones are accepted, and no Echo round
  trip is needed (RFC 8613 Appendix B.1.2 applies only when the window is lost).
  The Sender Sequence Number then resumes at the exact next number saved at the
  shutdown; the written-ahead marks keep guarding against reuse after that.

:class:`ContextTable` installs and removes these contexts in an aiocoap
``CredentialsMap`` under deterministic keys, ``":keybound-rs:<ID2 hex>:<ID Context
hex or ->"``; aiocoap's OSCORE site wrapper finds server contexts by Recipient ID
(the ``kid`` of the request) and ID Context.

:class:`IndexedCredentialsMap` is that map with the lookup indexed: aiocoap's own
``CredentialsMap.find_oscore`` asks every installed context in turn whether it takes
a request, so an RS with 10,000 contexts did 10,000 calls per request; the indexed
map finds the context by ``(kid, kid context)`` in a dict and asks it alone.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable
from typing import Any, ClassVar, TypeAlias

from aiocoap import credentials, oscore
from aiocoap.edhoc import EdhocResponderContext
from cryptography.hazmat.primitives import hashes

from keybound.core.numbers.ace_profiles import AceProfile
from keybound.core.oscore_derivation import DerivedContext, derive_keys
from keybound.core.oscore_sequence import (
    MAX_SEQUENCE_NUMBER,
    SequenceNumberExhausted,
    SequenceNumberReservation,
)
from keybound.core.profiles import derived_context
from keybound.core.token_store import (
    PersistedReplayWindow,
    ShutdownRecord,
    StoredToken,
)

from .state_writer import RsStateStore

#: Sender Sequence Numbers reserved per durable write (``K`` of RFC 8613 Appendix B.1.1).
DEFAULT_SEQUENCE_CHUNK = 64
#: The replay window size (RFC 8613 §7.4 default).
REPLAY_WINDOW = 32
#: The prefix of the credentials map keys of RS contexts.
CREDENTIALS_PREFIX = ":keybound-rs:"


#: aiocoap's AEAD algorithm objects by COSE algorithm number (aiocoap's registry is fixed).
_AIOCOAP_AEADS: dict[int, Any] = {}
for _alg in oscore.algorithms.values():
    if isinstance(getattr(_alg, "value", None), int):
        _AIOCOAP_AEADS.setdefault(_alg.value, _alg)


def _aiocoap_algorithm(cose_id: int) -> Any:
    alg = _AIOCOAP_AEADS.get(cose_id)
    if alg is None:
        raise ValueError(f"aiocoap lacks the OSCORE AEAD algorithm {cose_id}")
    return alg


#: The hash of every context's HKDF (RFC 8613 §3.2.1: HKDF SHA-256): an algorithm
#: descriptor without state, one for all.
_SHA256 = hashes.SHA256()


def _strike_out_nothing() -> None:
    """The replay window's strike-out callback: the sequence marks persist it instead."""


def credentials_key(recipient_id: bytes, id_context: bytes | None) -> str:
    """The deterministic ``CredentialsMap`` key of an RS context."""
    context = "-" if id_context is None else id_context.hex()
    return f"{CREDENTIALS_PREFIX}{recipient_id.hex()}:{context}"


class DurableSecurityContext(oscore.CanProtect, oscore.CanUnprotect, oscore.SecurityContextUtils):  # type: ignore[misc]
    """An OSCORE context whose sequence numbers are persisted ahead (RFC 8613 B.1.1).

    ``persist_mark(mark)`` must store the mark durably before returning.
    ``replay_window_known`` is False for a context restored after a crash: the
    first request is then answered with Echo (RFC 8613 Appendix B.1.2).
    ``replay_window`` is a window saved at a clean shutdown; given, the window is
    known from it and no Echo is needed.
    ``response_partial_iv`` makes every response carry its own Partial IV instead of
    reusing the request's nonce (RFC 8613 §8.3 allows either).
    """

    def __init__(
        self,
        derived: DerivedContext,
        *,
        key_id: bytes,
        reservation: SequenceNumberReservation,
        persist_mark: Callable[[int], None],
        replay_window_known: bool,
        response_partial_iv: bool = False,
        replay_window: PersistedReplayWindow | None = None,
    ) -> None:
        keys = derive_keys(derived)
        self.key_id = key_id
        self.sender_id = derived.sender_id
        self.recipient_id = derived.recipient_id
        self.id_context = derived.id_context
        self.alg_aead = _aiocoap_algorithm(derived.alg)
        self.hashfun = _SHA256
        self.sender_key = keys.sender_key
        self.recipient_key = keys.recipient_key
        self.common_iv = keys.common_iv
        self.recipient_replay_window = oscore.ReplayWindow(REPLAY_WINDOW, _strike_out_nothing)
        if replay_window is not None:
            if replay_window.size != REPLAY_WINDOW:
                raise ValueError("the saved replay window has another size")
            self.recipient_replay_window.initialize_from_persisted(
                {"index": replay_window.index, "bitfield": replay_window.bitfield}
            )
        elif replay_window_known:
            self.recipient_replay_window.initialize_empty()
        self._echo_recovery: bytes | None = None
        self._reservation = reservation
        self._persist_mark = persist_mark
        self.sender_sequence_number = reservation.peek
        self.response_partial_iv = response_partial_iv
        self.removed = False

    @property
    def echo_recovery(self) -> bytes:
        """The Echo value of this context's replay window recovery (RFC 8613 Appendix
        B.1.2), 8 random bytes drawn when aiocoap first asks: a context whose window is
        known may never need them."""
        value = self._echo_recovery
        if value is None:
            value = self._echo_recovery = secrets.token_bytes(8)
        return value

    def __repr__(self) -> str:
        return (
            f"<DurableSecurityContext recipient_id={self.recipient_id.hex()} "
            f"sender_id={self.sender_id.hex()} next_seqno={self.sender_sequence_number}>"
        )

    @property
    def durable_mark(self) -> int:
        """The Sender Sequence Number mark known to be persisted."""
        return self._reservation.durable_mark

    def shutdown_record(self) -> ShutdownRecord:
        """The replay window and next Sender Sequence Number, for a clean shutdown.

        The window comes from aiocoap's replay window object; it is None while the
        window is not known (a context restored after a crash that has not completed
        its Echo exchange, RFC 8613 Appendix B.1.2). The next number is one past
        every number handed out, even one whose mark could not be written.
        """
        window = self.recipient_replay_window
        saved = None
        if window.is_initialized():
            persisted = window.persist()
            saved = PersistedReplayWindow(
                index=int(persisted["index"]),
                bitfield=int(persisted["bitfield"]),
                size=REPLAY_WINDOW,
            )
        return ShutdownRecord(
            key_id=self.key_id, replay_window=saved, sender_next=self._reservation.peek
        )

    def new_sequence_number(self) -> int:
        """The next Sender Sequence Number; writes the mark ahead when a chunk is used up."""
        if self.removed:
            raise oscore.ContextUnavailable("this security context was removed")
        try:
            seqno, mark = self._reservation.next()
        except SequenceNumberExhausted as exc:
            raise oscore.ContextUnavailable("sequence numbers exhausted") from exc
        if mark is not None:
            self._persist_mark(mark)
            self._reservation.confirm_persisted(mark)
        self.sender_sequence_number = seqno + 1
        return seqno

    def post_seqnoincrease(self) -> None:
        """Unused: :meth:`new_sequence_number` persists through the reservation."""

    def protect(self, message: Any, request_id: Any = None, *, kid_context: Any = True) -> Any:
        if self.response_partial_iv and request_id is not None:
            request_id.can_reuse_nonce = False
        return super().protect(message, request_id, kid_context=kid_context)

    def get_oscore_context_for(self, unprotected: Any) -> DurableSecurityContext | None:
        if self.removed:
            return None
        found: DurableSecurityContext | None = super().get_oscore_context_for(unprotected)
        return found

    def find_all_used_contextless_oscore_kid(self) -> set[bytes]:
        return {self.recipient_id} if self.id_context is None else set()


#: What a server context is found by: the ``kid`` and ``kid context`` of a request.
OscoreLookup: TypeAlias = tuple[bytes, bytes | None]
#: Matchers that take a request exactly when its ``kid`` is the Recipient ID and its
#: ``kid context`` the ID Context (none when the context has none): aiocoap's default
#: (``SecurityContextUtils``) and :class:`DurableSecurityContext`'s, which adds only
#: the ``removed`` check.
_EXACT_MATCHERS = (
    oscore.SecurityContextUtils.get_oscore_context_for,
    DurableSecurityContext.get_oscore_context_for,
)
#: aiocoap's EDHOC Responder context takes the request whose ``kid`` is its C_R and
#: that carries no ``kid context`` (RFC 9528 Appendix A.1: the ID Context is absent).
_EDHOC_MATCHER = EdhocResponderContext.get_oscore_context_for
#: An item that is no OSCORE server context at all: find_oscore never looks at it.
_NOT_OSCORE = "not-oscore"
#: An OSCORE item whose matcher is not known here: asked in turn, as aiocoap does.
_ASKED = "asked"
#: ``pop`` without a default.
_MISSING = object()


def oscore_lookup(item: object) -> OscoreLookup | str:
    """The ``(kid, kid context)`` that ``item`` takes requests for, as its matcher decides.

    :data:`_ASKED` for an item whose ``get_oscore_context_for`` is not one of the
    known matchers (a group context, anything else: it must be asked in turn), and
    :data:`_NOT_OSCORE` for an item without one.
    """
    if type(item) is DurableSecurityContext:  # keybound's own: its matcher is exact
        return (item.recipient_id, item.id_context)
    matcher = getattr(type(item), "get_oscore_context_for", None)
    if matcher is None:
        return _NOT_OSCORE
    recipient_id = getattr(item, "recipient_id", None)
    if not isinstance(recipient_id, bytes):
        return _ASKED
    if matcher is _EDHOC_MATCHER:
        return (recipient_id, None)
    id_context = getattr(item, "id_context", _ASKED)
    if matcher in _EXACT_MATCHERS and (id_context is None or isinstance(id_context, bytes)):
        return (recipient_id, id_context)
    return _ASKED


class _Several(list[tuple[str, Any]]):
    """The (label, item) pairs indexed under one (kid, kid context), in the map's order."""


class IndexedCredentialsMap(credentials.CredentialsMap):  # type: ignore[misc]
    """A ``CredentialsMap`` whose :meth:`find_oscore` looks server contexts up in a dict.

    aiocoap's ``find_oscore`` calls ``get_oscore_context_for`` on every item, in the
    map's order, until one takes the request (RFC 8613 §8.2 step 2: the context is
    found by ``kid`` and ``kid context``). Here every item is indexed under the
    ``(kid, kid context)`` its matcher takes (:func:`oscore_lookup`) when it is put
    in the map, and a request asks only the items under its own pair, plus any item
    whose matcher is not known, in the map's order: the item found is the one
    aiocoap finds. None found raises ``KeyError``, which aiocoap's site wrapper
    answers 4.01 "Security context not found" (RFC 8613 §8.2 step 2), as before.
    The ``kid`` is sent in the clear, so the dict lookup reveals nothing the request
    did not carry.

    The index holds the item itself (no record per label): an item is found again
    under its pair when it leaves. Two items under one pair, or any item whose
    matcher is not known, take the slower, exact paths; keybound's contexts never
    share a pair (the token store hands out distinct Recipient IDs). An item's
    Recipient ID, ID Context and contextless kids must not change while it is in
    the map (neither keybound's contexts nor aiocoap's EDHOC Responder context
    change them: C_R is the Recipient ID from message_2 on). Every way of changing
    a dict (``del``, ``pop``, ``update``, ``clear``, ...) keeps the index in step.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()
        #: (kid, kid context) -> the one item indexed there, or :class:`_Several`
        self._index: dict[OscoreLookup, Any] = {}
        #: items whose matcher is not known, by label (asked in the map's order)
        self._asked: dict[str, Any] = {}
        #: the kids of contexts that take requests without a kid context, counted
        self._contextless: dict[bytes, int] = {}
        self.update(*args, **kwargs)

    # -- the index --

    def _add(self, label: str, item: Any) -> None:
        """Index ``item``, already in the map under ``label``."""
        where = oscore_lookup(item)
        if where == _ASKED:
            self._asked[label] = item
            return
        if isinstance(where, str):
            return
        held = self._index.get(where)
        if held is None:
            self._index[where] = item
        else:  # a pair taken twice: kept in the map's order (found as aiocoap finds)
            pairs = held if isinstance(held, _Several) else [(self._label_of(where, label), held)]
            order = {name: n for n, name in enumerate(self)}
            self._index[where] = _Several(
                sorted([*pairs, (label, item)], key=lambda pair: order[pair[0]])
            )
        if type(item) is DurableSecurityContext:  # its own method, without building a set
            kids: Iterable[bytes] = (where[0],) if where[1] is None else ()
        else:
            kids = item.find_all_used_contextless_oscore_kid()
        for kid in kids:
            self._contextless[kid] = self._contextless.get(kid, 0) + 1

    def _label_of(self, where: OscoreLookup, other_than: str) -> str:
        """The label of the one other item indexed under ``where`` (a rare, slow path)."""
        for label, item in self.items():
            if label != other_than and oscore_lookup(item) == where:
                return str(label)
        raise AssertionError("an indexed item is missing from the map")  # pragma: no cover

    def _drop(self, label: str, item: Any) -> None:
        """Take ``item``, no longer in the map under ``label``, out of the index."""
        where = oscore_lookup(item)
        if where == _ASKED:
            del self._asked[label]
            return
        if isinstance(where, str):
            return
        held = self._index[where]
        if isinstance(held, _Several):
            left = [pair for pair in held if pair[0] != label]
            self._index[where] = left[0][1] if len(left) == 1 else _Several(left)
        else:
            del self._index[where]
        for kid in item.find_all_used_contextless_oscore_kid():
            count = self._contextless[kid] - 1
            if count:
                self._contextless[kid] = count
            else:
                del self._contextless[kid]

    def indexed(self, kid: bytes, kid_context: bytes | None) -> list[Any]:
        """The items indexed under ``(kid, kid context)``, in the map's order."""
        held = self._index.get((kid, kid_context))
        if held is None:
            return []
        return [item for _label, item in held] if isinstance(held, _Several) else [held]

    # -- aiocoap's lookups --

    def find_oscore(self, unprotected: dict[int, Any]) -> Any:
        kid = unprotected.get(oscore.COSE_KID)
        kid_context = unprotected.get(oscore.COSE_KID_CONTEXT)
        held = None
        if isinstance(kid, bytes) and (kid_context is None or isinstance(kid_context, bytes)):
            held = self._index.get((kid, kid_context))
        if self._asked:  # none in keybound: every candidate asked in the map's order
            candidates = [
                item
                for label, item in self.items()
                if label in self._asked or (held is not None and self._holds(held, label, item))
            ]
        elif held is None:
            candidates = []
        else:
            candidates = [item for _label, item in held] if isinstance(held, _Several) else [held]
        for item in candidates:
            found = item.get_oscore_context_for(unprotected)
            if found is not None:
                return found
        raise KeyError("no OSCORE context for this kid and kid context")

    @staticmethod
    def _holds(held: Any, label: str, item: Any) -> bool:
        if isinstance(held, _Several):
            return any(name == label for name, _item in held)
        return held is item

    def find_all_used_contextless_oscore_kid(self) -> set[bytes]:
        used = set(self._contextless)
        for item in self._asked.values():
            if hasattr(item, "find_all_used_contextless_oscore_kid"):
                used |= item.find_all_used_contextless_oscore_kid()
        return used

    # -- every way a dict changes --

    def __setitem__(self, label: str, item: Any) -> None:
        if label in self:  # a dict keeps a replaced key in its place
            self._drop(label, super().__getitem__(label))
        super().__setitem__(label, item)
        self._add(label, item)

    def __delitem__(self, label: str) -> None:
        item = super().__getitem__(label)
        super().__delitem__(label)
        self._drop(label, item)

    def pop(self, label: str, default: Any = _MISSING) -> Any:
        if label not in self:
            if default is _MISSING:
                raise KeyError(label)
            return default
        item = super().pop(label)
        self._drop(label, item)
        return item

    def popitem(self) -> tuple[str, Any]:
        label, item = super().popitem()
        self._drop(label, item)
        return label, item

    def setdefault(self, label: str, default: Any = None) -> Any:
        if label not in self:
            self[label] = default
        return self[label]

    def update(self, *args: Any, **kwargs: Any) -> None:
        for label, item in dict(*args, **kwargs).items():
            self[label] = item

    def __ior__(self, other: Any) -> IndexedCredentialsMap:
        self.update(other)
        return self

    def clear(self) -> None:
        super().clear()
        self._index.clear()
        self._asked.clear()
        self._contextless.clear()


class ContextTable:
    """The RS's OSCORE contexts in an aiocoap ``CredentialsMap``, one per stored token.

    The OSCORE profile's :class:`~keybound.coap.profiles.ContextInstaller`.
    """

    profile: ClassVar[int] = int(AceProfile.COAP_OSCORE)

    def __init__(
        self,
        server_credentials: credentials.CredentialsMap,
        *,
        state: RsStateStore | None = None,
        sequence_chunk: int = DEFAULT_SEQUENCE_CHUNK,
        response_partial_iv: bool = False,
    ) -> None:
        self.credentials = server_credentials
        self.state = state
        self.sequence_chunk = sequence_chunk
        self.response_partial_iv = response_partial_iv
        self._by_key_id: dict[bytes, DurableSecurityContext] = {}

    def __len__(self) -> int:
        return len(self._by_key_id)

    def get(self, key_id: bytes) -> DurableSecurityContext | None:
        return self._by_key_id.get(key_id)

    def shutdown_records(self) -> list[ShutdownRecord]:
        """What a clean shutdown saves of every installed context (RFC 8613 B.1.2)."""
        return [context.shutdown_record() for context in self._by_key_id.values()]

    def install(
        self,
        entry: StoredToken,
        *,
        sender_mark: int = 0,
        restored: bool = False,
        shutdown: ShutdownRecord | None = None,
    ) -> DurableSecurityContext:
        """Derive and install the context of ``entry``, replacing one for the same key.

        ``shutdown`` is what a clean shutdown of the previous run saved of the
        context: its replay window is restored as known and its Sender Sequence
        Numbers resume at the exact next number. Without it, a ``restored`` context
        resumes at ``sender_mark`` and answers its first request with Echo (RFC 8613
        Appendix B.1.2).
        """
        self.remove(entry.key_id)
        key_id = entry.key_id
        state = self.state
        window: PersistedReplayWindow | None = None
        if (
            shutdown is not None
            and shutdown.key_id == key_id
            and 0 <= shutdown.sender_next <= MAX_SEQUENCE_NUMBER + 1
        ):
            sender_mark = shutdown.sender_next
            if shutdown.replay_window is not None and shutdown.replay_window.size == REPLAY_WINDOW:
                window = shutdown.replay_window

        def persist(mark: int) -> None:
            if state is not None:
                state.put_sender_mark(key_id, mark)

        context = DurableSecurityContext(
            derived_context(entry),
            key_id=key_id,
            reservation=SequenceNumberReservation(sender_mark, chunk=self.sequence_chunk),
            persist_mark=persist,
            replay_window_known=not restored,
            response_partial_iv=self.response_partial_iv,
            replay_window=window,
        )
        label = credentials_key(context.recipient_id, context.id_context)
        old = self.credentials.get(label)
        if isinstance(old, DurableSecurityContext):
            old.removed = True
            self._by_key_id.pop(old.key_id, None)
        self.credentials[label] = context
        self._by_key_id[key_id] = context
        return context

    def remove(self, key_id: bytes) -> None:
        """Remove the context of the token with PoP key ``key_id``, if any."""
        context = self._by_key_id.pop(key_id, None)
        if context is None:
            return
        context.removed = True
        label = credentials_key(context.recipient_id, context.id_context)
        if self.credentials.get(label) is context:
            del self.credentials[label]


__all__ = [
    "CREDENTIALS_PREFIX",
    "DEFAULT_SEQUENCE_CHUNK",
    "ContextTable",
    "DurableSecurityContext",
    "IndexedCredentialsMap",
    "OscoreLookup",
    "credentials_key",
    "oscore_lookup",
]
