"""The Resource Server's protocol logic for ACE with the OSCORE profile (RFC 9200, RFC 9203).

Sans-IO: nothing here reads a clock, a socket or a file. Wall-clock time (``now``,
seconds since the epoch, or ``None`` on an RS without a clock) and a *monotonic*
time (``monotonic``, seconds, only ever compared with itself) come in as
parameters; so does randomness (``nonce2``, the cnonce bytes).

Verification pipeline
---------------------

:meth:`ResourceServer.verify` checks a token in this order (the order of the ACE
reference implementation), raising the first failure:

1. *format*: size bound, then COSE decoding with an algorithm allow-list. The
   outer layer must be a COSE_Encrypt0 under the AS-RS key when every profile the
   RS accepts says so (the OSCORE profile's token carries the Master Secret in
   ``cnf``, so it is never accepted in the clear); a
   COSE_Sign1 by the AS may be nested inside (RFC 8392 §7.1) and is then verified
   with the AS public key. ``require_signature`` makes the inner Sign1 mandatory.
   A token whose wrapper does not decode, verify or decrypt is ``invalid_token``
   (4.01, RFC 9200 §5.10.1.1); an authentic token whose claims are malformed
   (wrong types, undecodable AIF, ``osc`` not understood) is 4.00, see
   :func:`read_claims`.
2. *active*: ``nbf`` / ``exp`` against ``now`` (RFC 8392 §3.1.4, §3.1.5) when the
   RS has a clock; otherwise the token must carry ``exi`` (RFC 9200 §5.10.3),
   counted from receipt on the monotonic clock.
3. *exi sequence number* (RFC 9200 §5.10.3): a token with ``exi`` must carry a
   ``cti`` holding the AS's per-RS sequence number, see :func:`encode_exi_sequence`.
   The RS keeps the highest number it has accepted (a persistable high-water
   mark) and refuses a number that is not above it, unless the token is the very
   token it currently stores for that PoP key (a re-post: new nonces, but the
   lifetime still counts from the first receipt, so a re-post never extends it).
4. *issuer* (if configured), 5. *audience* (``InvalidAudience``, 4.03).
6. *scope*: present and meaningful for this RS (at least one scope token or AIF
   path that the RS's declarations know), else ``invalid_scope`` (4.00).
7. *profile*: ``ace_profile`` absent (the default profile) or one the RS accepts
   and keybound implements (:mod:`keybound.core.profiles`; 2, coap_oscore), and a
   ``cnf`` of a method that profile takes (``osc``, RFC 9203 §3.2.1); else
   ``incompatible_ace_profiles`` (4.00, RFC 9200 §5.10.1.1).
8. *cnonce* (RFC 9200 §5.3.1), when the RS requires one: the token's ``cnonce``
   must be one this RS handed out in AS Request Creation Hints, not yet used and
   not older than its lifetime.

The ``/authz-info`` flow
------------------------

:meth:`ResourceServer.authz_info` is a generator, in the manner of
:meth:`keybound.core.client_flow.AceClient.request`: it decodes the payload and
verifies the token once, yields an :class:`Introspect` when the binding can ask
the AS (RFC 9200 §5.9) and receives whether the token is active, and returns an
:class:`AuthzInfoOutcome`: the token stored, the security contexts to drop, the
record and exi sequence number mark to persist, and the response payload. The
binding applies it in one place. :meth:`ResourceServer.expire` and
:meth:`ResourceServer.forget` return a :class:`Removal` likewise.

Errors keep the order of the checks: the payload, then the exchange parameters
(N1, ID1) or, under OSCORE, the stored token of the context, then the token.
The AS is asked only about a token that passed the local checks.

Stored tokens
-------------

Accepted tokens live in a :class:`~keybound.core.token_store.TokenStore`, at most
``capacity`` of them and one per PoP key; a full store refuses new tokens with
:class:`~keybound.core.errors.CapacityExceeded` (5.03) rather than evicting a live
one (see :mod:`keybound.core.token_store` for the storage policy).

After a restart (:meth:`ResourceServer.restore`), tokens whose lifetime was
counted with ``exi`` are dropped: the monotonic clock restarted and the elapsed
time is unknown. Their sequence numbers stay below the persisted high-water mark,
so they cannot be posted again either; the client fetches a new token.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Generator, Iterable, Mapping
from dataclasses import dataclass, field, replace

from . import cbor, cwt
from .authz_info import AuthzInfoRequest, decode_payload
from .cnonce import CnonceCache
from .errors import (
    ExpiredToken,
    InsufficientScope,
    InvalidClaim,
    InvalidRequest,
    InvalidScope,
    InvalidToken,
    KeyboundError,
    MalformedClaim,
    PayloadTooLarge,
)
from .exi import decode_exi_sequence
from .keys import Key
from .numbers.ace_parameters import CreationHint
from .numbers.ace_profiles import AceProfile
from .numbers.cose_algorithms import Algorithm
from .numbers.cose_headers import CoseTag
from .profiles import (
    DEFAULT_PROFILE,
    PROFILES,
    candidate_profiles,
    derived_context,
    select_profile,
)
from .records import frozen_record
from .scope import AifScope, ResourceScopes, RestMethod, Scope, TextScope
from .token import AccessToken
from .token_store import (
    ContextParameters,
    PersistedContext,
    StoredToken,
    TokenStore,
    VerifiedToken,
)
from .trl import KnownHashes, response_token_hash
from .validation import validate

#: Bound on an ``/authz-info`` payload at the RS, and so on the access token in it
#: (tokens of the OSCORE profile are about 150-300 bytes). The CoAP binding
#: refuses a longer body block by block (4.13, RFC 7959 §2.9.3).
MAX_AUTHZ_INFO_BYTES = 1024
#: Algorithms accepted by default: the OSCORE-profile AEADs and ES256 for a nested Sign1.
DEFAULT_TOKEN_ALGORITHMS = frozenset(
    {Algorithm.AES_CCM_16_64_128, Algorithm.AES_CCM_16_128_128, Algorithm.A128GCM, Algorithm.ES256}
)


# ---- configuration --------------------------------------------------------------------------


@dataclass(frozen=True)
class RsPolicy:
    """What the RS accepts: keys, names, clock, resources, bounds.

    ``token_keys`` are the AS-RS symmetric keys (COSE_Encrypt0); ``as_public_keys``
    verify a nested COSE_Sign1. ``issuer`` ``None`` skips the issuer check.
    ``resources`` declares which text scope tokens allow which method on which path.
    """

    audience: str
    as_uri: str
    token_keys: tuple[Key, ...]
    as_public_keys: tuple[Key, ...] = ()
    issuer: str | None = None
    has_clock: bool = True
    resources: ResourceScopes = field(default_factory=lambda: ResourceScopes({}))
    profiles: frozenset[int] = frozenset({int(AceProfile.COAP_OSCORE)})
    capacity: int = 1000
    require_signature: bool = False
    allowed_algorithms: frozenset[Algorithm] = DEFAULT_TOKEN_ALGORITHMS
    leeway: int = 0
    max_token_bytes: int = MAX_AUTHZ_INFO_BYTES
    require_cnonce: bool = False
    cnonce_lifetime: float = 120.0
    cnonce_capacity: int = 64

    def __post_init__(self) -> None:
        if not self.token_keys:
            raise ValueError("the RS needs at least one AS-RS token key")
        if any(not k.is_symmetric for k in self.token_keys):
            raise ValueError("token keys must be symmetric keys")
        if any(k.is_symmetric for k in self.as_public_keys):
            raise ValueError("AS public keys must be asymmetric keys")
        if self.require_signature and not self.as_public_keys:
            raise ValueError("require_signature needs the AS public key")
        if self.capacity < 1:
            raise ValueError("capacity must be at least 1")


# ---- the RS -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Introspect:
    """Ask the AS whether ``token`` is active (RFC 9200 §5.9).

    The binding sends back True (active), False (not active: revoked or expired)
    or None (no answer; the local checks decide).
    """

    token: bytes = field(repr=False)


@dataclass(frozen=True)
class AuthzInfoOutcome:
    """What an accepted ``/authz-info`` POST changes, for the binding to apply.

    In this order: drop the security contexts of :attr:`drop` and delete the rows
    of :attr:`delete` (no need to wait), persist :attr:`exi_mark` (if it moved) and
    then :attr:`persist` before answering, install the security context of
    :attr:`stored` unless :attr:`keeps_context`, answer 2.01 with :attr:`response`.

    ``persist`` holds Sender Sequence Number mark 0 for a new context; for a kept
    one (an update, RFC 9203 §4.4) the binding puts in the mark the installed
    context has made durable, which only it knows. It is made when asked for (a
    binding without a state store never asks).
    """

    stored: StoredToken
    response: bytes = b""
    superseded: StoredToken | None = None
    evicted: tuple[StoredToken, ...] = ()
    exi_mark: int | None = None
    keeps_context: bool = False

    @property
    def persist(self) -> PersistedContext:
        """The record of :attr:`stored` to persist (Sender Sequence Number mark 0)."""
        return persisted(self.stored)

    @property
    def drop(self) -> tuple[bytes, ...]:
        """The PoP key ids whose security contexts go: evicted and superseded tokens."""
        if self.superseded is None:
            return self.delete
        return (*self.delete, self.superseded.key_id)

    @property
    def delete(self) -> tuple[bytes, ...]:
        """The PoP key ids whose persisted rows go (a superseded row is replaced)."""
        evicted = self.evicted
        return tuple([entry.key_id for entry in evicted]) if evicted else ()


@dataclass(frozen=True)
class Removal:
    """Tokens gone from the store: drop their security contexts, delete their rows.

    ``key_ids`` may name a key with no stored token (its context and row go anyway).
    """

    removed: tuple[StoredToken, ...]
    key_ids: tuple[bytes, ...]

    @classmethod
    def of(cls, entries: Iterable[StoredToken]) -> Removal:
        removed = tuple(entries)
        return cls(removed, tuple(entry.key_id for entry in removed))


def persisted(entry: StoredToken, *, sender_mark: int = 0) -> PersistedContext:
    """The record a restarted RS re-derives ``entry``'s context from.

    A token without ``/authz-info`` parameters (EDHOC) is persisted with empty ones.
    """
    context = entry.context or ContextParameters(b"", b"", b"", b"")
    return PersistedContext(
        key_id=entry.key_id,
        token=entry.verified.raw,
        nonce1=context.nonce1,
        nonce2=context.nonce2,
        client_id=context.client_id,
        server_id=context.server_id,
        received_at=entry.received_at,
        sender_mark=sender_mark,
    )


def authorize(
    token: AccessToken, method: RestMethod | str, path: str, resources: ResourceScopes
) -> None:
    """Raise unless ``token``'s scope allows the request (RFC 9200 §5.10.2).

    :class:`~keybound.core.errors.MethodNotAllowed` (4.05) when the scope covers
    ``path`` but not ``method``; :class:`InsufficientScope` (4.03) otherwise. Text
    scopes are looked up in ``resources`` (RFC 6749 §3.3); AIF scopes carry their own
    paths and methods (RFC 9237 §3).
    """
    if token.scope is None:
        raise InsufficientScope("the token has no scope")
    token.scope.require(method, path, resources=resources)


def read_claims(claims: Mapping[object, object]) -> AccessToken:
    """The claims of an authentic token as the model; malformed claims are 4.00.

    RFC 9200 §5.10.1.1 and RFC 9203 §4.2: once the wrapper verified, a claim of a
    wrong type (``scope``, ``exp``, ...) is :class:`MalformedClaim`, a scope that is
    not AIF or text is ``invalid_scope``, and ``osc`` input material that is not
    understood (unknown parameter, no ``ms``) is ``invalid_request`` or, for an AEAD
    or HKDF keybound cannot use, ``unsupported_pop_key``: all 4.00 (Bad Request).
    """
    try:
        return AccessToken.from_cwt_claims(claims)
    except InvalidToken as exc:  # InvalidClaim: a wrong type or value
        raise MalformedClaim(exc.description, claim=exc.claim) from exc


class ResourceServer:
    """The RS state machine: verify, store, authorize, expire. No I/O.

    ``exi_sequence_mark`` is the highest exi sequence number accepted so far; an
    :class:`AuthzInfoOutcome` carries it (``exi_mark``) when it moved, for the
    caller to persist.
    """

    def __init__(self, policy: RsPolicy, *, exi_sequence_mark: int | None = None) -> None:
        self.policy = policy
        self.store = TokenStore(policy.capacity)
        self.exi_sequence_mark = exi_sequence_mark
        #: the token hashes of the AS's token revocation list this RS knows (RFC 9770
        #: §10.1), when it follows the list: a token whose hash is known is refused
        self.revoked: KnownHashes | None = None
        self.cnonces = CnonceCache(policy.cnonce_capacity, policy.cnonce_lifetime)
        self._keys: list[Key] = [*policy.token_keys, *policy.as_public_keys]
        self._known_tokens: tuple[ResourceScopes, frozenset[str]] | None = None

    def declare(self, path: str, methods: Mapping[str, Iterable[str]]) -> None:
        """Declare which text scope tokens allow which method on ``path`` (adds to the policy)."""
        added = ResourceScopes.from_dict({path: methods})
        table = {**self.policy.resources.table, **added.table}
        self.policy = replace(self.policy, resources=ResourceScopes(table))

    # -- verification --

    def verify(
        self,
        raw: bytes,
        *,
        now: int | None,
        monotonic: float,
        restoring: bool = False,
    ) -> VerifiedToken:
        """Run the verification pipeline of the module docstring; raise on the first failure.

        Does not store anything and does not consume a cnonce (see :meth:`post`).
        ``restoring`` re-checks a token loaded from storage: its exi sequence number
        is not compared with the mark and exi tokens are refused (their timer is lost).
        """
        policy = self.policy
        if not isinstance(raw, bytes):
            raise InvalidToken("the access token must be a byte string")
        if len(raw) > policy.max_token_bytes:
            raise PayloadTooLarge(f"the access token exceeds {policy.max_token_bytes} bytes")
        if self.revoked is not None and response_token_hash(raw) in self.revoked:
            raise InvalidToken("the token was revoked (on the AS's token revocation list)")
        # 1. format: the security wrapper (4.01), then the claims (4.00)
        try:
            opened = cwt.open_layers(
                raw,
                self._keys,
                allowed=policy.allowed_algorithms,
                max_size=policy.max_token_bytes,
            )
        except InvalidToken:
            raise
        except KeyboundError as exc:
            raise InvalidToken(f"the access token is not a valid CWT: {exc.description}") from exc
        encrypted = opened.layers[0].kind == CoseTag.ENCRYPT0
        if not encrypted and all(
            p.encrypted_token for p in candidate_profiles(policy.profiles)
        ):  # refused before its claims are read when no profile takes it in the clear
            raise InvalidToken(_NOT_ENCRYPTED)
        nested_sign1 = len(opened.layers) > 1 and opened.layers[1].kind == CoseTag.SIGN1
        if len(opened.layers) > 1 and not nested_sign1:
            raise InvalidToken("only a COSE_Sign1 may be nested in the access token")
        signed = nested_sign1 or opened.layers[0].kind == CoseTag.SIGN1
        if policy.require_signature and not signed:
            raise InvalidToken("the access token must be signed by the AS")
        token = read_claims(opened.claims)
        # 2. active: exp/nbf with a clock, exi without
        now_checked = now if policy.has_clock else None
        if now_checked is None and token.exi is None:
            raise InvalidToken("this RS has no clock: the token must carry exi", claim="exi")
        if now_checked is not None and token.exp is None and token.exi is None:
            raise InvalidToken("the token must carry exp or exi", claim="exp")
        validate(token, now=now_checked, leeway=policy.leeway)
        if restoring and token.exi is not None:
            raise ExpiredToken("the exi timer of this token did not survive a restart", claim="exi")
        # 3. the exi sequence number
        sequence: int | None = None
        if token.exi is not None:
            if token.cti is None:
                raise InvalidClaim("a token with exi must carry a cti sequence number", claim="cti")
            sequence = decode_exi_sequence(token.cti)
        # 4. issuer, 5. audience
        if policy.issuer is not None:
            validate(token, now=None, issuer=policy.issuer)
        validate(token, now=None, audience=policy.audience)
        # 6. scope
        self._check_scope(token.scope)
        # 7. profile
        profile = select_profile(token.ace_profile, policy.profiles)
        material = profile.pop_key(token)
        if profile.encrypted_token and not encrypted:  # an RS that also takes signed tokens
            raise InvalidToken(_NOT_ENCRYPTED)
        expires_monotonic = monotonic + token.exi if token.exi is not None else None
        return frozen_record(
            VerifiedToken,
            token=token,
            raw=raw,
            material=material,
            key_id=profile.key_id(material),
            sequence=sequence,
            expires_at=token.exp if now_checked is not None else None,
            expires_monotonic=expires_monotonic,
            signed=signed,
            profile=profile.number,
        )

    def _check_scope(self, scope: Scope | None) -> None:
        if scope is None:
            raise InvalidScope("the token has no scope", claim="scope")
        table = self.policy.resources.table
        if not table:
            return
        if isinstance(scope, TextScope):
            if self._known_scope_tokens().isdisjoint(scope.tokens):
                raise InvalidScope("no scope token of the token is known here", claim="scope")
        elif isinstance(scope, AifScope) and not any(
            e.path in table and e.permissions for e in scope.entries
        ):
            raise InvalidScope("no AIF entry of the token names a resource here", claim="scope")

    def _known_scope_tokens(self) -> frozenset[str]:
        """Every text scope token the RS's declarations name, gathered once per declaration.

        Kept with the :class:`ResourceScopes` it was gathered from: a new declaration
        (:meth:`declare`, or a new policy) is a new object and gathers them again.
        """
        resources = self.policy.resources
        cached = self._known_tokens
        if cached is None or cached[0] is not resources:
            tokens = frozenset(
                t for methods in resources.table.values() for ts in methods.values() for t in ts
            )
            cached = self._known_tokens = (resources, tokens)
        return cached[1]

    def _check_sequence(self, verified: VerifiedToken) -> None:
        if verified.sequence is None:
            return
        mark = self.exi_sequence_mark
        if mark is None or verified.sequence > mark:
            return
        current = self.store.get(verified.key_id)
        if current is not None and current.verified.sequence == verified.sequence:
            return  # a re-post of the token stored for this key (RFC 9203 §4.1)
        raise InvalidToken(
            f"exi sequence number {verified.sequence} is not above {mark} (RFC 9200 §5.10.3)",
            claim="cti",
        )

    # -- /authz-info --

    def authz_info(
        self,
        payload: bytes,
        *,
        over: bytes | None,
        random: Callable[[int], bytes],
        now: int | None,
        monotonic: float,
        introspect: bool = False,
    ) -> Generator[Introspect, bool | None, AuthzInfoOutcome]:
        """The ``/authz-info`` POST of ``payload`` as a sans-IO flow (RFC 9200 §5.10.1).

        ``over`` is the PoP key id of the OSCORE context the request came under (an
        update of access rights, RFC 9203 §4.4), None for an unprotected POST
        (RFC 9203 §4.1, §4.2). ``random`` makes the RS's nonce. With ``introspect``
        the flow yields one :class:`Introspect` for a token that passed the local
        checks; an answer of False refuses the token (``invalid_token``, 4.01).
        Raises the first failure, in the order of the module docstring.
        """
        fields = decode_payload(payload)
        request = AuthzInfoRequest.read_token(fields)
        token = request.access_token
        verified: VerifiedToken | None = None
        failure: KeyboundError | None = None
        try:
            verified = self.verify(token, now=now, monotonic=monotonic)
        except KeyboundError as exc:  # raised after the request's own checks
            failure = exc
        if introspect and verified is not None:
            active = yield Introspect(token)
            if active is False:
                raise InvalidToken("the AS reports the token inactive (revoked or expired)")
        if over is not None:
            current = self.store.get(over)
            if current is None:
                raise InvalidToken("no access token for this security context")
            if verified is None:
                raise _failed(failure)
            return self._update(verified, current=current, now=now)
        # The token's profile reads its parameters; for a token that failed, a profile
        # the RS accepts must, so a malformed request is refused as such first.
        if verified is None:
            self._read_exchange_of_any(request, fields)
            raise _failed(failure)
        request = PROFILES[verified.profile].read_exchange(request, fields)
        return self._accept(verified, request, random=random, now=now, monotonic=monotonic)

    def _read_exchange_of_any(
        self, request: AuthzInfoRequest, fields: Mapping[object, object]
    ) -> None:
        """Raise the default profile's error unless some accepted profile reads ``fields``."""
        default = PROFILES[DEFAULT_PROFILE]
        for profile in candidate_profiles(self.policy.profiles):
            if profile is default:
                continue
            try:
                profile.read_exchange(request, fields)
            except KeyboundError:
                continue
            return
        default.read_exchange(request, fields)

    def post(
        self,
        raw: bytes,
        *,
        nonce1: bytes,
        client_id: bytes,
        nonce2: bytes,
        now: int | None,
        monotonic: float,
    ) -> AuthzInfoOutcome:
        """Verify and store a token posted to ``/authz-info`` (RFC 9203 §4.1, §4.2).

        ``nonce1`` and ``client_id`` (ID1) are the client's, checked where they were
        decoded; ``nonce2`` is fresh random bytes from the caller. Picks ID2 (unique
        among the RS's contexts, different from ID1). A token for a PoP key that
        already has one supersedes it and its context.
        """
        verified = self.verify(raw, now=now, monotonic=monotonic)
        request = AuthzInfoRequest(raw, nonce1, client_id)
        return self._accept(
            verified, request, random=lambda _size: nonce2, now=now, monotonic=monotonic
        )

    def _accept(
        self,
        verified: VerifiedToken,
        request: AuthzInfoRequest,
        *,
        random: Callable[[int], bytes],
        now: int | None,
        monotonic: float,
    ) -> AuthzInfoOutcome:
        raw = verified.raw
        self._check_sequence(verified)
        current = self.store.get(verified.key_id)
        if (
            current is not None
            and verified.sequence is not None
            and current.verified.sequence == verified.sequence
        ):
            # a re-post keeps the lifetime counted from the first receipt
            verified = _keep_expiry(verified, current.verified)
        repost = current is not None and hmac.compare_digest(current.verified.raw, raw)
        if self.policy.require_cnonce and not repost:
            self.cnonces.consume(verified.token.cnonce, monotonic=monotonic)
        evicted: tuple[StoredToken, ...] = ()
        if current is None and len(self.store) >= self.store.capacity:
            evicted = self._remove_expired(now=now, monotonic=monotonic)
        profile = PROFILES[verified.profile]
        server_id = b""
        if profile.derives_at_authz_info:
            reusable = current.context.server_id if current and current.context else None
            server_id = self.store.free_server_id(
                request.client_recipient_id or b"", reusable=reusable
            )
        context = profile.context(request, server_id=server_id, random=random)
        entry = StoredToken(verified, context, received_at=now)
        if context is not None:  # refuses ID1 == ID2 and IDs too long for the AEAD, first
            derived_context(entry)
        superseded = self.store.put(entry)
        return frozen_record(
            AuthzInfoOutcome,
            stored=entry,
            response=profile.response(context),
            superseded=superseded,
            evicted=evicted,
            exi_mark=self._raise_mark(verified),
            keeps_context=False,
        )

    def update(
        self, raw: bytes, *, current: StoredToken, now: int | None, monotonic: float
    ) -> AuthzInfoOutcome:
        """Update access rights over an existing OSCORE context (RFC 9203 §4.4).

        The new token must be bound to the same PoP key (same ``cnf``); the context
        stays as it is, the token and its scope and lifetime are replaced.
        """
        verified = self.verify(raw, now=now, monotonic=monotonic)
        return self._update(verified, current=current, now=now)

    def _update(
        self, verified: VerifiedToken, *, current: StoredToken, now: int | None
    ) -> AuthzInfoOutcome:
        if not hmac.compare_digest(verified.key_id, current.key_id):
            raise InvalidRequest(
                "a token posted over OSCORE must be bound to that context's key (RFC 9203 §4.4)"
            )
        self._check_sequence(verified)
        if current.verified.sequence is not None and verified.sequence == current.verified.sequence:
            verified = _keep_expiry(verified, current.verified)
        entry = StoredToken(verified, current.context, received_at=now)
        self.store.put(entry)
        exi_mark = self._raise_mark(verified)
        return AuthzInfoOutcome(entry, exi_mark=exi_mark, keeps_context=True)

    def _raise_mark(self, verified: VerifiedToken) -> int | None:
        """Raise the exi sequence number mark to ``verified``'s; the new mark if it moved.

        RFC 9200 §5.10.3: the mark is the highest sequence number accepted so far.
        """
        if verified.sequence is None or (
            self.exi_sequence_mark is not None and verified.sequence <= self.exi_sequence_mark
        ):
            return None
        self.exi_sequence_mark = verified.sequence
        return verified.sequence

    def restore(
        self,
        record: PersistedContext,
        *,
        now: int | None,
        monotonic: float,
    ) -> StoredToken:
        """Re-install a persisted token and context after a restart; raise if no longer valid."""
        verified = self.verify(record.token, now=now, monotonic=monotonic, restoring=True)
        context = PROFILES[verified.profile].restored(record)
        entry = StoredToken(verified, context, received_at=record.received_at)
        lookup = entry.lookup
        if context is not None:
            derived_context(entry)
        if lookup is not None and self.store.find(*lookup) is not None:
            raise InvalidRequest("two persisted contexts share a Recipient ID")
        self.store.put(entry)
        return entry

    # -- requests --

    def find(
        self, recipient_id: bytes, id_context: bytes | None, *, now: int | None, monotonic: float
    ) -> StoredToken:
        """The live token behind an OSCORE context; :class:`InvalidToken` if gone or expired."""
        return self._live(self.store.find(recipient_id, id_context), now=now, monotonic=monotonic)

    def live(self, key_id: bytes, *, now: int | None, monotonic: float) -> StoredToken:
        """The live token of PoP key ``key_id`` (e.g. behind an EDHOC session);
        :class:`InvalidToken` if gone, :class:`ExpiredToken` if expired."""
        return self._live(self.store.get(key_id), now=now, monotonic=monotonic)

    def _live(self, entry: StoredToken | None, *, now: int | None, monotonic: float) -> StoredToken:
        if entry is None:
            raise InvalidToken("no access token for this security context")
        if entry.verified.expired(
            now=now if self.policy.has_clock else None,
            monotonic=monotonic,
            leeway=self.policy.leeway,
        ):
            raise ExpiredToken("the access token of this security context has expired")
        return entry

    def authorize(self, entry: StoredToken, method: RestMethod | str, path: str) -> None:
        """Raise unless the stored token allows the request (see :func:`authorize`)."""
        authorize(entry.verified.token, method, path, self.policy.resources)

    def expire(self, *, now: int | None, monotonic: float) -> Removal:
        """Remove the expired tokens; their contexts and rows must go too."""
        return Removal.of(self._remove_expired(now=now, monotonic=monotonic))

    def forget(self, key_id: bytes) -> Removal:
        """Remove the token of PoP key ``key_id`` (gone or expired), and its context and row."""
        entry = self.store.remove(key_id)
        return Removal(() if entry is None else (entry,), (key_id,))

    def _remove_expired(self, *, now: int | None, monotonic: float) -> tuple[StoredToken, ...]:
        gone = self.store.expired(
            now=now if self.policy.has_clock else None,
            monotonic=monotonic,
            leeway=self.policy.leeway,
        )
        for entry in gone:
            self.store.remove(entry.key_id)
        return tuple(gone)

    # -- AS Request Creation Hints (RFC 9200 §5.3) --

    def creation_hints(
        self,
        *,
        scope: Scope | None = None,
        cnonce: bytes | None = None,
    ) -> dict[int, object]:
        """The AS Request Creation Hints map: AS URI, audience, scope?, cnonce?."""
        hints: dict[int, object] = {
            int(CreationHint.AS): self.policy.as_uri,
            int(CreationHint.AUDIENCE): self.policy.audience,
        }
        if scope is not None:
            hints[int(CreationHint.SCOPE)] = scope.to_cwt()
        if cnonce is not None:
            hints[int(CreationHint.CNONCE)] = cnonce
        return hints

    def creation_hints_for(
        self, method: RestMethod | str, path: str, *, random: bytes | None, monotonic: float
    ) -> bytes:
        """The CBOR hints for an unauthorized request to ``path`` (RFC 9200 §5.3).

        The scope hint names the scope tokens that allow the request (or an AIF
        entry when the RS declares none); a cnonce is issued from ``random`` when the
        RS requires one (RFC 9200 §5.3.1).
        """
        scope: Scope | None = None
        try:
            tokens = sorted(self.policy.resources.tokens_for(method, path))
        except KeyboundError:
            tokens = []
        if tokens:
            scope = TextScope.of(tokens)
        cnonce = None
        if self.policy.require_cnonce and random is not None:
            cnonce = self.cnonces.issue(random, monotonic=monotonic)
        return cbor.dumps(self.creation_hints(scope=scope, cnonce=cnonce))


_NOT_ENCRYPTED = "the access token must be encrypted for this RS (COSE_Encrypt0)"


def _keep_expiry(new: VerifiedToken, old: VerifiedToken) -> VerifiedToken:
    return replace(new, expires_monotonic=old.expires_monotonic)


def _failed(failure: KeyboundError | None) -> KeyboundError:
    assert failure is not None  # no verified token means verification failed
    return failure


def scope_tokens(declarations: Mapping[str, Mapping[str, Iterable[str]]]) -> ResourceScopes:
    """A :class:`ResourceScopes` from ``{"/temp": {"GET": ["temp.read"]}}``."""
    return ResourceScopes.from_dict(declarations)


__all__ = [
    "DEFAULT_TOKEN_ALGORITHMS",
    "MAX_AUTHZ_INFO_BYTES",
    "AuthzInfoOutcome",
    "Introspect",
    "Removal",
    "ResourceServer",
    "RsPolicy",
    "authorize",
    "persisted",
    "read_claims",
    "scope_tokens",
]
