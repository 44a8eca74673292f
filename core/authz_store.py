"""What the Authorization Server keeps, and the interface its logic uses to keep it.

The AS of RFC 9200 remembers four kinds of things:

* its own identity: the issuer URI and the key it signs tokens with;
* the resource servers it issues tokens for (RFC 9200 §5.8.1 ``audience``),
  with the scopes they understand, the symmetric key each token is encrypted
  with (RFC 9200 §6.1, a COSE_Encrypt0 of RFC 9052 §5.2), and whether the RS
  has a clock;
* the clients, how they authenticate to the AS (an OSCORE context, RFC 9203
  §3.1, or an HTTP secret), and what they may ask for;
* the tokens it issued, for introspection (RFC 9200 §5.9, RFC 7662) and
  revocation, and the per-RS counters that make ``exi`` tokens safe
  (RFC 9200 §5.10.3).

This module is sans-IO: frozen dataclasses for the records and a
:class:`AuthzStore` protocol. The SQL implementation lives in
``keybound.tools.authz_server.storage``. Key material is held as opaque bytes (COSE_Key
CBOR, RFC 9052 §7); nothing here parses it. Times are NumericDate values,
whole seconds since the epoch (RFC 8392 §2), passed in by the caller.

Secrets are kept out of ``repr()`` so a record can be logged without leaking
them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

from .numbers.ace_profiles import AceProfile
from .trl import TrlLimits, UpdateCollection

__all__ = [
    "DEFAULT_PROFILES",
    "TOKEN_FORMATS",
    "AuthzStore",
    "AuthzStoreError",
    "Client",
    "ClientRegistration",
    "DuplicateRecord",
    "InvalidRecord",
    "IssuedToken",
    "IssuerSettings",
    "OscoreContext",
    "OscoreStateStore",
    "RsRecord",
    "TokenFormat",
    "TokenKey",
    "TrlStore",
    "UnknownRecord",
    "trl_requester",
    "validated_scopes",
]

TokenFormat = Literal["cwt", "jwt"]
"""How an access token is encoded: a CWT (RFC 8392) or a JWT (RFC 7519)."""

TOKEN_FORMATS: tuple[TokenFormat, ...] = ("cwt", "jwt")

DEFAULT_PROFILES: tuple[int, ...] = (int(AceProfile.COAP_OSCORE),)
"""A resource server speaks the OSCORE profile (RFC 9203, ``coap_oscore`` = 2) unless told."""


# ---- errors ---------------------------------------------------------------------------------


class AuthzStoreError(Exception):
    """Root of the storage errors. These are operator errors, not protocol errors:
    the AS logic turns a missing client into ``invalid_client`` itself."""


class UnknownRecord(AuthzStoreError, LookupError):
    """The named client, resource server, audience or token does not exist."""


class DuplicateRecord(AuthzStoreError, ValueError):
    """A record with the same unique name (client_id, RS name, audience, cti, kid) exists."""


class InvalidRecord(AuthzStoreError, ValueError):
    """A record's fields contradict each other or the rest of the store."""


# RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E )
_SCOPE_TOKEN = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")


def validated_scopes(scopes: Iterable[str], *, what: str) -> tuple[str, ...]:
    """Check scope values against RFC 6749 §3.3 and drop duplicates, keeping order.

    ``what`` names the owner for the error message.
    """
    if isinstance(scopes, str):
        raise InvalidRecord(f"{what}: scopes must be a list of scope values, not one string")
    seen: dict[str, None] = {}
    for scope in scopes:
        if not isinstance(scope, str) or not _SCOPE_TOKEN.fullmatch(scope):
            raise InvalidRecord(f"{what}: {scope!r} is not a scope value (RFC 6749 §3.3)")
        seen.setdefault(scope, None)
    return tuple(seen)


# ---- records ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class OscoreContext:
    """The input of an OSCORE Security Context (RFC 8613 §3.2) shared with the AS.

    For a client this protects its token requests (RFC 9203 §3.1); for a
    resource server, its introspection requests (RFC 9200 §5.9). The IDs are
    those of the *peer's* side: ``sender_id`` is what the peer sends with,
    ``recipient_id`` what the AS sends with. Algorithms and HKDF are the
    RFC 8613 defaults unless the binding says otherwise.
    """

    master_secret: bytes = field(repr=False)
    sender_id: bytes
    recipient_id: bytes
    master_salt: bytes = b""
    id_context: bytes | None = None

    def __post_init__(self) -> None:
        if not self.master_secret:
            raise InvalidRecord("an OSCORE master secret must not be empty (RFC 8613 §3.1)")
        if self.sender_id == self.recipient_id:
            raise InvalidRecord("OSCORE sender and recipient IDs must differ (RFC 8613 §3.3)")


