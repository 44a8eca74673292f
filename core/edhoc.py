"""EDHOC (RFC 9528), sans-IO: Initiator and Responder, methods 0-3, cipher suites 0 and 2.

keybound's own EDHOC, checked byte for byte against both traces of RFC 9529 and
against lakers in both directions. It does what the EDHOC and OSCORE profile of ACE
needs and lakers-python 0.6 cannot: signature authentication (methods 0, 1, 2), EAD
items of any size up to the message bound, and the parsing split that lets the RS
look up the Initiator's credential (and check a token in EAD_3) between decrypting
message_3 and verifying it.

* :class:`Initiator`: :meth:`~Initiator.message_1`, :meth:`~Initiator.parse_message_2`
  (decrypts, returns C_R, ID_CRED_R, EAD_2), :meth:`~Initiator.verify_message_2` with the
  Responder's credential, :meth:`~Initiator.message_3`, optionally
  :meth:`~Initiator.process_message_4`.
* :class:`Responder`: :meth:`~Responder.process_message_1` (method, suite, C_I, EAD_1),
  :meth:`~Responder.message_2`, :meth:`~Responder.parse_message_3` (ID_CRED_I, EAD_3),
  :meth:`~Responder.verify_message_3`, optionally :meth:`~Responder.message_4`.
* Both: :meth:`~_Session.exporter` (RFC 9528 §4.2.1), :meth:`~_Session.oscore` (the
  Master Secret and Salt of Appendix A.1), :meth:`~_Session.key_update` (Appendix H).

The method decides who signs (RFC 9528 §3.2): the Initiator in methods 0 and 1, the
Responder in methods 0 and 2; the other side of each proves its static DH key with a
MAC. A :class:`Credential` says which of the two its key is for.

Bounds, all checked before any cryptography: a message longer than the session's
``max_message`` (default :data:`MAX_MESSAGE`) is refused, CBOR is read strictly (shortest
heads, definite lengths, nesting at most :data:`_MAX_DEPTH`, nothing trailing), at most
:data:`MAX_EAD_ITEMS` EAD items, G_X and G_Y of the suite's size. Every refusal is an
:class:`EdhocError` carrying the ERR_CODE and ERR_INFO of the EDHOC error message to send
(RFC 9528 §6); :meth:`EdhocError.encode` writes it.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from dataclasses import dataclass

from .edhoc_suites import SUITES, CipherSuite, PrivateKey, SuiteError, hkdf_expand, hkdf_extract

#: Bound on one EDHOC message, in bytes: room for an access token of up to about 1 KiB
#: in EAD_3 (draft-ietf-ace-edhoc-oscore-profile §4.3.3).
MAX_MESSAGE = 1400
#: Bound on the EAD items of one message.
MAX_EAD_ITEMS = 8
#: Bound on the nesting of a CBOR item inside a message (an ID_CRED_x map, an ERR_INFO).
_MAX_DEPTH = 8

#: EDHOC error codes (RFC 9528 §6.1).
ERR_UNSPECIFIED = 1
ERR_WRONG_SELECTED_CIPHER_SUITE = 2
ERR_UNKNOWN_CREDENTIAL = 3

_ENCRYPT0_HEAD = b"\x83\x68Encrypt0\x40"  # ["Encrypt0", h'', TH] without TH
_SIGNATURE1 = b"\x84\x6aSignature1"


class EdhocError(Exception):
    """An EDHOC session aborted: ``code`` and ``info`` are ERR_CODE and ERR_INFO (RFC 9528 §6)."""

    def __init__(self, code: int, info: object) -> None:
        super().__init__(info)
        self.code = code
        self.info = info

    def encode(self) -> bytes:
        """The EDHOC error message: the CBOR sequence (ERR_CODE, ERR_INFO)."""
        info = self.info
        if isinstance(info, bool):
            tail = b"\xf5" if info else b"\xf4"
        elif isinstance(info, int):
            tail = _int(info)
        elif isinstance(info, list):
            tail = _head(4, len(info)) + b"".join(_int(i) for i in info)
        else:
            text = str(info).encode()
            tail = _head(3, len(text)) + text
        return _int(self.code) + tail


class PeerError(EdhocError):
    """The peer sent an EDHOC error message instead of the next message."""


def _refuse(info: str) -> EdhocError:
    return EdhocError(ERR_UNSPECIFIED, info)


# ---- CBOR, as much of it as EDHOC needs ----------------------------------------------------


def _head(major: int, n: int) -> bytes:
    if n < 24:
        return bytes((major << 5 | n,))
    if n < 0x100:
        return bytes((major << 5 | 24, n))
    if n < 0x10000:
        return bytes((major << 5 | 25,)) + n.to_bytes(2, "big")
    return bytes((major << 5 | 26,)) + n.to_bytes(4, "big")


def _int(i: int) -> bytes:
    return _head(0, i) if i >= 0 else _head(1, -1 - i)


def _bstr(b: bytes) -> bytes:
    return _head(2, len(b)) + b


def is_one_byte_int(b: bytes) -> bool:
    """Whether ``b`` is the CBOR encoding of an integer -24..23 (one byte)."""
    return len(b) == 1 and (b[0] <= 0x17 or 0x20 <= b[0] <= 0x37)


def encode_connection_id(c: bytes) -> bytes:
    """C_x as sent (RFC 9528 §3.3.2): a one-byte integer encoding as itself, else a bstr."""
    return c if is_one_byte_int(c) else _bstr(c)


def compact_id_cred(id_cred: bytes) -> bytes:
    """ID_CRED_x as it appears in PLAINTEXT_2/3 (RFC 9528 §3.5.3.2): ``{4: kid}`` as the kid."""
    if len(id_cred) >= 3 and id_cred[:2] == b"\xa1\x04":
        reader = _Reader(id_cred[2:])
        if reader.major() == 2:
            kid = reader.bstr()
            if reader.done():
                return kid if is_one_byte_int(kid) else _bstr(kid)
    return id_cred


class _Reader:
    """A strict reader of a CBOR sequence: shortest heads, definite lengths, bounded depth."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def done(self) -> bool:
        return self.pos >= len(self.data)

    def major(self) -> int:
        if self.done():
            raise _refuse("truncated message")
        return self.data[self.pos] >> 5

    def _head(self) -> tuple[int, int]:
        data, pos = self.data, self.pos
        if pos >= len(data):
            raise _refuse("truncated message")
        initial = data[pos]
        major, info = initial >> 5, initial & 0x1F
        if info < 24:
            self.pos = pos + 1
            return major, info
        if info > 26 and not (info == 27 and major != 7):
            raise _refuse("indefinite length or reserved CBOR head")
        size = 1 << (info - 24)
        end = pos + 1 + size
        if end > len(data):
            raise _refuse("truncated message")
        value = int.from_bytes(data[pos + 1 : end], "big")
        if value < (24 if size == 1 else 1 << (4 * size)):
            raise _refuse("CBOR head not in its shortest form")
        self.pos = end
        return major, value

    def integer(self) -> int:
        major, value = self._head()
        if major == 0:
            return value
        if major == 1:
            return -1 - value
        raise _refuse("an integer was expected")

    def bstr(self) -> bytes:
        major, length = self._head()
        if major != 2:
            raise _refuse("a byte string was expected")
        end = self.pos + length
        if end > len(self.data):
            raise _refuse("truncated message")
        value = self.data[self.pos : end]
        self.pos = end
        return value

    def item(self, depth: int = 0) -> bytes:
        """One whole data item, as its bytes (well-formedness checked, not decoded)."""
        if depth > _MAX_DEPTH:
            raise _refuse("CBOR nested too deeply")
        start = self.pos
        major, value = self._head()
        if major in (2, 3):
            if self.pos + value > len(self.data):
                raise _refuse("truncated message")
            self.pos += value
        elif major == 4:
            for _ in range(value):
                self.item(depth + 1)
        elif major == 5:
            for _ in range(2 * value):
                self.item(depth + 1)
        elif major == 6:
            self.item(depth + 1)
        elif major == 7 and value > 23 and self.data[start] & 0x1F == 24:
            raise _refuse("simple value in two bytes")
        return self.data[start : self.pos]

    def connection_id(self) -> bytes:
        """C_x (RFC 9528 §3.3.2): a one-byte integer, or a bstr that is not one."""
        if self.major() in (0, 1):
            start = self.pos
            self.integer()
            raw = self.data[start : self.pos]
            if not is_one_byte_int(raw):
                raise _refuse("an integer connection identifier is -24..23")
            return raw
        c = self.bstr()
        if is_one_byte_int(c):
            raise _refuse("a connection identifier that is a one-byte integer is sent as one")
        return c

    def id_cred(self) -> bytes:
        """ID_CRED_x of a plaintext, expanded to the full map (RFC 9528 §3.5.3.2)."""
        major = self.major()
        if major in (0, 1):
            return b"\xa1\x04\x41" + self.connection_id()
        if major == 2:
            return b"\xa1\x04" + _bstr(self.connection_id())
        if major != 5:
            raise _refuse("ID_CRED_x is a kid or a map")
        id_cred = self.item()
        if compact_id_cred(id_cred) != id_cred:
            raise _refuse("ID_CRED_x with a kid alone is sent as the kid")
        return id_cred

    def ead(self) -> list[EadItem]:
        """The EAD items up to the end (RFC 9528 §3.8)."""
        items: list[EadItem] = []
        while not self.done():
            if len(items) >= MAX_EAD_ITEMS:
                raise _refuse(f"more than {MAX_EAD_ITEMS} EAD items")
            label = self.integer()
            value = self.bstr() if not self.done() and self.major() == 2 else None
            items.append(EadItem(abs(label), value, critical=label < 0))
        return items


