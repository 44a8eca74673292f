r"""HTTP Message Signatures (RFC 9421) with ``hmac-sha256``, for requests, sans-IO.

A signer picks the components of a request it covers, writes the signature
base (§2.5), MACs it with a shared key (§3.3.3, HMAC with SHA-256) and adds two
Dictionary fields under one label: ``Signature-Input`` with the covered
components and the signature parameters, ``Signature`` with the MAC (§4)::

    Signature-Input: sig=("@method" "@target-uri" "authorization");created=1618884473;\
        keyid="k1";nonce="..."
    Signature: sig=:...:

Supported components: the derived ``@method``, ``@target-uri``, ``@authority``,
``@scheme``, ``@request-target``, ``@path`` and ``@query`` (§2.2) and header
fields by their lowercased names (§2.1), several field lines joined with
``", "``. Component parameters (``sf``, ``key``, ``bs``, ``req``, ``tr``) are
refused, as are ``@query-param`` and ``@status``. Signature parameters are those
of §2.3: ``created`` and ``expires`` (Integers), ``keyid``, ``alg``, ``nonce``
and ``tag`` (Strings); any other is refused.

:func:`verify_request` is the verifier of §3.2: it selects the one signature
whose ``keyid`` names the expected key, requires ``alg``, when present, to be
``hmac-sha256`` (§3.3.7: only the key decides the algorithm), requires the
components the application names, ``created`` within a window, an unexpired
``expires``, a ``nonce`` when asked, recomputes the base and compares the MACs
in constant time (:func:`hmac.compare_digest`). A
:class:`~keybound.core.dpop_state.ReplayCache` given to it remembers each
``(keyid, nonce)`` for as long as ``created`` is acceptable, so a signature is
good once. Every refusal is :class:`InvalidSignature` (``invalid_token``,
RFC 6750 §3.1: no OAuth error code is registered for HTTP message signatures).
Time is a parameter.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import urlsplit

from .dpop_state import ReplayCache, ReplayedProof
from .errors import InvalidToken
from .structured_fields import (
    BareItem,
    InnerList,
    Item,
    Parameters,
    StructuredFieldError,
    parse_dictionary,
    serialize_inner_list,
    serialize_item,
    serialize_string,
)

__all__ = [
    "DEFAULT_CREATED_LEEWAY",
    "DEFAULT_CREATED_WINDOW",
    "DERIVED_COMPONENTS",
    "HMAC_SHA256",
    "MAX_NONCE_LENGTH",
    "InvalidSignature",
    "RequestParts",
    "SignatureParameters",
    "VerifiedSignature",
    "sign_request",
    "signature_base",
    "verify_request",
]

#: The algorithm name of §3.3.3 in the "HTTP Signature Algorithms" registry (§6.2).
HMAC_SHA256: Final = "hmac-sha256"
#: Seconds a signature is accepted after its ``created``.
DEFAULT_CREATED_WINDOW: Final = 60
#: Seconds a ``created`` may be ahead of the verifier's clock.
DEFAULT_CREATED_LEEWAY: Final = 5
#: Longest ``nonce`` and ``keyid`` accepted, in characters.
MAX_NONCE_LENGTH: Final = 256
#: The derived components (§2.2) this module computes.
DERIVED_COMPONENTS: Final = frozenset(
    {"@method", "@target-uri", "@authority", "@scheme", "@request-target", "@path", "@query"}
)
_STRING_PARAMETERS: Final = frozenset({"keyid", "alg", "nonce", "tag"})
_INTEGER_PARAMETERS: Final = frozenset({"created", "expires"})
_DEFAULT_PORTS: Final = {"http": 80, "https": 443}


class InvalidSignature(InvalidToken):
    """the HTTP message signature is invalid (RFC 9421 §3.2)"""


@dataclass(frozen=True)
class RequestParts:
    """What a signature base is made of: the request's method, target URI and fields.

    ``target_uri`` is the absolute target URI (RFC 9110 §7.1); ``fields`` maps
    lowercased field names to their field line values in the order received.
    """

    method: str
    target_uri: str
    fields: Mapping[str, Sequence[str]] = field(default_factory=dict)

    @classmethod
    def from_pairs(
        cls, method: str, target_uri: str, pairs: Iterable[tuple[str, str]]
    ) -> RequestParts:
        """From ``(name, value)`` field lines, names in any case."""
        fields: dict[str, list[str]] = {}
        for name, value in pairs:
            fields.setdefault(name.lower(), []).append(value)
        return cls(method, target_uri, fields)

    def derived(self, name: str) -> str:
        """A derived component's value (RFC 9421 §2.2)."""
        if name == "@method":
            return self.method  # §2.2.1: as sent, not normalized
        if name == "@target-uri":
            return self.target_uri
        parts = urlsplit(self.target_uri)
        if name == "@scheme":
            return parts.scheme.lower()
        if name == "@authority":
            host = (parts.hostname or "").lower()
            if ":" in host:
                host = f"[{host}]"
            port = parts.port
            return (
                host
                if port is None or port == _DEFAULT_PORTS.get(parts.scheme)
                else f"{host}:{port}"
            )
        path = parts.path or "/"
        if name == "@path":
            return path
        if name == "@query":
            return "?" + parts.query
        if name == "@request-target":
            return path + ("?" + parts.query if parts.query else "")
        raise InvalidSignature(f"the derived component {name} is not supported")

    def field_value(self, name: str) -> str:
        """A field's value for the base (§2.1): lines trimmed, joined with ``", "``."""
        lines = self.fields.get(name)
        if not lines:
            raise InvalidSignature(f"the covered field {name!r} is not in the message")
        return ", ".join(line.strip(" \t") for line in lines)