@dataclass(frozen=True)
class IssuerSettings:
    """The AS's identity: the ``iss`` it writes (RFC 8392 §3.1.1) and its signing key."""

    issuer: str
    signing_key: bytes = field(repr=False)
    """COSE_Key bytes including the private part (RFC 9052 §7)."""
    created: int


@dataclass(frozen=True)
class TokenKey:
    """One version of the symmetric key the AS encrypts an RS's tokens with (RFC 9200 §6.1).

    ``kid`` goes into the COSE_Encrypt0 unprotected header (RFC 9052 §3.1),
    so the RS (and the AS, on introspection) can tell versions apart.
    """

    version: int
    kid: bytes
    key: bytes = field(repr=False)
    """COSE_Key bytes of a symmetric key (RFC 9053 §6.1)."""
    created: int
    retired: int | None = None
    """When a newer version replaced this one; ``None`` for the current key."""


@dataclass(frozen=True)
class RsRecord:
    """The AS's record of a resource server it issues tokens for (RFC 9200 §5.8.1,
    ``audience``); the RS's own state machine is
    :class:`keybound.core.resource_server.ResourceServer`."""

    name: str
    audience: str
    scopes: tuple[str, ...]
    """The scope values this RS understands (RFC 6749 §3.3)."""
    token_keys: tuple[TokenKey, ...]
    """Newest first; ``token_keys[0]`` is current, the rest are kept after rotation."""
    has_clock: bool
    """Without a clock the RS cannot check ``exp``; tokens then carry ``exi`` and a
    sequence number (RFC 9200 §5.10.3)."""
    profiles: tuple[int, ...]
    """ACE profiles it supports, IANA values (RFC 9200 §8.8)."""
    default_lifetime: int
    """Seconds a token is valid unless the request or policy says otherwise."""
    introspection_context: OscoreContext | None
    """The RS's OSCORE context with the AS, for introspection (RFC 9200 §5.9)."""
    created: int
    credential: bytes | None = None
    """The RS's EDHOC authentication credential, an encoded CCS (RFC 9528 §3.5.2), sent to
    clients as ``rs_cnf`` (draft-ietf-ace-edhoc-oscore-profile §3.3); None if it has none."""

    @property
    def token_key(self) -> TokenKey:
        """The key new tokens for this RS are encrypted with."""
        return self.token_keys[0]

    def token_key_by_kid(self, kid: bytes) -> TokenKey | None:
        """A retained key version by its ``kid``, e.g. to introspect an older token."""
        for candidate in self.token_keys:
            if candidate.kid == kid:
                return candidate
        return None


@dataclass(frozen=True)
class Client:
    """A client known to the AS (RFC 9200 §5.8.1, RFC 6749 §2).

    The HTTP secret itself is never part of the record, only whether one is set.
    """

    client_id: str
    has_secret: bool
    oscore: OscoreContext | None
    """The client-AS OSCORE context from provisioning (RFC 9203 §3.1)."""
    public_key: bytes | None
    """A registered public key, COSE_Key bytes (RFC 8747 §3.2), if any."""
    grants: Mapping[str, tuple[str, ...]]
    """Per audience, the scopes this client may be given (RFC 9200 §5.8.2)."""
    created: int
    credential: bytes | None = None
    """The client's registered EDHOC authentication credential, an encoded CCS
    (RFC 9528 §3.5.2): the only one the AS binds to its tokens of the EDHOC profile."""

    def allowed_scopes(self, audience: str) -> tuple[str, ...]:
        """The scopes granted for ``audience``; empty if none."""
        return self.grants.get(audience, ())


@dataclass(frozen=True)
class ClientRegistration:
    """What a new client is created from; ``secret`` is the plaintext, hashed on storage."""

    client_id: str
    secret: str | None = field(default=None, repr=False)
    oscore: OscoreContext | None = None
    public_key: bytes | None = None
    grants: Mapping[str, Sequence[str]] = field(default_factory=dict)
    credential: bytes | None = None
    """An EDHOC authentication credential (encoded CCS), public only."""

    def __post_init__(self) -> None:
        if not self.client_id:
            raise InvalidRecord("client_id must not be empty")
        if self.secret is not None and not self.secret:
            raise InvalidRecord(f"client {self.client_id!r}: an empty secret is not a secret")
        for audience, scopes in self.grants.items():
            validated_scopes(scopes, what=f"client {self.client_id!r}, grant for {audience!r}")


