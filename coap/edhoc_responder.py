"""The RS as EDHOC Responder for the EDHOC and OSCORE profile of ACE (RFC 9528, RFC 9668).

:class:`EdhocResponder` serves ``/.well-known/edhoc`` (RFC 9528 Appendix A.2.1, the
forward message flow: the client is the Initiator) with keybound's own EDHOC
(:mod:`keybound.core.edhoc`, cipher suite 2; method 3, or method 1 for an Initiator
whose credential is a signature key; methods 0 and 2 when the RS's own credential is
one), and is the profile's :class:`~keybound.coap.profiles.ContextInstaller`: a
stored token of the profile installs nothing by itself, it lets an EDHOC session
authenticate with the credential the token binds (draft-ietf-ace-edhoc-oscore-profile-11
§4.2). The session's OSCORE context (RFC 9528 Appendix A.1) is bound to that token:

* the token arrives at ``/authz-info`` or, as the draft specifies (§4.1, §4.3.3), in
  EAD_3 as the critical item "ACE-OAuth Access Token" (label 24, provisional): it is
  then verified and stored as if posted (``accept_token``), before MAC_3 is checked;
  a second such item, or any other critical one, aborts the session;
* message_3 is accepted only if ID_CRED_I names the credential of a stored, live
  token of this profile; MAC_3 is then checked against exactly that credential, so a
  client with another key is refused even if it names a bound credential;
* the session remembers the token's PoP key id; when the token expires, is
  superseded or removed, the installer's :meth:`EdhocResponder.remove` deletes the
  session and its context (draft §4.5); a newer session for the same token
  deletes the older one (draft §4.2);
* requests over the context are authorized against the token's scope by the site.

Bounds and errors, all before any cryptography: an EDHOC message longer than
:data:`MAX_EDHOC_MESSAGE` bytes is 4.13; a method the RS's credential does not fit is
refused (ERR_CODE 1), and a
selected cipher suite other than 2 gets the EDHOC error "Wrong selected cipher suite"
(ERR_CODE 2, SUITES_R 2; RFC 9528 §6.3), each as an EDHOC error message in a 4.00
with Content-Format application/edhoc+cbor-seq (RFC 9528 Appendix A.2.3). At most
:data:`MAX_PENDING` sessions wait for message_3; more push out the oldest. A
message_3 for a completed session (a replay) is refused, as is one for no session.
A credential not bound to a valid token is ERR_CODE 1 (draft §4.3.3).

Not persisted: after a restart the tokens come back, the EDHOC sessions do not, and
clients run EDHOC again, which derives new keys, so no OSCORE nonce is ever reused.
"""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

import aiocoap
import cbor2
from aiocoap import credentials, error
from aiocoap.edhoc import EdhocResponderContext
from aiocoap.numbers.codes import Code

from keybound.core import cbor
from keybound.core.edhoc import AuthKey, EdhocError, Responder
from keybound.core.edhoc_credentials import Ccs
from keybound.core.edhoc_suites import SUITE_2
from keybound.core.errors import KeyboundError
from keybound.core.numbers.ace_profiles import AceProfile
from keybound.core.numbers.edhoc_profile import (
    CIPHER_SUITE_2,
    CONTENT_FORMAT_EDHOC_CBOR_SEQ,
    EAD_ACCESS_TOKEN,
    ERR_UNSPECIFIED,
    ERR_WRONG_SELECTED_CIPHER_SUITE,
    METHOD_SIGNATURE,
    METHOD_STATIC_DH,
)
from keybound.core.resource_server import ResourceServer
from keybound.core.token_store import ShutdownRecord, StoredToken

log = logging.getLogger("keybound.rs.edhoc")
T = TypeVar("T")

#: Bound on an EDHOC message (C_R before message_3 not counted), checked before any
#: cryptography, and under the site's 1024-byte bound on a request body: room for an
#: access token of about 850 bytes in EAD_3 (lakers-python
#: 0.6, which the RS ran before, stopped at 256 bytes). Method 3 with a CCS by value is
#: about 140 bytes.
MAX_EDHOC_MESSAGE = 1000
#: Sessions that sent message_2 and wait for message_3, at most.
MAX_PENDING = 16
#: One-byte connection identifiers (CBOR ints -24..23, RFC 9528 §3.3.2): all lakers takes.
_CONNECTION_IDS = tuple(cbor2.dumps(i) for i in range(-24, 24))
_LABEL = ":edhoc:"
#: The most bytes before an EDHOC message in a request: ``true``, or a one-byte C_R.
_C_R_MAX = 1