@dataclass(frozen=True)
class EadItem:
    """One EAD item (RFC 9528 §3.8): ``label`` positive; ``critical`` sends it negated."""

    label: int
    value: bytes | None = None
    critical: bool = False

    def encode(self) -> bytes:
        head = _int(-self.label if self.critical else self.label)
        return head if self.value is None else head + _bstr(self.value)


def _encode_ead(items: Sequence[EadItem]) -> bytes:
    if len(items) > MAX_EAD_ITEMS:
        raise ValueError(f"at most {MAX_EAD_ITEMS} EAD items")
    return b"".join(item.encode() for item in items)


def read_error(data: bytes) -> PeerError | None:
    """The EDHOC error message ``data`` is, or None when it starts otherwise (RFC 9528 §6)."""
    reader = _Reader(data)
    try:
        if reader.done() or reader.major() not in (0, 1):
            return None
        code = reader.integer()
        info: object = None
        if not reader.done():
            raw = reader.item()
            info = raw.hex()
            inner = _Reader(raw)
            if inner.major() == 3:
                _, length = inner._head()
                info = raw[inner.pos : inner.pos + length].decode("utf-8", "replace")
            elif inner.major() in (0, 1):
                info = _Reader(raw).integer()
    except EdhocError:
        return PeerError(ERR_UNSPECIFIED, "malformed EDHOC error message")
    return PeerError(code, info)