@dataclass(frozen=True)
class IssuedToken:
    """A token the AS issued, as remembered for introspection and revocation.

    ``cti`` is the CWT ID (RFC 8392 §3.1.7) or the JWT ``jti`` as bytes.
    ``exi`` and ``sequence`` are set for an RS without a clock
    (RFC 9200 §5.10.3); ``exp`` is then usually ``None``.
    ``cnf_id`` names the proof-of-possession key: a kid (RFC 8747 §3.4),
    a COSE key thumbprint (RFC 9679) or a JWK thumbprint (RFC 7638).
    """

    cti: bytes
    client_id: str
    audience: str
    scope: str
    format: TokenFormat
    iat: int
    exp: int | None = None
    exi: int | None = None
    sequence: int | None = None
    cnf_id: bytes | None = None
    revoked: bool = False
    revoked_at: int | None = None
    #: the RFC 9770 token hash of the token as issued (``None`` for tokens recorded
    #: before keybound kept it: those never reach the token revocation list)
    token_hash: bytes | None = None

    def __post_init__(self) -> None:
        if not self.cti:
            raise InvalidRecord("a token's cti must not be empty (RFC 8392 §3.1.7)")
        if self.format not in TOKEN_FORMATS:
            raise InvalidRecord(f"token format must be one of {TOKEN_FORMATS}, not {self.format!r}")
        if self.exi is not None and self.exi <= 0:
            raise InvalidRecord("exi must be a positive number of seconds (RFC 9200 §5.10.3)")


# ---- the interface ---------------------------------------------------------------------------


class AuthzStore(Protocol):
    """Storage the AS logic needs. Every call is one short transaction.

    Lookups return ``None`` for a missing record; changes to a missing record
    raise :class:`UnknownRecord`; a clash of unique names raises
    :class:`DuplicateRecord`. ``now`` is a NumericDate; ``None`` means the
    implementation's clock.
    """

    # issuer

    def get_issuer(self) -> IssuerSettings | None:
        """The AS's issuer settings, or ``None`` before they are set."""
        ...

    def set_issuer(
        self, issuer: str, signing_key: bytes, *, now: int | None = None
    ) -> IssuerSettings:
        """Set (or replace) the issuer URI and the AS signing key."""
        ...

    # resource servers

    def add_resource_server(
        self,
        name: str,
        audience: str,
        *,
        scopes: Sequence[str],
        token_key: bytes,
        token_kid: bytes,
        has_clock: bool = True,
        profiles: Sequence[int] = DEFAULT_PROFILES,
        default_lifetime: int = 3600,
        introspection_context: OscoreContext | None = None,
        now: int | None = None,
        credential: bytes | None = None,
    ) -> RsRecord:
        """Register a resource server; ``name`` and ``audience`` are unique."""
        ...

    def get_resource_server(self, name: str) -> RsRecord | None:
        """A resource server by its local name."""
        ...

    def get_resource_server_by_audience(self, audience: str) -> RsRecord | None:
        """A resource server by the ``audience`` a token request names (RFC 9200 §5.8.1)."""
        ...

    def list_resource_servers(self) -> list[RsRecord]:
        """All resource servers, by name."""
        ...

    def remove_resource_server(self, name: str) -> None:
        """Forget a resource server, its keys and every client's grants for it.

        Its sequence counter is kept, so re-adding the same audience never
        hands out a number the RS has already seen (RFC 9200 §5.10.3).
        """
        ...

    def rotate_token_key(
        self,
        name: str,
        token_key: bytes,
        token_kid: bytes,
        *,
        keep_previous: int = 1,
        now: int | None = None,
    ) -> RsRecord:
        """Make a new token key current; keep the ``keep_previous`` newest old versions."""
        ...

    # clients

    def add_client(self, registration: ClientRegistration, *, now: int | None = None) -> Client:
        """Register one client."""
        ...

    def add_clients(
        self, registrations: Sequence[ClientRegistration], *, now: int | None = None
    ) -> list[Client]:
        """Register many clients in one transaction: all of them, or none."""
        ...

    def get_client(self, client_id: str) -> Client | None:
        """A client by ``client_id``."""
        ...

    def list_clients(self) -> list[Client]:
        """All clients, by ``client_id``."""
        ...

    def remove_client(self, client_id: str) -> None:
        """Forget a client and its grants; the tokens issued to it stay on record."""
        ...

    def set_grants(self, client_id: str, grants: Mapping[str, Sequence[str]]) -> Client:
        """Replace a client's grants. Each audience must be registered and each
        scope one its RS understands."""
        ...

    def verify_client_secret(self, client_id: str, secret: str) -> Client:
        """Authenticate a client by its HTTP secret (RFC 6749 §2.3.1).

        Returns the client, or raises :class:`keybound.core.errors.InvalidClient`
        for an unknown client, a client without a secret, or a wrong secret,
        taking about the same time in each case.
        """
        ...

    def set_rs_credential(self, name: str, credential: bytes | None) -> RsRecord:
        """Record RS ``name``'s EDHOC authentication credential (an encoded CCS)."""
        ...

    def set_introspection_secret(self, name: str, secret: str) -> None:
        """Make ``secret`` RS ``name``'s password at HTTP introspection (RFC 7662 §2.1),
        replacing the previous one; it is stored hashed, apart from the token key."""
        ...

    def verify_introspection_secret(self, name: str, secret: str) -> RsRecord:
        """Authenticate RS ``name`` at HTTP introspection by its introspection secret.

        Returns the RS, or raises :class:`keybound.core.errors.InvalidClient` for an
        unknown RS, one without an introspection secret, or a wrong secret.
        """
        ...

    # tokens

    def record_token(self, token: IssuedToken) -> None:
        """Remember an issued token; its ``cti`` is unique."""
        ...

    def get_token(self, cti: bytes) -> IssuedToken | None:
        """An issued token by ``cti``, for introspection (RFC 9200 §5.9)."""
        ...

    def revoke(self, cti: bytes, *, now: int | None = None) -> IssuedToken:
        """Mark a token revoked; revoking twice keeps the first time."""
        ...

    def list_tokens(
        self, client_id: str, *, include_revoked: bool = True, limit: int = 1000
    ) -> list[IssuedToken]:
        """The newest ``limit`` tokens issued to a client, newest first."""
        ...

    def purge_expired_tokens(self, before: int) -> int:
        """Forget tokens whose ``exp`` is before ``before``; returns how many."""
        ...

    def next_sequence(self, audience: str) -> int:
        """The next sequence number for an RS without a clock (RFC 9200 §5.10.3).

        Strictly increasing per audience and never handed out twice, also when
        several AS processes share the store; durable before it is returned.
        """
        ...