def lakers_call(what: str, call: Callable[[], T]) -> T:
    """``call()`` of lakers, any failure of which refuses the EDHOC message.

    lakers-python 0.6 raises ValueError for the errors it detects, but panics on some
    malformed input (a message_3 of random bytes does it about half the time); a Rust
    panic arrives as pyo3's PanicException, a BaseException. Both become
    :class:`EdhocRefused`; only the interpreter's own exits pass through.
    """
    try:
        return call()
    except (KeyboardInterrupt, SystemExit, GeneratorExit, asyncio.CancelledError):
        raise
    except EdhocError as exc:
        raise EdhocRefused(exc.code, f"{what}: {exc.info}") from None
    except BaseException as exc:
        reason = str(exc) if isinstance(exc, ValueError) else "malformed (lakers panicked)"
        raise EdhocRefused(ERR_UNSPECIFIED, f"{what}: {reason}") from None


class EdhocRefused(Exception):
    """An EDHOC message refused; answered as an EDHOC error message (RFC 9528 §6)."""

    def __init__(self, code: int, info: object, coap: Code = Code.BAD_REQUEST) -> None:
        super().__init__(info)
        self.code = code
        self.info = info
        self.coap = coap

    def message(self) -> aiocoap.Message:
        """The EDHOC error message (ERR_CODE, ERR_INFO) as a CoAP response."""
        payload = cbor.dumps_ordered(self.code) + cbor.dumps_ordered(self.info)
        return aiocoap.Message(
            code=self.coap, payload=payload, content_format=CONTENT_FORMAT_EDHOC_CBOR_SEQ
        )


class EdhocSession(EdhocResponderContext):  # type: ignore[misc]
    """One EDHOC session as Responder, and the OSCORE context it derives.

    ``key_id`` is the PoP key id of the token the session authenticated with, once
    message_3 verified; ``completed`` tells whether it has.
    """

    def __init__(
        self, responder: Any, c_i: bytes, c_r: bytes, owner: EdhocResponder, logger: Any
    ) -> None:
        super().__init__(responder, c_i, c_r, None, logger)
        self.owner = owner
        self.key_id: bytes | None = None
        self.removed = False

    @property
    def completed(self) -> bool:
        return not self._incomplete

    def _offer_message_3(self, message_3: bytes) -> bytes:
        """Verify message_3 against the credential of a live token; return message_4.

        Called for a separate message_3 and, from aiocoap's unprotect, for the
        EDHOC + OSCORE combined request (RFC 9668 §3.3.1). Raises
        :class:`aiocoap.error.Unauthorized` (4.01) when refused.
        """
        if self.removed or not self._incomplete:
            raise error.Unauthorized("EDHOC message_3 for no pending session")
        try:
            message_4: bytes = self.owner.complete(self, message_3)
        except EdhocRefused as exc:
            self.owner.discard(self)
            raise error.Unauthorized(str(exc.info)) from None
        return message_4


