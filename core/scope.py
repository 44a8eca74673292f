"""Access token scopes: space-delimited text (RFC 6749 §3.3) or AIF (RFC 9237).

A :class:`Scope` is either a :class:`TextScope` or an :class:`AifScope`.

Text scopes are sets of scope tokens. Their meaning is declared by the RS, per
resource and method, in a :class:`ResourceScopes` table: for example, ``/temp``
GET is allowed by ``temp.read`` and PUT by ``temp.write``. A request is allowed if
the token holds at least one of the scope tokens the table lists for that path and
method; a path or method the table does not list is denied. Scope tokens carry no
structure of their own: ``temp.read`` is just a name.

AIF scopes (RFC 9237 §3, the REST-specific data model) are lists of
``[path, REST-method-set]``: the path is the URI-local-part of a resource on the
RS, matched exactly (no templates, no prefixes: RFC 9237 §2.2), and the method
set is a bitmask with GET 1, POST 2, PUT 4, DELETE 8, FETCH 16, PATCH 32, iPATCH 64
and the Dynamic-X variants of RFC 9237 §2.3 shifted by 32. Entries naming the same
path are merged into one, as RFC 9237 §3 prescribes; bits without a registered
method are kept (they round-trip) but never allow anything.

Encodings, per token format:

* CWT ``scope`` (RFC 8392, RFC 9200 §5.8.1, a text or byte string): a text scope
  is the text string; an AIF scope is, by default, a byte string wrapping its CBOR
  encoding, or optionally the CBOR array itself. Both are read back.
* JWT ``scope``: a text scope is the string; an AIF scope is its JSON array
  (RFC 9237 §3, ``application/aif+json``).

Bounds: at most :data:`MAX_SCOPE_ENTRIES` tokens or entries, scope tokens of at
most :data:`MAX_SCOPE_TOKEN_LENGTH` characters, paths of at most
:data:`MAX_PATH_LENGTH`, a wrapped AIF of at most :data:`MAX_AIF_BYTES`. Anything
malformed or oversized raises :class:`~keybound.core.errors.InvalidScope`.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import IntFlag

from . import cbor
from .errors import InsufficientScope, InvalidRequest, InvalidScope, MethodNotAllowed

MAX_SCOPE_ENTRIES = 64
MAX_SCOPE_TOKEN_LENGTH = 128
MAX_TEXT_SCOPE_LENGTH = MAX_SCOPE_ENTRIES * (MAX_SCOPE_TOKEN_LENGTH + 1)
MAX_PATH_LENGTH = 255
MAX_AIF_BYTES = 4096
#: REST-method-set is a uint; keybound bounds it to 64 bits.
MAX_PERMISSIONS = 2**64 - 1

#: RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E ).
_SCOPE_TOKEN = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")
#: An absolute path (and query) without spaces, controls, fragments or non-ASCII.
_PATH = re.compile(r"/[\x21\x22\x24-\x7e]*")


class RestMethod(IntFlag):
    """The REST-method-set bits of RFC 9237 §3 (bit = CoAP method code - 1)."""

    GET = 1 << 0
    POST = 1 << 1
    PUT = 1 << 2
    DELETE = 1 << 3
    FETCH = 1 << 4
    PATCH = 1 << 5
    IPATCH = 1 << 6
    DYNAMIC_GET = 1 << 32
    DYNAMIC_POST = 1 << 33
    DYNAMIC_PUT = 1 << 34
    DYNAMIC_DELETE = 1 << 35
    DYNAMIC_FETCH = 1 << 36
    DYNAMIC_PATCH = 1 << 37
    DYNAMIC_IPATCH = 1 << 38

    @classmethod
    def from_coap_code(cls, code: int) -> RestMethod:
        """The method of a CoAP request code 0.01 to 0.07 (RFC 7252 §12.1.1, RFC 8132)."""
        if isinstance(code, bool) or not isinstance(code, int) or not 1 <= code <= 7:
            raise InvalidRequest(f"{code!r} is not a CoAP request method code")
        return cls(1 << (code - 1))

    @classmethod
    def from_name(cls, name: str) -> RestMethod:
        """``"GET"``, ``"iPATCH"``, ``"Dynamic-DELETE"`` ... (the names of RFC 9237)."""
        dynamic = name.startswith("Dynamic-")
        base = name.removeprefix("Dynamic-")
        if base not in _METHOD_NAMES:
            raise InvalidRequest(f"unknown REST method {name!r}")
        value = _METHOD_NAMES[base]
        return cls(value << 32) if dynamic else value

    @property
    def dynamic(self) -> RestMethod:
        """The Dynamic-X variant of a single basic method."""
        if self.value >= 1 << 32 or self.value.bit_count() != 1:
            raise ValueError("only a single basic method has a dynamic variant")
        return RestMethod(self.value << 32)


_METHOD_NAMES: dict[str, RestMethod] = {
    "GET": RestMethod.GET,
    "POST": RestMethod.POST,
    "PUT": RestMethod.PUT,
    "DELETE": RestMethod.DELETE,
    "FETCH": RestMethod.FETCH,
    "PATCH": RestMethod.PATCH,
    "iPATCH": RestMethod.IPATCH,
}


#: The registered basic (non-dynamic) REST methods of RFC 9237 §3.
_BASIC_METHODS = sum(int(m) for m in _METHOD_NAMES.values())


def _method(method: RestMethod | str) -> RestMethod:
    m = RestMethod.from_name(method) if isinstance(method, str) else RestMethod(method)
    if m.value >= 1 << 32 or m.value.bit_count() != 1:
        raise InvalidRequest("a request has exactly one basic REST method")
    return m


@dataclass(frozen=True)
class ResourceScopes:
    """The RS's declaration of which text scope tokens allow which method on which path.

    Build it with :meth:`from_dict`: ``{"/temp": {"GET": ["temp.read"]}}``.
    """

    table: Mapping[str, Mapping[RestMethod, frozenset[str]]]

    @classmethod
    def from_dict(cls, declaration: Mapping[str, Mapping[str, Iterable[str]]]) -> ResourceScopes:
        table: dict[str, dict[RestMethod, frozenset[str]]] = {}
        for path, methods in declaration.items():
            _check_path(path)
            per_method: dict[RestMethod, frozenset[str]] = {}
            for name, tokens in methods.items():
                allowed = frozenset(_check_token(token) for token in tokens)
                per_method[_method(name)] = allowed
            table[path] = per_method
        return cls(table)

    def tokens_for_path(self, path: str) -> frozenset[str]:
        """The scope tokens that allow some method on ``path``."""
        return frozenset().union(*self.table.get(path, {}).values())

    def tokens_for(self, method: RestMethod | str, path: str) -> frozenset[str]:
        """The scope tokens any one of which allows ``method`` on ``path``."""
        return self.table.get(path, {}).get(_method(method), frozenset())


def _check_token(token: object) -> str:
    if not isinstance(token, str) or not _SCOPE_TOKEN.fullmatch(token):
        raise InvalidScope(f"invalid scope token {token!r}", claim="scope")
    if len(token) > MAX_SCOPE_TOKEN_LENGTH:
        raise InvalidScope(f"scope token longer than {MAX_SCOPE_TOKEN_LENGTH}", claim="scope")
    return token


def _check_path(path: object) -> str:
    if not isinstance(path, str) or not _PATH.fullmatch(path):
        raise InvalidScope(f"invalid AIF path {path!r}", claim="scope")
    if len(path) > MAX_PATH_LENGTH:
        raise InvalidScope(f"AIF path longer than {MAX_PATH_LENGTH}", claim="scope")
    return path


class Scope(ABC):
    """A scope: :class:`TextScope` or :class:`AifScope`."""

    # -- parsing --

    @staticmethod
    def from_claim(value: object) -> Scope:
        """A CWT/ACE ``scope``: text, a byte string wrapping CBOR AIF, or the AIF array."""
        if isinstance(value, str):
            return TextScope.parse(value)
        if isinstance(value, bytes | bytearray):
            return AifScope.decode(bytes(value))
        if isinstance(value, list | tuple):
            return AifScope.from_list(value)
        raise InvalidScope("scope must be a text string, a byte string or an AIF array")

    @staticmethod
    def from_cwt(value: object) -> Scope:
        """The same as :meth:`from_claim`: the CWT ``scope`` claim (RFC 8392 §3.1, RFC 9200)."""
        return Scope.from_claim(value)

    @staticmethod
    def from_jwt(value: object) -> Scope:
        """A JWT ``scope``: a text string or an AIF JSON array."""
        if isinstance(value, str):
            return TextScope.parse(value)
        if isinstance(value, list):
            return AifScope.from_list(value)
        raise InvalidScope("scope must be a string or an AIF array")

    # -- the interface both kinds implement --

    @abstractmethod
    def to_cwt(self, *, wrap: bool = True) -> object:
        """The value of a CWT ``scope`` claim."""

    @abstractmethod
    def to_jwt(self) -> object:
        """The value of a JWT ``scope`` claim."""

    @abstractmethod
    def is_subset_of(self, other: Scope) -> bool:
        """True if every permission here is also in ``other``."""

    @abstractmethod
    def intersection(self, other: Scope) -> Scope | None:
        """What both scopes grant, or ``None`` when nothing."""

    @abstractmethod
    def allows(
        self,
        method: RestMethod | str,
        path: str,
        *,
        resources: ResourceScopes | None = None,
        created_by: str | None = None,
    ) -> bool:
        """True if this scope allows ``method`` on ``path``."""

    @abstractmethod
    def covers(self, path: str, *, resources: ResourceScopes | None = None) -> bool:
        """True if this scope allows some method on ``path`` (RFC 9200 §5.10.2)."""

    def require(
        self,
        method: RestMethod | str,
        path: str,
        *,
        resources: ResourceScopes | None = None,
        created_by: str | None = None,
    ) -> None:
        """Raise unless :meth:`allows`: RFC 9200 §5.10.2 names the code.

        :class:`~keybound.core.errors.MethodNotAllowed` (4.05) when the scope covers
        ``path`` with other methods only, :class:`~keybound.core.errors.InsufficientScope`
        (4.03) when it does not cover ``path`` at all.
        """
        if self.allows(method, path, resources=resources, created_by=created_by):
            return
        name = method if isinstance(method, str) else _method(method).name
        if created_by is None and self.covers(path, resources=resources):
            raise MethodNotAllowed(f"scope allows {path}, but not {name}")
        raise InsufficientScope(f"scope does not allow {name} {path}")


@dataclass(frozen=True)
class TextScope(Scope):
    """Space-delimited scope tokens (RFC 6749 §3.3), duplicates removed, order kept."""

    tokens: tuple[str, ...]

    def __post_init__(self) -> None:
        if not self.tokens:
            raise InvalidScope("a text scope has at least one scope token", claim="scope")
        if len(self.tokens) > MAX_SCOPE_ENTRIES:
            raise InvalidScope(f"more than {MAX_SCOPE_ENTRIES} scope tokens", claim="scope")
        for token in self.tokens:
            _check_token(token)
        if len(set(self.tokens)) != len(self.tokens):
            raise InvalidScope("duplicate scope token", claim="scope")

    @classmethod
    def of(cls, tokens: Iterable[str]) -> TextScope:
        """A text scope from tokens, dropping repeats."""
        return cls(tuple(dict.fromkeys(tokens)))

    @classmethod
    def parse(cls, text: str) -> TextScope:
        """Parse ``scope = scope-token *( SP scope-token )`` (RFC 6749 §3.3)."""
        if not isinstance(text, str):
            raise InvalidScope("a text scope must be a string", claim="scope")
        if len(text) > MAX_TEXT_SCOPE_LENGTH:
            raise InvalidScope(f"scope longer than {MAX_TEXT_SCOPE_LENGTH}", claim="scope")
        parts = text.split(" ")
        if len(parts) > MAX_SCOPE_ENTRIES:
            raise InvalidScope(f"more than {MAX_SCOPE_ENTRIES} scope tokens", claim="scope")
        return cls.of(_check_token(part) for part in parts)

    def __str__(self) -> str:
        return " ".join(self.tokens)

    def to_cwt(self, *, wrap: bool = True) -> str:
        """The CWT ``scope``: the text string (``wrap`` only concerns AIF)."""
        return str(self)

    def to_jwt(self) -> str:
        return str(self)

    def is_subset_of(self, other: Scope) -> bool:
        return isinstance(other, TextScope) and set(self.tokens) <= set(other.tokens)

    def intersection(self, other: Scope) -> TextScope | None:
        if not isinstance(other, TextScope):
            return None
        theirs = set(other.tokens)
        common = [t for t in self.tokens if t in theirs]
        return TextScope(tuple(common)) if common else None

    def allows(
        self,
        method: RestMethod | str,
        path: str,
        *,
        resources: ResourceScopes | None = None,
        created_by: str | None = None,
    ) -> bool:
        """True if a token of this scope is one ``resources`` lists for ``method`` on ``path``.

        Without a ``resources`` table a text scope allows nothing. ``created_by`` has
        no meaning for text scopes and is ignored.
        """
        if resources is None:
            return False
        return not resources.tokens_for(method, path).isdisjoint(self.tokens)

    def covers(self, path: str, *, resources: ResourceScopes | None = None) -> bool:
        """True if a token of this scope allows some method on ``path`` in ``resources``."""
        if resources is None:
            return False
        return not resources.tokens_for_path(path).isdisjoint(self.tokens)


@dataclass(frozen=True)
class AifEntry:
    """One ``[Toid, Tperm]`` pair of AIF-REST (RFC 9237 §3)."""

    path: str
    permissions: int

    def __post_init__(self) -> None:
        _check_path(self.path)
        if (
            isinstance(self.permissions, bool)
            or not isinstance(self.permissions, int)
            or not 0 <= self.permissions <= MAX_PERMISSIONS
        ):
            raise InvalidScope(
                f"AIF permissions of {self.path} must be an unsigned integer", claim="scope"
            )


@dataclass(frozen=True)
class AifScope(Scope):
    """An AIF-REST capability list (RFC 9237 §3), one entry per path."""

    entries: tuple[AifEntry, ...]

    def __post_init__(self) -> None:
        if len(self.entries) > MAX_SCOPE_ENTRIES:
            raise InvalidScope(f"more than {MAX_SCOPE_ENTRIES} AIF entries", claim="scope")
        if len({e.path for e in self.entries}) != len(self.entries):
            raise InvalidScope("AIF paths must be unique; use AifScope.of to merge", claim="scope")

    @classmethod
    def of(cls, pairs: Iterable[tuple[str, int]]) -> AifScope:
        """Build from ``(path, permissions)`` pairs, merging repeated paths (RFC 9237 §3)."""
        merged: dict[str, int] = {}
        for path, permissions in pairs:
            entry = AifEntry(path, permissions)
            merged[entry.path] = merged.get(entry.path, 0) | entry.permissions
            if len(merged) > MAX_SCOPE_ENTRIES:
                raise InvalidScope(f"more than {MAX_SCOPE_ENTRIES} AIF entries", claim="scope")
        return cls(tuple(AifEntry(p, v) for p, v in merged.items()))

    @classmethod
    def from_list(cls, value: object) -> AifScope:
        """Validate a decoded AIF array (from CBOR or JSON)."""
        if not isinstance(value, list | tuple):
            raise InvalidScope("AIF must be an array", claim="scope")
        if len(value) > MAX_SCOPE_ENTRIES:
            raise InvalidScope(f"more than {MAX_SCOPE_ENTRIES} AIF entries", claim="scope")
        pairs: list[tuple[str, int]] = []
        for item in value:
            if not isinstance(item, list | tuple) or len(item) != 2:
                raise InvalidScope("an AIF entry is a [path, permissions] pair", claim="scope")
            path, permissions = item
            entry = AifEntry(path, permissions)
            pairs.append((entry.path, entry.permissions))
        return cls.of(pairs)

    @classmethod
    def decode(cls, data: bytes) -> AifScope:
        """Decode a byte-string scope holding CBOR AIF (``application/aif+cbor``)."""
        try:
            value = cbor.loads(data, max_size=MAX_AIF_BYTES, max_depth=3)
        except InvalidRequest as exc:
            raise InvalidScope(f"byte-string scope is not AIF: {exc.description}") from exc
        return cls.from_list(value)

    def to_list(self) -> list[list[str | int]]:
        return [[e.path, e.permissions] for e in self.entries]

    def encode(self) -> bytes:
        """The CBOR encoding (``application/aif+cbor``)."""
        return cbor.dumps(self.to_list())

    def to_cwt(self, *, wrap: bool = True) -> bytes | list[list[str | int]]:
        """The CWT ``scope``: a byte string wrapping the CBOR AIF, or the array itself."""
        return self.encode() if wrap else self.to_list()

    def to_jwt(self) -> list[list[str | int]]:
        """The JSON array (``application/aif+json``)."""
        return self.to_list()

    def permissions_for(self, path: str) -> int:
        for entry in self.entries:
            if entry.path == path:
                return entry.permissions
        return 0

    def is_subset_of(self, other: Scope) -> bool:
        if not isinstance(other, AifScope):
            return False
        return all(e.permissions & ~other.permissions_for(e.path) == 0 for e in self.entries)

    def intersection(self, other: Scope) -> AifScope | None:
        if not isinstance(other, AifScope):
            return None
        common = [(e.path, e.permissions & other.permissions_for(e.path)) for e in self.entries]
        kept = [(p, v) for p, v in common if v]
        return AifScope.of(kept) if kept else None

    def allows(
        self,
        method: RestMethod | str,
        path: str,
        *,
        resources: ResourceScopes | None = None,
        created_by: str | None = None,
    ) -> bool:
        """True if the entry for ``path`` holds ``method`` (RFC 9237 §2.1).

        For a resource the RS created in answer to this subject's request to
        ``created_by`` (RFC 9237 §2.3), the Dynamic-X bit of ``created_by`` decides.
        ``resources`` has no meaning for AIF and is ignored.
        """
        m = _method(method)
        if created_by is not None:
            return bool(self.permissions_for(created_by) & m.dynamic)
        return bool(self.permissions_for(path) & m)

    def covers(self, path: str, *, resources: ResourceScopes | None = None) -> bool:
        """True if the entry for ``path`` holds a registered basic method (RFC 9237 §3)."""
        return bool(self.permissions_for(path) & _BASIC_METHODS)


__all__ = [
    "MAX_AIF_BYTES",
    "MAX_PATH_LENGTH",
    "MAX_SCOPE_ENTRIES",
    "MAX_SCOPE_TOKEN_LENGTH",
    "MAX_TEXT_SCOPE_LENGTH",
    "AifEntry",
    "AifScope",
    "ResourceScopes",
    "RestMethod",
    "Scope",
    "TextScope",
]