@dataclass(frozen=True)
class SignatureParameters:
    """The signature parameters of §2.3, serialized in the order given here."""

    created: int | None = None
    expires: int | None = None
    keyid: str | None = None
    alg: str | None = None
    nonce: str | None = None
    tag: str | None = None

    def to_parameters(self) -> Parameters:
        """As structured-field parameters, ``None`` left out."""
        out: list[tuple[str, BareItem]] = []
        for name in ("created", "expires", "keyid", "alg", "nonce", "tag"):
            value = getattr(self, name)
            if value is not None:
                out.append((name, value))
        return tuple(out)

    @classmethod
    def from_parameters(cls, parameters: Parameters) -> SignatureParameters:
        """Read parameters; unknown names and wrong types raise :class:`InvalidSignature`."""
        values: dict[str, int | str] = {}
        for name, value in parameters:
            if name in _INTEGER_PARAMETERS:
                if isinstance(value, bool) or not isinstance(value, int):
                    raise InvalidSignature(f"the signature parameter {name} must be an integer")
            elif name in _STRING_PARAMETERS:
                if not isinstance(value, str):
                    raise InvalidSignature(f"the signature parameter {name} must be a string")
                if len(value) > MAX_NONCE_LENGTH:
                    raise InvalidSignature(
                        f"the signature parameter {name} is longer than {MAX_NONCE_LENGTH}"
                    )
            else:
                raise InvalidSignature(f"the signature parameter {name!r} is not supported")
            values[name] = value
        return cls(**values)  # type: ignore[arg-type]  # types checked above


@dataclass(frozen=True)
class VerifiedSignature:
    """A signature that :func:`verify_request` accepted."""

    label: str
    components: tuple[str, ...]
    parameters: SignatureParameters


def _covered(components: Sequence[str]) -> InnerList:
    for name in components:
        if name != name.lower() or not name:
            raise ValueError(f"component names are lowercase: {name!r}")
    if len(set(components)) != len(components):
        raise ValueError("a component is covered once (RFC 9421 §2.5)")
    return InnerList(tuple(Item(name) for name in components))


def _base(request: RequestParts, covered: InnerList) -> bytes:
    lines: list[str] = []
    for item in covered.items:
        name = item.value
        if not isinstance(name, str) or item.parameters:
            raise InvalidSignature("component identifiers are strings without parameters here")
        value = request.derived(name) if name.startswith("@") else request.field_value(name)
        if "\n" in value or "\r" in value:
            raise InvalidSignature(f"the value of {name!r} has a line break")
        lines.append(f"{serialize_string(name)}: {value}")
    lines.append(f'"@signature-params": {serialize_inner_list(covered)}')
    try:
        return "\n".join(lines).encode("ascii")
    except UnicodeEncodeError:
        raise InvalidSignature("a covered component is not ASCII") from None


def signature_base(
    request: RequestParts, components: Sequence[str], parameters: SignatureParameters
) -> bytes:
    """The signature base of §2.5 for ``components`` with ``parameters``."""
    covered = _covered(components)
    return _base(request, InnerList(covered.items, parameters.to_parameters()))


def _mac(key: bytes, base: bytes) -> bytes:
    return hmac.new(key, base, hashlib.sha256).digest()  # §3.3.3