# ---- credentials and keys ------------------------------------------------------------------


@dataclass(frozen=True)
class Credential:
    """An authentication credential as EDHOC uses it (RFC 9528 §3.5).

    ``cred`` is CRED_x byte for byte, ``id_cred`` the encoded ID_CRED_x map that is sent,
    ``public_key`` the key in the suite's form (:mod:`keybound.core.edhoc_suites`), and
    ``signs`` whether that key is a signature key (else a static DH key).
    """

    cred: bytes
    id_cred: bytes
    public_key: bytes
    signs: bool


class AuthKey:
    """One's own authentication key: its credential and private key, loaded once."""

    def __init__(self, suite: CipherSuite, credential: Credential, private: bytes) -> None:
        self.suite = suite
        self.credential = credential
        self.private: PrivateKey = suite.private_key(private, signing=credential.signs)
        ours = (suite.public_signing if credential.signs else suite.public_dh)(self.private)
        theirs = credential.public_key
        if not hmac.compare_digest(ours[: len(theirs)], theirs[: len(ours)]):
            raise ValueError("the private key is not the one of the credential")


# ---- the session ---------------------------------------------------------------------------


def _signs(method: int) -> tuple[bool, bool]:
    """Whether the Initiator and the Responder sign with ``method`` (RFC 9528 §3.2)."""
    return method in (0, 1), method in (0, 2)


