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
   outer layer must be a COSE_Encrypt0 under the AS-RS key (the token carries the
   OSCORE Master Secret in ``cnf``, so it is never accepted in the clear); a
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
7. *profile*: ``ace_profile`` absent or one the RS supports (2, coap_oscore), and
   ``cnf`` of method ``osc`` (RFC 9203 §3.2.1); else ``incompatible_ace_profiles``
   (4.00, RFC 9200 §5.10.1.1).
8. *cnonce* (RFC 9200 §5.3.1), when the RS requires one: the token's ``cnonce``
   must be one this RS handed out in AS Request Creation Hints, not yet used and
   not older than its lifetime.

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
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from . import cbor, cwt
from .authz_info import MAX_RECIPIENT_ID_BYTES
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
    UnsupportedProfile,
)
from .exi import decode_exi_sequence
from .keys import Key
from .numbers.ace_parameters import CreationHint
from .numbers.ace_profiles import AceProfile
from .numbers.cose_algorithms import Algorithm
from .numbers.cose_headers import CoseTag
from .scope import AifScope, ResourceScopes, RestMethod, Scope, TextScope
from .token import AccessToken, CnfOsc
from .token_store import (
    ContextParameters,
    PersistedContext,
    StoredToken,
    TokenStore,
    VerifiedToken,
    pop_key_id,
)
from .validation import validate