def sign_request(
    request: RequestParts,
    key: bytes,
    components: Sequence[str],
    parameters: SignatureParameters,
    *,
    label: str = "sig",
) -> tuple[str, str]:
    """``(Signature-Input, Signature)`` values signing ``request`` with ``hmac-sha256`` (§3.1)."""
    if not key:
        raise ValueError("an HMAC key must not be empty")
    covered = InnerList(_covered(components).items, parameters.to_parameters())
    mac = _mac(key, _base(request, covered))
    return f"{label}={serialize_inner_list(covered)}", f"{label}={serialize_item(Item(mac))}"


def _dictionary(request: RequestParts, name: str) -> dict[str, Item | InnerList]:
    lines = request.fields.get(name)
    if not lines:
        raise InvalidSignature(f"the request has no {name.title()} field")
    try:
        return parse_dictionary(", ".join(lines))  # §4.1, §4.2: lines join into one dictionary
    except StructuredFieldError as err:
        raise InvalidSignature(f"{name.title()}: {err.description}") from None


def _select(inputs: Mapping[str, Item | InnerList], keyid: str) -> tuple[str, InnerList]:
    chosen: list[tuple[str, InnerList]] = []
    for label, member in inputs.items():
        if not isinstance(member, InnerList):
            raise InvalidSignature(f"Signature-Input {label} is not an inner list")
        if any(name == "keyid" and value == keyid for name, value in member.parameters):
            chosen.append((label, member))
    if not chosen:
        raise InvalidSignature(f"no signature names the token's key {keyid!r}")
    if len(chosen) > 1:
        raise InvalidSignature(f"more than one signature names the key {keyid!r}")
    return chosen[0]


def verify_request(
    request: RequestParts,
    key: bytes,
    *,
    keyid: str,
    now: int,
    required: Collection[str] = ("@method", "@target-uri"),
    window: int = DEFAULT_CREATED_WINDOW,
    leeway: int = DEFAULT_CREATED_LEEWAY,
    require_nonce: bool = True,
    replay_cache: ReplayCache | None = None,
) -> VerifiedSignature:
    """Verify the ``hmac-sha256`` signature of ``request`` by key ``keyid`` (RFC 9421 §3.2).

    The signature must cover every component of ``required``, carry ``created``
    no older than ``window`` seconds and no more than ``leeway`` ahead of
    ``now``, not be past its ``expires``, and carry a ``nonce`` when
    ``require_nonce``. With a ``replay_cache`` the pair ``(keyid, nonce)`` is
    stored until ``created + window``; a second use is refused. Raises
    :class:`InvalidSignature`.
    """
    inputs = _dictionary(request, "signature-input")
    signatures = _dictionary(request, "signature")
    label, covered = _select(inputs, keyid)
    parameters = SignatureParameters.from_parameters(covered.parameters)
    sent = signatures.get(label)
    if not isinstance(sent, Item) or not isinstance(sent.value, bytes) or sent.parameters:
        raise InvalidSignature(f"the Signature field has no byte sequence labelled {label}")
    if parameters.alg is not None and parameters.alg != HMAC_SHA256:
        raise InvalidSignature(f"the signature algorithm {parameters.alg!r} is not {HMAC_SHA256}")
    created = parameters.created
    if created is None:
        raise InvalidSignature("the signature has no created parameter")
    if created > now + leeway:
        raise InvalidSignature("the signature was created in the future")
    if created < now - window:
        raise InvalidSignature(f"the signature was created more than {window} seconds ago")
    if parameters.expires is not None and parameters.expires < now:
        raise InvalidSignature("the signature has expired")
    if require_nonce and not parameters.nonce:
        raise InvalidSignature("the signature has no nonce")
    names = [item.value for item in covered.items]
    if len(set(names)) != len(names):
        raise InvalidSignature("a component is covered twice (RFC 9421 §2.5)")
    missing = [name for name in required if name not in names]
    if missing:
        raise InvalidSignature(f"the signature does not cover {', '.join(missing)}")
    if not hmac.compare_digest(_mac(key, _base(request, covered)), sent.value):
        raise InvalidSignature("the signature does not verify with the token's key")
    if replay_cache is not None and parameters.nonce is not None:
        try:
            replay_cache.check_and_store(
                f"httpsig:{keyid}", parameters.nonce, created + window, now
            )
        except ReplayedProof:
            raise InvalidSignature("the signature was used before (same nonce)") from None
    return VerifiedSignature(
        label=label,
        components=tuple(str(name) for name in names),
        parameters=parameters,
    )