class _Session:
    """What both roles share: the suite, the key schedule, and the outputs."""

    def __init__(self, suite: CipherSuite, max_message: int) -> None:
        self.suite = suite
        self.max_message = max_message
        self.method = -1
        self._prk_out: bytes | None = None
        self._prk_exporter = b""

    def selected_cipher_suite(self) -> int:
        return self.suite.value

    def _kdf(self, prk: bytes, label: int, context: bytes, length: int) -> bytes:
        """EDHOC_KDF (RFC 9528 §4.1.2): HKDF-Expand with info = (label, context, length)."""
        return hkdf_expand(prk, _int(label) + _bstr(context) + _int(length), length)

    def _next_prk(
        self, prk: bytes, label: int, th: bytes, signs: bool, private: PrivateKey, public: bytes
    ) -> bytes:
        """PRK_3e2m (label 1, TH_2) or PRK_4e3m (label 5, TH_3), RFC 9528 §4.1.1.2-3: the
        previous PRK when that side signs, else HKDF-Extract(SALT, its static DH secret).
        A public key that is not a point of the suite's curve is refused."""
        if signs:
            return prk
        salt = self._kdf(prk, label, th, self.suite.hash_length)
        try:
            return hkdf_extract(salt, self.suite.dh(private, public))
        except SuiteError as exc:
            raise _refuse(str(exc)) from None

    def _check_size(self, message: bytes, what: str) -> None:
        if len(message) > self.max_message:
            raise _refuse(f"{what} is longer than {self.max_message} bytes")

    def _sign_or_mac(
        self, key: AuthKey, prk: bytes, label: int, c_r: bytes, th: bytes, ead: bytes
    ) -> bytes:
        """Signature_or_MAC_2 (label 2, with C_R) or _3 (label 6) of one's own credential."""
        own = key.credential
        signs = own.signs
        length = self.suite.hash_length if signs else self.suite.mac_length
        tail = _bstr(th) + own.cred + ead
        mac = self._kdf(prk, label, c_r + own.id_cred + tail, length)
        if not signs:
            return mac
        to_sign = _SIGNATURE1 + _bstr(own.id_cred) + _bstr(tail) + _bstr(mac)
        return self.suite.sign(key.private, to_sign)

    def _check_sign_or_mac(
        self,
        peer: Credential,
        id_cred: bytes,
        prk: bytes,
        label: int,
        c_r: bytes,
        th: bytes,
        ead: bytes,
        received: bytes,
    ) -> None:
        length = self.suite.hash_length if peer.signs else self.suite.mac_length
        tail = _bstr(th) + peer.cred + ead
        mac = self._kdf(prk, label, c_r + id_cred + tail, length)
        if not peer.signs:
            if not hmac.compare_digest(mac, received):
                raise _refuse(f"MAC_{2 if label == 2 else 3} does not verify")
            return
        signed = _SIGNATURE1 + _bstr(id_cred) + _bstr(tail) + _bstr(mac)
        try:
            self.suite.verify(peer.public_key, signed, received)
        except SuiteError:
            raise _refuse("the signature does not verify") from None

    def _finish(self, prk_4e3m: bytes, th_4: bytes) -> None:
        self._prk_out = self._kdf(prk_4e3m, 7, th_4, self.suite.hash_length)
        self._prk_exporter = self._kdf(self._prk_out, 10, b"", self.suite.hash_length)

    @property
    def prk_out(self) -> bytes:
        if self._prk_out is None:
            raise RuntimeError("EDHOC has not completed")
        return self._prk_out

    def exporter(self, label: int, context: bytes | Sequence[int], length: int) -> bytes:
        """EDHOC_Exporter (RFC 9528 §4.2.1)."""
        self.prk_out  # noqa: B018 - raises before completion
        return self._kdf(self._prk_exporter, label, bytes(context), length)

    def edhoc_exporter(self, label: int, context: bytes | Sequence[int], length: int) -> bytes:
        """:meth:`exporter` under the name aiocoap's OSCORE glue calls."""
        return self.exporter(label, context, length)

    def oscore(self, key_length: int = 16, salt_length: int = 8) -> tuple[bytes, bytes]:
        """OSCORE Master Secret and Master Salt (RFC 9528 Appendix A.1)."""
        return self.exporter(0, b"", key_length), self.exporter(1, b"", salt_length)

    def key_update(self, context: bytes) -> bytes:
        """EDHOC_KeyUpdate (RFC 9528 Appendix H): a new PRK_out, and exporter."""
        self._prk_out = self._kdf(self.prk_out, 11, context, self.suite.hash_length)
        self._prk_exporter = self._kdf(self._prk_out, 10, b"", self.suite.hash_length)
        return self._prk_out

    def _aad(self, th: bytes) -> bytes:
        return _ENCRYPT0_HEAD + _bstr(th)