class EdhocResponder:
    """The EDHOC resource of the RS and the EDHOC profile's context installer.

    ``private_key`` is the RS's P-256 ``d``, ``credential`` its CCS (AUTH_CRED_RS, the
    ``rs_cnf`` the AS hands out); ``times`` gives ``now`` and ``monotonic`` for the
    token checks.
    """

    profile: ClassVar[int] = int(AceProfile.COAP_EDHOC_OSCORE)

    def __init__(
        self,
        rs: ResourceServer,
        server_credentials: credentials.CredentialsMap,
        *,
        private_key: bytes,
        credential: Ccs,
        times: Callable[[], dict[str, Any]],
        accept_token: Callable[[bytes], StoredToken] | None = None,
        max_pending: int = MAX_PENDING,
        max_message: int = MAX_EDHOC_MESSAGE,
    ) -> None:
        self.rs = rs
        self.credentials = server_credentials
        self._private_key = private_key
        self.credential = credential
        self._key = AuthKey(SUITE_2, credential.edhoc(), private_key)
        #: The methods whose Responder side fits the RS's credential (RFC 9528 §3.2).
        self.methods = (METHOD_SIGNATURE, 2) if credential.signs else (METHOD_STATIC_DH, 1)
        self.times = times
        #: Verifies and stores a token from EAD_3 as ``/authz-info`` would; None: refused.
        self.accept_token = accept_token
        self.max_pending = max_pending
        self.max_message = max_message
        self._sessions: dict[bytes, EdhocSession] = {}  # by C_R, oldest first
        self._current: dict[bytes, EdhocSession] = {}  # completed session by token key id

    def __len__(self) -> int:
        return len(self._sessions)

    def session(self, key_id: bytes) -> EdhocSession | None:
        """The completed session bound to the token of ``key_id``, if any."""
        return self._current.get(key_id)

    # -- ContextInstaller --

    def install(
        self,
        entry: StoredToken,
        *,
        sender_mark: int = 0,
        restored: bool = False,
        shutdown: ShutdownRecord | None = None,
    ) -> object:
        """Nothing to derive: a stored token lets an EDHOC session use its credential."""
        return None

    def remove(self, key_id: bytes) -> None:
        """Delete the EDHOC sessions bound to the token of ``key_id`` and their contexts."""
        for session in [s for s in self._sessions.values() if s.key_id == key_id]:
            self.discard(session)

    def shutdown_records(self) -> list[ShutdownRecord]:
        """EDHOC contexts are not persisted: a restarted RS runs EDHOC anew."""
        return []

    # -- sessions --

    def discard(self, session: EdhocSession) -> None:
        """Delete ``session`` and its OSCORE context."""
        session.removed = True
        c_r = session.recipient_id
        if self._sessions.get(c_r) is session:
            del self._sessions[c_r]
            self.rs.store.release_server_id(c_r)
        label = _LABEL + c_r.hex()
        if self.credentials.get(label) is session:
            del self.credentials[label]
        if session.key_id is not None and self._current.get(session.key_id) is session:
            del self._current[session.key_id]

    def bound_credential(self, id_cred_i: bytes) -> tuple[bytes, Ccs]:
        """The key id and credential of the live token whose credential ID_CRED_I names."""
        for entry in self.rs.store:
            material = entry.verified.material
            if entry.verified.profile != self.profile or not isinstance(material, Ccs):
                continue
            if not material.matches_id_cred(id_cred_i):
                continue
            try:
                live = self.rs.live(entry.key_id, **self.times())
            except KeyboundError as exc:
                raise EdhocRefused(ERR_UNSPECIFIED, f"access token not valid: {exc}") from None
            return live.key_id, material
        raise EdhocRefused(ERR_UNSPECIFIED, "no valid access token binds this credential")

    def complete(self, session: EdhocSession, message_3: bytes) -> bytes:
        """message_3 of ``session``: ID_CRED_I bound to a live token, MAC_3 with its credential."""
        if len(message_3) > self.max_message:
            raise EdhocRefused(ERR_UNSPECIFIED, "message_3 is too long")
        responder = session._responder
        id_cred_i, ead_3 = lakers_call("message_3", lambda: responder.parse_message_3(message_3))
        tokens = [item for item in ead_3 if item.label == EAD_ACCESS_TOKEN]
        if any(item.critical for item in ead_3 if item.label != EAD_ACCESS_TOKEN):
            raise EdhocRefused(ERR_UNSPECIFIED, "a critical EAD_3 item is not supported")
        if len(tokens) > 1:
            raise EdhocRefused(ERR_UNSPECIFIED, "more than one access token in EAD_3")
        if tokens and tokens[0].value is None:
            raise EdhocRefused(ERR_UNSPECIFIED, "an access token item without a token")
        in_ead = self._accept_ead_token(tokens[0].value or b"") if tokens else None
        key_id, credential = self.bound_credential(id_cred_i)
        if in_ead is not None and in_ead != key_id:
            raise EdhocRefused(
                ERR_UNSPECIFIED, "ID_CRED_I is not the credential the EAD_3 token binds"
            )
        lakers_call(
            "message_3 not verified", lambda: responder.verify_message_3(credential.edhoc())
        )
        message_4: bytes = lakers_call("message_4", responder.message_4)
        session._make_ready(responder, session.recipient_id, session.sender_id)
        session._incomplete = False
        session.key_id = key_id
        previous = self._current.get(key_id)
        if previous is not None and previous is not session:
            self.discard(previous)  # one session per token (draft §4.2)
        self._current[key_id] = session
        log.info(
            "EDHOC session completed, method %d, C_R=%s, bound to token key %s",
            responder.method,
            session.recipient_id.hex(),
            key_id[:6].hex(),
        )
        return message_4

    def _accept_ead_token(self, token: bytes) -> bytes:
        """The access token of EAD_3 verified and stored (draft §4.3.3): its PoP key id.

        ERR_CODE 1 when it is not valid (draft §4.3.3).
        """
        if self.accept_token is None:
            raise EdhocRefused(ERR_UNSPECIFIED, "access tokens in EAD_3 are not taken here")
        try:
            return self.accept_token(token).key_id
        except KeyboundError as exc:
            raise EdhocRefused(ERR_UNSPECIFIED, f"access token not valid: {exc}") from None

    # -- the resource --

    async def render(self, request: aiocoap.Message) -> aiocoap.Message:
        """A POST to ``/.well-known/edhoc``: message_1 (prefixed ``true``) or C_R + message_3."""
        if request.code != Code.POST:
            return aiocoap.Message(code=Code.METHOD_NOT_ALLOWED)
        payload = request.payload
        if len(payload) > self.max_message + _C_R_MAX:
            message = aiocoap.Message(code=Code.REQUEST_ENTITY_TOO_LARGE)
            message.opt.size1 = self.max_message + _C_R_MAX
            return message
        if not payload:
            return EdhocRefused(ERR_UNSPECIFIED, "empty EDHOC message").message()
        try:
            if payload[:1] == b"\xf5":
                return self._message_1(payload[1:])
            return self._message_3(payload)
        except EdhocRefused as exc:
            log.info("EDHOC refused: %s", exc.info)
            return exc.message()

    def _message_1(self, message_1: bytes) -> aiocoap.Message:
        if len(message_1) > self.max_message:
            raise EdhocRefused(ERR_UNSPECIFIED, "message_1 is too long")
        method, suites = _method_and_suites(message_1)
        if method not in self.methods:
            raise EdhocRefused(ERR_UNSPECIFIED, f"EDHOC method {method} is not supported")
        if suites[-1] != CIPHER_SUITE_2:
            raise EdhocRefused(ERR_WRONG_SELECTED_CIPHER_SUITE, CIPHER_SUITE_2)
        responder = Responder(self._key, max_message=self.max_message)
        _, c_i, ead_1 = lakers_call("message_1", lambda: responder.process_message_1(message_1))
        if any(item.critical for item in ead_1):
            raise EdhocRefused(ERR_UNSPECIFIED, "a critical EAD_1 item is not supported")
        self._make_room()
        used = self.credentials.find_all_used_contextless_oscore_kid() | {bytes(c_i)}
        used |= set(self._sessions)
        free = [c for c in _CONNECTION_IDS if c not in used]
        if not free:
            raise EdhocRefused(
                ERR_UNSPECIFIED, "no free connection identifier", Code.SERVICE_UNAVAILABLE
            )
        c_r = free[0]
        message_2 = lakers_call("message_2", lambda: responder.message_2(c_r))
        session = EdhocSession(responder, bytes(c_i), c_r, self, log)
        self._sessions[c_r] = session
        self.rs.store.hold_server_id(c_r)
        self.credentials[_LABEL + c_r.hex()] = session
        return aiocoap.Message(code=Code.CHANGED, payload=message_2)

    def _message_3(self, payload: bytes) -> aiocoap.Message:
        stream = io.BytesIO(payload)
        try:
            c_r_item = cbor2.load(stream)
        except (cbor2.CBORDecodeError, EOFError, ValueError):
            raise EdhocRefused(ERR_UNSPECIFIED, "no C_R before message_3") from None
        if isinstance(c_r_item, int) and not isinstance(c_r_item, bool) and -24 <= c_r_item < 24:
            c_r = cbor2.dumps(c_r_item)
        elif isinstance(c_r_item, bytes):
            c_r = c_r_item
        else:
            raise EdhocRefused(ERR_UNSPECIFIED, "C_R is not a connection identifier")
        if len(payload) - stream.tell() > self.max_message:
            raise EdhocRefused(ERR_UNSPECIFIED, "message_3 is too long")
        session = self._sessions.get(c_r)
        if session is None or session.completed:
            raise EdhocRefused(ERR_UNSPECIFIED, "message_3 for no pending session (or a replay)")
        try:
            message_4 = self.complete(session, payload[stream.tell() :])
        except EdhocRefused:
            self.discard(session)
            raise
        return aiocoap.Message(code=Code.CHANGED, payload=message_4)

    def _make_room(self) -> None:
        pending = [s for s in self._sessions.values() if not s.completed]
        for session in pending[: max(0, len(pending) - self.max_pending + 1)]:
            self.discard(session)


def _method_and_suites(message_1: bytes) -> tuple[int, list[int]]:
    """METHOD and SUITES_I of message_1 (RFC 9528 §5.2.1), read before any crypto."""
    stream = io.BytesIO(message_1)
    try:
        method = cbor2.load(stream)
        suites = cbor2.load(stream)
    except (cbor2.CBORDecodeError, EOFError, ValueError):
        raise EdhocRefused(ERR_UNSPECIFIED, "message_1 is not a CBOR sequence") from None
    if isinstance(suites, int) and not isinstance(suites, bool):
        suites = [suites]
    valid = isinstance(method, int) and not isinstance(method, bool)
    if not valid or not isinstance(suites, list) or not suites or len(suites) > 8:
        raise EdhocRefused(ERR_UNSPECIFIED, "message_1: METHOD and SUITES_I malformed")
    if not all(isinstance(s, int) and not isinstance(s, bool) for s in suites):
        raise EdhocRefused(ERR_UNSPECIFIED, "message_1: SUITES_I malformed")
    return method, suites


__all__ = [
    "MAX_EDHOC_MESSAGE",
    "MAX_PENDING",
    "EdhocRefused",
    "EdhocResponder",
    "EdhocSession",
    "lakers_call",
]