@runtime_checkable
class OscoreStateStore(Protocol):
    """What the AS's CoAP site needs to derive OSCORE contexts lazily, and keep their
    Sender Sequence Numbers safe across restarts and processes (RFC 8613 Appendix B.1.1).

    A context's state is keyed by a fingerprint of its parameters (``key``), so
    new keys start afresh. Every write is committed durably before it returns.
    """

    def list_oscore_peers(self) -> list[tuple[str, str, OscoreContext]]:
        """Every peer with an OSCORE context: ``(kind, name, context)``, kind ``"client"``
        (token requests) or ``"rs"`` (introspection)."""
        ...

    def start_oscore_state(self, key: str, *, mark: int = 0) -> bool:
        """Make the state of context ``key`` if there is none, with no number at or above
        ``mark`` used; ``True`` if this call made it (nothing was ever received or sent
        under these keys through this store), ``False`` if it existed."""
        ...

    def reserve_oscore_sequence(self, key: str, count: int) -> int:
        """Reserve the next ``count`` Sender Sequence Numbers of context ``key``:
        returns ``end``, the block being ``[end - count, end)``, above every block
        reserved before by any process; durable before it returns."""
        ...


class TrlStore(Protocol):
    """What the token revocation list endpoint (RFC 9770) needs of the AS's storage.

    A requester is ``"client:ID"`` or ``"rs:NAME"`` (:func:`trl_requester`): a token
    pertains to the client it was issued to and to the RS of its audience (§5).
    """

    trl_limits: TrlLimits

    def trl_version(self) -> int:
        """A number that grows with every change of the TRL (0 before the first)."""
        ...

    def trl_view(self, requester: str) -> tuple[frozenset[bytes], UpdateCollection]:
        """The requester's part of the TRL now, and its update collection."""
        ...

    def trl_marks(self, requesters: Sequence[str]) -> dict[str, int]:
        """Each requester's newest series item number (-1 without one): it changes
        exactly when an update touches the requester."""
        ...

    def expire_trl(self, now: int) -> int:
        """Take revoked tokens that have expired off the TRL in one update (§5.1);
        returns how many left it."""
        ...


def trl_requester(kind: str, name: str) -> str:
    """The TRL requester name of a registered device: ``client:ID`` or ``rs:NAME``."""
    if kind not in ("client", "rs"):
        raise ValueError(f"no TRL requester of kind {kind!r}")
    return f"{kind}:{name}"