class Initiator(_Session):
    """The EDHOC Initiator with ``key``, offering ``suites`` (the last one selected)."""

    def __init__(
        self,
        key: AuthKey,
        *,
        method: int,
        c_i: bytes,
        suites: Sequence[int] | None = None,
        ephemeral: bytes | None = None,
        max_message: int = MAX_MESSAGE,
    ) -> None:
        super().__init__(key.suite, max_message)
        if method not in (0, 1, 2, 3):
            raise ValueError("EDHOC methods are 0-3")
        if _signs(method)[0] != key.credential.signs:
            raise ValueError(f"method {method} does not fit the Initiator's credential")
        self.key = key
        self.method = method
        self.c_i = c_i
        self.suites = list(suites) if suites is not None else [key.suite.value]
        if self.suites[-1] != key.suite.value:
            raise ValueError("the selected (last) suite is the key's suite")
        suite = key.suite
        self._x = (
            suite.generate() if ephemeral is None else suite.private_key(ephemeral, signing=False)
        )
        self._g_x = suite.public_dh(self._x)
        self._state = "start"

    def message_1(self, ead_1: Sequence[EadItem] = ()) -> bytes:
        """message_1 = (METHOD, SUITES_I, G_X, C_I, ? EAD_1) (RFC 9528 §5.2.1)."""
        if self._state != "start":
            raise RuntimeError("message_1 was made")
        suites = self.suites
        if len(suites) == 1:
            encoded_suites = _int(suites[0])
        else:
            encoded_suites = _head(4, len(suites)) + b"".join(_int(s) for s in suites)
        message = (
            _int(self.method)
            + encoded_suites
            + _bstr(self._g_x)
            + encode_connection_id(self.c_i)
            + _encode_ead(ead_1)
        )
        self._h_message_1 = self.suite.hash(message)
        self._state = "sent_1"
        return message

    def parse_message_2(self, message_2: bytes) -> tuple[bytes, bytes, list[EadItem]]:
        """Decrypt message_2: C_R, the full ID_CRED_R and EAD_2, for finding CRED_R.

        :class:`PeerError` if it is an EDHOC error message instead.
        """
        if self._state != "sent_1":
            raise RuntimeError("message_2 is not expected now")
        self._check_size(message_2, "message_2")
        peer_error = read_error(message_2)
        if peer_error is not None:
            raise peer_error
        reader = _Reader(message_2)
        body = reader.bstr()
        if not reader.done():
            raise _refuse("message_2 is one byte string")
        size = len(self._g_x)
        if len(body) <= size:
            raise _refuse("message_2 too short")
        g_y, ciphertext_2 = body[:size], body[size:]
        suite = self.suite
        th_2 = suite.hash(_bstr(g_y) + _bstr(self._h_message_1))
        try:
            g_xy = suite.dh(self._x, g_y)
        except SuiteError as exc:
            raise _refuse(str(exc)) from None
        prk_2e = hkdf_extract(th_2, g_xy)
        keystream = self._kdf(prk_2e, 0, th_2, len(ciphertext_2))
        plaintext_2 = bytes(a ^ b for a, b in zip(ciphertext_2, keystream, strict=True))
        plain = _Reader(plaintext_2)
        c_r = plain.connection_id()
        id_cred_r = plain.id_cred()
        signature_or_mac_2 = plain.bstr()
        ead_start = plain.pos
        ead_2 = plain.ead()
        self._m2 = (g_y, th_2, prk_2e, plaintext_2, c_r, id_cred_r, signature_or_mac_2)
        self._ead_2 = plaintext_2[ead_start:]
        self.c_r = c_r
        self._state = "parsed_2"
        return c_r, id_cred_r, ead_2

    def verify_message_2(self, peer: Credential) -> None:
        """Check Signature_or_MAC_2 with CRED_R ``peer`` (RFC 9528 §5.3.3)."""
        if self._state != "parsed_2":
            raise RuntimeError("message_2 was not parsed")
        g_y, th_2, prk_2e, plaintext_2, c_r, id_cred_r, received = self._m2
        if peer.signs != _signs(self.method)[1]:
            raise _refuse(f"the Responder's credential does not fit method {self.method}")
        suite = self.suite
        prk_3e2m = self._next_prk(prk_2e, 1, th_2, peer.signs, self._x, peer.public_key)
        self._state = "failed"
        self._check_sign_or_mac(
            peer, id_cred_r, prk_3e2m, 2, encode_connection_id(c_r), th_2, self._ead_2, received
        )
        self._th_3 = suite.hash(_bstr(th_2) + plaintext_2 + peer.cred)
        self._prk_3e2m = prk_3e2m
        self._g_y = g_y
        self._state = "verified_2"

    def message_3(self, ead_3: Sequence[EadItem] = ()) -> bytes:
        """message_3 (RFC 9528 §5.4.2); afterwards the exporter is ready."""
        if self._state != "verified_2":
            raise RuntimeError("message_2 was not verified")
        suite, th_3, prk_3e2m = self.suite, self._th_3, self._prk_3e2m
        own = self.key.credential
        prk_4e3m = self._next_prk(prk_3e2m, 5, th_3, own.signs, self.key.private, self._g_y)
        ead = _encode_ead(ead_3)
        signature_or_mac_3 = self._sign_or_mac(self.key, prk_4e3m, 6, b"", th_3, ead)
        plaintext_3 = compact_id_cred(own.id_cred) + _bstr(signature_or_mac_3) + ead
        k_3 = self._kdf(prk_3e2m, 3, th_3, suite.key_length)
        iv_3 = self._kdf(prk_3e2m, 4, th_3, suite.iv_length)
        message = _bstr(suite.encrypt(k_3, iv_3, plaintext_3, self._aad(th_3)))
        th_4 = suite.hash(_bstr(th_3) + plaintext_3 + own.cred)
        self._th_4, self._prk_4e3m = th_4, prk_4e3m
        self._finish(prk_4e3m, th_4)
        self._state = "sent_3"
        return message

    def process_message_4(self, message_4: bytes) -> list[EadItem]:
        """message_4 (RFC 9528 §5.5.3): its EAD_4."""
        if self._state != "sent_3":
            raise RuntimeError("message_4 is not expected now")
        self._check_size(message_4, "message_4")
        peer_error = read_error(message_4)
        if peer_error is not None:
            raise peer_error
        return _open_message_4(self, self._prk_4e3m, self._th_4, message_4)