#: Default bound on an access token (tokens of this profile are about 150-300 bytes).
DEFAULT_MAX_TOKEN_BYTES = 1024
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
    max_token_bytes: int = DEFAULT_MAX_TOKEN_BYTES
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
class PostResult:
    """The outcome of an ``/authz-info`` POST: the stored token and what it replaced."""

    stored: StoredToken
    superseded: StoredToken | None
    evicted: tuple[StoredToken, ...]


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

    ``exi_sequence_mark`` is the highest exi sequence number accepted so far; the
    caller persists it whenever :meth:`post` changes it (compare before and after).
    """

    def __init__(self, policy: RsPolicy, *, exi_sequence_mark: int | None = None) -> None:
        self.policy = policy
        self.store = TokenStore(policy.capacity)
        self.exi_sequence_mark = exi_sequence_mark
        self.cnonces = CnonceCache(policy.cnonce_capacity, policy.cnonce_lifetime)
        self._keys: list[Key] = [*policy.token_keys, *policy.as_public_keys]

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
        outer = opened.layers[0]
        if outer.kind != CoseTag.ENCRYPT0:
            raise InvalidToken("the access token must be encrypted for this RS (COSE_Encrypt0)")
        signed = len(opened.layers) > 1 and opened.layers[1].kind == CoseTag.SIGN1
        if len(opened.layers) > 1 and not signed:
            raise InvalidToken("only a COSE_Sign1 may be nested in the access token")
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
        validate(token, now=None, issuer=policy.issuer)
        validate(token, now=None, audience=policy.audience)
        # 6. scope
        self._check_scope(token.scope)
        # 7. profile
        if token.ace_profile is not None and token.ace_profile not in policy.profiles:
            raise UnsupportedProfile(f"ACE profile {token.ace_profile} is not supported here")
        if not isinstance(token.cnf, CnfOsc):
            raise UnsupportedProfile("the OSCORE profile needs a cnf of method osc (RFC 9203)")
        material = token.cnf.material
        expires_monotonic = monotonic + token.exi if token.exi is not None else None
        return VerifiedToken(
            token=token,
            raw=raw,
            material=material,
            key_id=pop_key_id(material),
            sequence=sequence,
            expires_at=token.exp if now_checked is not None else None,
            expires_monotonic=expires_monotonic,
            signed=signed,
        )

    def _check_scope(self, scope: Scope | None) -> None:
        if scope is None:
            raise InvalidScope("the token has no scope", claim="scope")
        table = self.policy.resources.table
        if not table:
            return
        if isinstance(scope, TextScope):
            known = {t for methods in table.values() for tokens in methods.values() for t in tokens}
            if known.isdisjoint(scope.tokens):
                raise InvalidScope("no scope token of the token is known here", claim="scope")
        elif isinstance(scope, AifScope) and not any(
            e.path in table and e.permissions for e in scope.entries
        ):
            raise InvalidScope("no AIF entry of the token names a resource here", claim="scope")

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

    def post(
        self,
        raw: bytes,
        *,
        nonce1: bytes,
        client_id: bytes,
        nonce2: bytes,
        now: int | None,
        monotonic: float,
    ) -> PostResult:
        """Verify and store a token posted to ``/authz-info`` (RFC 9203 §4.1, §4.2).

        Picks ID2 (unique among the RS's contexts, different from ID1) and keeps
        ``nonce2`` (fresh random bytes from the caller). A token for a PoP key that
        already has one supersedes it and its context.
        """
        if len(client_id) > MAX_RECIPIENT_ID_BYTES:
            raise InvalidRequest("ace_client_recipientId is too long")
        verified = self.verify(raw, now=now, monotonic=monotonic)
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
        evicted: list[StoredToken] = []
        if current is None and len(self.store) >= self.store.capacity:
            evicted = self.expire(now=now, monotonic=monotonic)
        reusable = current.context.server_id if current is not None else None
        server_id = self.store.free_server_id(client_id, reusable=reusable)
        context = ContextParameters(nonce1, nonce2, client_id, server_id)
        entry = StoredToken(verified, context, received_at=now)
        entry.derived()  # refuses ID1 == ID2 and IDs too long for the AEAD, before storing
        superseded = self.store.put(entry)
        if verified.sequence is not None and (
            self.exi_sequence_mark is None or verified.sequence > self.exi_sequence_mark
        ):
            self.exi_sequence_mark = verified.sequence
        return PostResult(entry, superseded, tuple(evicted))

    def update(
        self, raw: bytes, *, current: StoredToken, now: int | None, monotonic: float
    ) -> StoredToken:
        """Update access rights over an existing OSCORE context (RFC 9203 §4.4).

        The new token must be bound to the same PoP key (same ``cnf``); the context
        stays as it is, the token and its scope and lifetime are replaced.
        """
        verified = self.verify(raw, now=now, monotonic=monotonic)
        if not hmac.compare_digest(verified.key_id, current.key_id):
            raise InvalidRequest(
                "a token posted over OSCORE must be bound to that context's key (RFC 9203 §4.4)"
            )
        self._check_sequence(verified)
        if current.verified.sequence is not None and verified.sequence == current.verified.sequence:
            verified = _keep_expiry(verified, current.verified)
        entry = StoredToken(verified, current.context, received_at=now)
        self.store.put(entry)
        if verified.sequence is not None and (
            self.exi_sequence_mark is None or verified.sequence > self.exi_sequence_mark
        ):
            self.exi_sequence_mark = verified.sequence
        return entry

    def restore(
        self,
        record: PersistedContext,
        *,
        now: int | None,
        monotonic: float,
    ) -> StoredToken:
        """Re-install a persisted token and context after a restart; raise if no longer valid."""
        verified = self.verify(record.token, now=now, monotonic=monotonic, restoring=True)
        context = ContextParameters(
            record.nonce1, record.nonce2, record.client_id, record.server_id
        )
        entry = StoredToken(verified, context, received_at=record.received_at)
        entry.derived()
        if self.store.find(*entry.lookup) is not None:
            raise InvalidRequest("two persisted contexts share a Recipient ID")
        self.store.put(entry)
        return entry

    # -- requests --

    def find(
        self, recipient_id: bytes, id_context: bytes | None, *, now: int | None, monotonic: float
    ) -> StoredToken:
        """The live token behind an OSCORE context; :class:`InvalidToken` if gone or expired."""
        entry = self.store.find(recipient_id, id_context)
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

    def expire(self, *, now: int | None, monotonic: float) -> list[StoredToken]:
        """Remove and return expired tokens (their contexts must go too)."""
        gone = self.store.expired(
            now=now if self.policy.has_clock else None,
            monotonic=monotonic,
            leeway=self.policy.leeway,
        )
        for entry in gone:
            self.store.remove(entry.key_id)
        return gone

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


def _keep_expiry(new: VerifiedToken, old: VerifiedToken) -> VerifiedToken:
    return VerifiedToken(
        token=new.token,
        raw=new.raw,
        material=new.material,
        key_id=new.key_id,
        sequence=new.sequence,
        expires_at=new.expires_at,
        expires_monotonic=old.expires_monotonic,
        signed=new.signed,
    )


def scope_tokens(declarations: Mapping[str, Mapping[str, Iterable[str]]]) -> ResourceScopes:
    """A :class:`ResourceScopes` from ``{"/temp": {"GET": ["temp.read"]}}``."""
    return ResourceScopes.from_dict(declarations)


__all__ = [
    "DEFAULT_MAX_TOKEN_BYTES",
    "DEFAULT_TOKEN_ALGORITHMS",
    "PostResult",
    "ResourceServer",
    "RsPolicy",
    "authorize",
    "read_claims",
    "scope_tokens",
]
