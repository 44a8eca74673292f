"""The part of HTTP Structured Fields (RFC 8941) that HTTP Message Signatures use, sans-IO.

RFC 9421 carries its metadata in two Dictionary fields (RFC 8941 §3.2):
``Signature-Input``, whose members are Inner Lists of component identifiers
(sf-strings) with parameters, and ``Signature``, whose members are Byte
Sequences. This module parses (RFC 8941 §4.2) and serializes (§4.1) exactly
what that needs: Dictionaries, Inner Lists, Parameters, and the bare items
Integer, String, Token, Byte Sequence and Boolean. Decimals, Dates and Display
Strings are refused. Everything parsed is bounded: :data:`MAX_FIELD_LENGTH`
characters, :data:`MAX_MEMBERS` dictionary members, :data:`MAX_INNER_ITEMS`
items in an inner list and :data:`MAX_PARAMETERS` parameters on one item.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Final, TypeAlias

from .errors import InvalidRequest

__all__ = [
    "MAX_FIELD_LENGTH",
    "MAX_INNER_ITEMS",
    "MAX_MEMBERS",
    "MAX_PARAMETERS",
    "BareItem",
    "InnerList",
    "Item",
    "Parameters",
    "StructuredFieldError",
    "Token",
    "parse_dictionary",
    "serialize_inner_list",
    "serialize_item",
    "serialize_string",
]

#: Longest field value parsed, in characters.
MAX_FIELD_LENGTH: Final = 8192
#: Most members of a Dictionary.
MAX_MEMBERS: Final = 16
#: Most items of an Inner List.
MAX_INNER_ITEMS: Final = 64
#: Most parameters on one item or inner list.
MAX_PARAMETERS: Final = 16
_MAX_INTEGER: Final = 999_999_999_999_999  # RFC 8941 §3.3.1: at most 15 digits

_LCALPHA = "abcdefghijklmnopqrstuvwxyz"
_DIGITS = "0123456789"
_KEY_FIRST = _LCALPHA + "*"
_KEY_CHARS = _LCALPHA + _DIGITS + "_-.*"
_TCHAR = "!#$%&'*+-.^_`|~" + _DIGITS + _LCALPHA + _LCALPHA.upper()
_TOKEN_CHARS = _TCHAR + ":/"
_BASE64_CHARS = _LCALPHA + _LCALPHA.upper() + _DIGITS + "+/="


class StructuredFieldError(InvalidRequest):
    """a structured field value does not parse (RFC 8941 §4.2)"""


@dataclass(frozen=True)
class Token:
    """An sf-token (RFC 8941 §3.3.4), kept apart from an sf-string."""

    value: str


BareItem: TypeAlias = int | str | bytes | bool | Token
Parameters: TypeAlias = tuple[tuple[str, BareItem], ...]


@dataclass(frozen=True)
class Item:
    """An Item with its Parameters (RFC 8941 §3.3)."""

    value: BareItem
    parameters: Parameters = ()


@dataclass(frozen=True)
class InnerList:
    """An Inner List with its Parameters (RFC 8941 §3.1.1)."""

    items: tuple[Item, ...]
    parameters: Parameters = ()


# ---- parsing (RFC 8941 §4.2) -------------------------------------------------------------------


class _Reader:
    def __init__(self, text: str) -> None:
        self.text = text
        self.at = 0

    def peek(self) -> str:
        return self.text[self.at] if self.at < len(self.text) else ""

    def take(self) -> str:
        char = self.peek()
        self.at += 1
        return char

    def skip(self, chars: str) -> None:
        while self.peek() and self.peek() in chars:
            self.at += 1

    def done(self) -> bool:
        return self.at >= len(self.text)

    def fail(self, what: str) -> StructuredFieldError:
        return StructuredFieldError(f"{what} at character {self.at}")


def parse_dictionary(value: str) -> dict[str, Item | InnerList]:
    """Parse a Dictionary field value (RFC 8941 §4.2.2); a repeated key keeps the last value."""
    if len(value) > MAX_FIELD_LENGTH:
        raise StructuredFieldError(f"the field is longer than {MAX_FIELD_LENGTH} characters")
    if not value.isascii():
        raise StructuredFieldError("a structured field is ASCII")
    reader = _Reader(value)
    reader.skip(" ")
    members: dict[str, Item | InnerList] = {}
    while not reader.done():
        key = _key(reader)
        member: Item | InnerList
        if reader.peek() == "=":
            reader.take()
            member = _item_or_inner_list(reader)
        else:
            member = Item(True, _parameters(reader))
        members.pop(key, None)
        members[key] = member
        if len(members) > MAX_MEMBERS:
            raise StructuredFieldError(f"more than {MAX_MEMBERS} dictionary members")
        reader.skip(" \t")
        if reader.done():
            return members
        if reader.take() != ",":
            raise reader.fail("a comma was expected")
        reader.skip(" \t")
        if reader.done():
            raise reader.fail("a trailing comma")
    return members


def _item_or_inner_list(reader: _Reader) -> Item | InnerList:
    if reader.peek() == "(":
        return _inner_list(reader)
    return Item(_bare_item(reader), _parameters(reader))


def _inner_list(reader: _Reader) -> InnerList:
    reader.take()  # "("
    items: list[Item] = []
    while not reader.done():
        reader.skip(" ")
        if reader.peek() == ")":
            reader.take()
            return InnerList(tuple(items), _parameters(reader))
        items.append(Item(_bare_item(reader), _parameters(reader)))
        if len(items) > MAX_INNER_ITEMS:
            raise reader.fail(f"more than {MAX_INNER_ITEMS} items in an inner list")
        if reader.peek() not in (" ", ")"):
            raise reader.fail("a space or ')' was expected in an inner list")
    raise reader.fail("the inner list is not closed")


def _parameters(reader: _Reader) -> Parameters:
    found: dict[str, BareItem] = {}
    while reader.peek() == ";":
        reader.take()
        reader.skip(" ")
        key = _key(reader)
        value: BareItem = True
        if reader.peek() == "=":
            reader.take()
            value = _bare_item(reader)
        found.pop(key, None)
        found[key] = value
        if len(found) > MAX_PARAMETERS:
            raise reader.fail(f"more than {MAX_PARAMETERS} parameters")
    return tuple(found.items())


def _key(reader: _Reader) -> str:
    if reader.peek() == "" or reader.peek() not in _KEY_FIRST:
        raise reader.fail("a key was expected")
    start = reader.at
    while reader.peek() and reader.peek() in _KEY_CHARS:
        reader.take()
    return reader.text[start : reader.at]


def _bare_item(reader: _Reader) -> BareItem:
    char = reader.peek()
    if char == '"':
        return _string(reader)
    if char == ":":
        return _byte_sequence(reader)
    if char == "?":
        reader.take()
        flag = reader.take()
        if flag not in ("0", "1"):
            raise reader.fail("a boolean is ?0 or ?1")
        return flag == "1"
    if char == "-" or (char != "" and char in _DIGITS):
        return _integer(reader)
    if char != "" and (char in _LCALPHA or char in _LCALPHA.upper() or char == "*"):
        start = reader.at
        while reader.peek() and reader.peek() in _TOKEN_CHARS:
            reader.take()
        return Token(reader.text[start : reader.at])
    raise reader.fail("an item was expected")


def _integer(reader: _Reader) -> int:
    start = reader.at
    if reader.peek() == "-":
        reader.take()
    digits = reader.at
    while reader.peek() and reader.peek() in _DIGITS:
        reader.take()
    if reader.at == digits or reader.at - digits > 15:
        raise reader.fail("an integer has 1 to 15 digits")
    if reader.peek() == ".":
        raise reader.fail("decimals are not supported")
    return int(reader.text[start : reader.at])


def _string(reader: _Reader) -> str:
    reader.take()  # '"'
    out: list[str] = []
    while not reader.done():
        char = reader.take()
        if char == "\\":
            escaped = reader.take()
            if escaped not in ('"', "\\"):
                raise reader.fail('only \\" and \\\\ are escapes in a string')
            out.append(escaped)
        elif char == '"':
            return "".join(out)
        elif not " " <= char <= "~":
            raise reader.fail("a string holds printable ASCII only")
        else:
            out.append(char)
    raise reader.fail("the string is not closed")


def _byte_sequence(reader: _Reader) -> bytes:
    reader.take()  # ":"
    end = reader.text.find(":", reader.at)
    if end < 0:
        raise reader.fail("the byte sequence is not closed")
    encoded = reader.text[reader.at : end]
    if any(char not in _BASE64_CHARS for char in encoded):
        raise reader.fail("a byte sequence is base64")
    reader.at = end + 1
    try:
        return base64.b64decode(encoded, validate=True)
    except binascii.Error:
        raise reader.fail("a byte sequence is base64") from None


# ---- serializing (RFC 8941 §4.1) ---------------------------------------------------------------


def serialize_string(value: str) -> str:
    """An sf-string (RFC 8941 §4.1.6): printable ASCII, ``"`` and ``\\`` escaped."""
    if any(not " " <= char <= "~" for char in value):
        raise ValueError("an sf-string holds printable ASCII only")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _serialize_bare(value: BareItem) -> str:
    if isinstance(value, bool):
        return "?1" if value else "?0"
    if isinstance(value, int):
        if abs(value) > _MAX_INTEGER:
            raise ValueError("an sf-integer has at most 15 digits")
        return str(value)
    if isinstance(value, str):
        return serialize_string(value)
    if isinstance(value, bytes):
        return ":" + base64.b64encode(value).decode("ascii") + ":"
    return value.value


def _serialize_parameters(parameters: Parameters) -> str:
    out = []
    for key, value in parameters:
        out.append(f";{key}" if value is True else f";{key}={_serialize_bare(value)}")
    return "".join(out)


def serialize_item(item: Item) -> str:
    """An Item with its Parameters (RFC 8941 §4.1.3)."""
    return _serialize_bare(item.value) + _serialize_parameters(item.parameters)


def serialize_inner_list(inner: InnerList) -> str:
    """An Inner List with its Parameters (RFC 8941 §4.1.1.1)."""
    body = " ".join(serialize_item(item) for item in inner.items)
    return f"({body})" + _serialize_parameters(inner.parameters)