class Responder(_Session):
    """The EDHOC Responder with ``key``; ``methods`` it takes (those that fit ``key``)."""

    def __init__(
        self,
        key: AuthKey,
        *,
        ephemeral: bytes | None = None,
        max_message: int = MAX_MESSAGE,
    ) -> None:
        super().__init__(key.suite, max_message)
        self.key = key
        self._ephemeral = ephemeral
        self._state = "start"

    def process_message_1(self, message_1: bytes) -> tuple[int, bytes, list[EadItem]]:
        """Read message_1 (RFC 9528 §5.2.3): METHOD, C_I and EAD_1.

        ERR_CODE 2 with SUITES_R when the selected suite is not the key's, or an earlier
        one of SUITES_I is (§6.3); ERR_CODE 1 for a method that does not fit the key.
        """
        if self._state != "start":
            raise RuntimeError("message_1 was processed")
        self._check_size(message_1, "message_1")
        reader = _Reader(message_1)
        method = reader.integer()
        if reader.major() == 4:
            _, count = reader._head()
            if not 2 <= count <= 10:
                raise _refuse("SUITES_I as an array has 2-10 suites")
            suites = [reader.integer() for _ in range(count)]
        else:
            suites = [reader.integer()]
        ours = self.suite.value
        if suites[-1] != ours or ours in suites[:-1]:
            raise EdhocError(ERR_WRONG_SELECTED_CIPHER_SUITE, ours)
        if method not in (0, 1, 2, 3):
            raise _refuse(f"unknown EDHOC method {method}")
        if _signs(method)[1] != self.key.credential.signs:
            raise _refuse(f"EDHOC method {method} is not supported")
        g_x = reader.bstr()
        if len(g_x) != self.suite.ephemeral_length:
            raise _refuse("G_X is not a key of the selected suite")
        c_i = reader.connection_id()
        ead_1 = reader.ead()
        self.method = method
        self.c_i = c_i
        self._g_x = g_x
        self._h_message_1 = self.suite.hash(message_1)
        self._state = "received_1"
        return method, c_i, ead_1

    def message_2(self, c_r: bytes, ead_2: Sequence[EadItem] = ()) -> bytes:
        """message_2 with connection identifier ``c_r`` (RFC 9528 §5.3.2)."""
        if self._state != "received_1":
            raise RuntimeError("message_1 was not processed")
        if c_r == self.c_i:
            raise ValueError("C_R must differ from C_I (RFC 9528 Appendix A.1)")
        suite, own = self.suite, self.key.credential
        ephemeral = self._ephemeral
        y = suite.generate() if ephemeral is None else suite.private_key(ephemeral, signing=False)
        g_y = suite.public_dh(y)
        th_2 = suite.hash(_bstr(g_y) + _bstr(self._h_message_1))
        try:
            g_xy = suite.dh(y, self._g_x)
        except SuiteError as exc:
            raise _refuse(str(exc)) from None
        prk_2e = hkdf_extract(th_2, g_xy)
        prk_3e2m = self._next_prk(prk_2e, 1, th_2, own.signs, self.key.private, self._g_x)
        ead = _encode_ead(ead_2)
        c_r_encoded = encode_connection_id(c_r)
        signature_or_mac_2 = self._sign_or_mac(self.key, prk_3e2m, 2, c_r_encoded, th_2, ead)
        plaintext_2 = c_r_encoded + compact_id_cred(own.id_cred) + _bstr(signature_or_mac_2) + ead
        keystream = self._kdf(prk_2e, 0, th_2, len(plaintext_2))
        ciphertext_2 = bytes(a ^ b for a, b in zip(plaintext_2, keystream, strict=True))
        self.c_r = c_r
        self._y = y
        self._th_3 = suite.hash(_bstr(th_2) + plaintext_2 + own.cred)
        self._prk_3e2m = prk_3e2m
        self._state = "sent_2"
        return _bstr(g_y + ciphertext_2)

    def parse_message_3(self, message_3: bytes) -> tuple[bytes, list[EadItem]]:
        """Decrypt message_3: the full ID_CRED_I and EAD_3, for finding CRED_I (§5.4.3).

        After a failure the session is over: a second message_3 is refused.
        """
        if self._state != "sent_2":
            raise _refuse("message_3 is not expected now")
        self._state = "failed"
        self._check_size(message_3, "message_3")
        reader = _Reader(message_3)
        ciphertext_3 = reader.bstr()
        if not reader.done():
            raise _refuse("message_3 is one byte string")
        suite, th_3, prk_3e2m = self.suite, self._th_3, self._prk_3e2m
        k_3 = self._kdf(prk_3e2m, 3, th_3, suite.key_length)
        iv_3 = self._kdf(prk_3e2m, 4, th_3, suite.iv_length)
        try:
            plaintext_3 = suite.decrypt(k_3, iv_3, ciphertext_3, self._aad(th_3))
        except SuiteError as exc:
            raise _refuse(str(exc)) from None
        plain = _Reader(plaintext_3)
        id_cred_i = plain.id_cred()
        received = plain.bstr()
        ead_start = plain.pos
        ead_3 = plain.ead()
        self._m3 = (plaintext_3, id_cred_i, received, plaintext_3[ead_start:])
        self._state = "parsed_3"
        return id_cred_i, ead_3

    def verify_message_3(self, peer: Credential) -> bytes:
        """Check Signature_or_MAC_3 with CRED_I ``peer``; PRK_out (RFC 9528 §5.4.3)."""
        if self._state != "parsed_3":
            raise _refuse("message_3 was not parsed")
        self._state = "failed"
        plaintext_3, id_cred_i, received, ead = self._m3
        if peer.signs != _signs(self.method)[0]:
            raise _refuse(f"the Initiator's credential does not fit method {self.method}")
        suite, th_3, prk_3e2m = self.suite, self._th_3, self._prk_3e2m
        prk_4e3m = self._next_prk(prk_3e2m, 5, th_3, peer.signs, self._y, peer.public_key)
        self._check_sign_or_mac(peer, id_cred_i, prk_4e3m, 6, b"", th_3, ead, received)
        th_4 = suite.hash(_bstr(th_3) + plaintext_3 + peer.cred)
        self._th_4, self._prk_4e3m = th_4, prk_4e3m
        self._finish(prk_4e3m, th_4)
        self._state = "completed"
        return self.prk_out

    @property
    def completed(self) -> bool:
        return self._state == "completed"

    def message_4(self, ead_4: Sequence[EadItem] = ()) -> bytes:
        """message_4 (RFC 9528 §5.5.2)."""
        if self._state != "completed":
            raise RuntimeError("message_3 was not verified")
        suite, th_4, prk_4e3m = self.suite, self._th_4, self._prk_4e3m
        k_4 = self._kdf(prk_4e3m, 8, th_4, suite.key_length)
        iv_4 = self._kdf(prk_4e3m, 9, th_4, suite.iv_length)
        return _bstr(suite.encrypt(k_4, iv_4, _encode_ead(ead_4), self._aad(th_4)))


def _open_message_4(
    session: _Session, prk_4e3m: bytes, th_4: bytes, message_4: bytes
) -> list[EadItem]:
    reader = _Reader(message_4)
    ciphertext_4 = reader.bstr()
    if not reader.done():
        raise _refuse("message_4 is one byte string")
    suite = session.suite
    k_4 = session._kdf(prk_4e3m, 8, th_4, suite.key_length)
    iv_4 = session._kdf(prk_4e3m, 9, th_4, suite.iv_length)
    try:
        plaintext_4 = suite.decrypt(k_4, iv_4, ciphertext_4, session._aad(th_4))
    except SuiteError as exc:
        raise _refuse(str(exc)) from None
    return _Reader(plaintext_4).ead()


def suite_of(value: int) -> CipherSuite:
    """The cipher suite of number ``value``; ValueError for one keybound does not run."""
    try:
        return SUITES[value]
    except KeyError:
        raise ValueError(f"EDHOC cipher suite {value} is not supported") from None


__all__ = [
    "ERR_UNKNOWN_CREDENTIAL",
    "ERR_UNSPECIFIED",
    "ERR_WRONG_SELECTED_CIPHER_SUITE",
    "MAX_EAD_ITEMS",
    "MAX_MESSAGE",
    "AuthKey",
    "Credential",
    "EadItem",
    "EdhocError",
    "Initiator",
    "PeerError",
    "Responder",
    "compact_id_cred",
    "encode_connection_id",
    "is_one_byte_int",
    "read_error",
    "suite_of",
]
