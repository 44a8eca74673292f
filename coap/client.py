"""The CPython ACE client over aiocoap: drives :class:`keybound.core.client_flow.AceClient`.

The flow itself is sans-IO (RFC 9200 §5.8, RFC 9203 §4); this module performs
each :class:`~keybound.core.client_flow.Send` with aiocoap:

* ``security="as"``: OSCORE with the client-AS context provisioned in the
  device bundle. Its Sender Sequence Number survives restarts: the caller
  passes the persisted mark and a function that stores a new mark durably
  before it is used (RFC 8613 Appendix B.1.1).
* ``security="rs"``: OSCORE with the context derived after ``/authz-info``.
  Its keys are fresh for every ``/authz-info`` exchange (new nonces), so its
  sequence numbers start at 0; they live in memory unless ``rs_context`` makes
  the context (a client that keeps its token and context across runs persists
  them there, RFC 8613 Appendix B.1.1).
* ``security=None``: plain CoAP (``/authz-info``).

An OSCORE failure on a protected exchange (for example the RS lost the
context and answered an unprotected 4.01) comes back to the flow as 4.01, so
it starts over. A peer that does not answer at all is no refusal: that is
:class:`PeerUnreachable`, raised to the caller.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import aiocoap
from aiocoap import error as aiocoap_error

from keybound.core.client_flow import AceClient, Reply, Send
from keybound.core.oscore_derivation import DerivedContext
from keybound.core.oscore_sequence import SequenceNumberReservation

from .oscore_contexts import DurableSecurityContext

log = logging.getLogger("keybound.client")

#: Sequence numbers reserved per durable write of the client-AS mark.
AS_SEQUENCE_CHUNK = 32
REQUEST_TIMEOUT = 30.0

_METHODS = {
    "GET": aiocoap.GET,
    "POST": aiocoap.POST,
    "PUT": aiocoap.PUT,
    "DELETE": aiocoap.DELETE,
    "FETCH": aiocoap.FETCH,
    "PATCH": aiocoap.PATCH,
    "IPATCH": aiocoap.iPATCH,
}


class PeerUnreachable(ConnectionError):
    """The AS or the RS did not answer (network failure, not a CoAP error response)."""


def _network_reason(exc: aiocoap_error.NetworkError) -> str:
    """Why a request got no answer, in words (aiocoap's own text names only the class)."""
    cause = exc.__cause__
    if isinstance(cause, OSError) and cause.strerror:
        return cause.strerror.split(" (")[0].lower()
    if isinstance(exc, aiocoap_error.TimeoutError):
        return "no answer in time"
    if isinstance(exc, aiocoap_error.ResolutionError):
        return "the host name does not resolve"
    return "no answer"


@dataclass(frozen=True)
class Endpoints:
    """Where the AS and the RS are: ``coap://host:port`` each, without a path."""

    as_uri: str
    rs_uri: str
    token_path: str = "token"  # noqa: S105 - a URI path, not a password
    authz_info_path: str = "authz-info"

    def uri(self, send: Send) -> str:
        base = self.as_uri if send.peer == "as" else self.rs_uri
        path = send.path.lstrip("/")
        if send.peer == "as" and path == "token":
            path = self.token_path.lstrip("/")
        elif send.peer == "rs" and path == "authz-info":
            path = self.authz_info_path.lstrip("/")
        return f"{base.rstrip('/')}/{path}"


def client_context(
    derived: DerivedContext,
    *,
    mark: int = 0,
    persist_mark: Callable[[int], None] | None = None,
    chunk: int = AS_SEQUENCE_CHUNK,
) -> DurableSecurityContext:
    """An aiocoap OSCORE context for the client side of ``derived``.

    With ``persist_mark`` the Sender Sequence Number starts at ``mark`` and every
    new chunk is written ahead through it; without, the context lives in memory.
    """
    if persist_mark is None:
        return DurableSecurityContext(
            derived,
            key_id=b"client",
            reservation=SequenceNumberReservation(0, chunk=1 << 20),
            persist_mark=lambda _mark: None,
            replay_window_known=True,
        )
    return DurableSecurityContext(
        derived,
        key_id=b"client-as",
        reservation=SequenceNumberReservation(mark, chunk=chunk),
        persist_mark=persist_mark,
        replay_window_known=True,
    )


class CoapAceClient:
    """One client's ACE state for one RS, performed with an aiocoap context."""

    def __init__(
        self,
        coap: aiocoap.Context,
        flow: AceClient,
        endpoints: Endpoints,
        as_context: DurableSecurityContext,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        on_step: Callable[[str], None] | None = None,
        rs_context: Callable[[DerivedContext], DurableSecurityContext] | None = None,
    ) -> None:
        self.coap = coap
        self.flow = flow
        self.endpoints = endpoints
        self.as_context = as_context
        self._monotonic = monotonic
        self._rs_context: DurableSecurityContext | None = None
        self._rs_for: DerivedContext | None = None
        self._make_rs_context = rs_context or client_context
        self._on_step = on_step or (lambda line: log.info("%s", line))
        self.exchanges: list[tuple[Send, Reply]] = []

    def _security_for(self, send: Send) -> DurableSecurityContext | None:
        if send.security == "as":
            return self.as_context
        if send.security == "rs":
            derived = self.flow.context
            if derived is None:  # pragma: no cover - the flow derives before it asks
                raise RuntimeError("the flow asked for the RS context before deriving it")
            if self._rs_context is None or self._rs_for is not derived:
                self._rs_context = self._make_rs_context(derived)
                self._rs_for = derived
            return self._rs_context
        return None

    async def perform(self, send: Send) -> Reply:
        """Send one request and return the reply as the flow sees it."""
        uri = self.endpoints.uri(send)
        message = aiocoap.Message(code=_METHODS[send.method.upper()], uri=uri, payload=send.payload)
        if send.content_format is not None:
            message.opt.content_format = send.content_format
        security = self._security_for(send)
        credentials = self.coap.client_credentials
        if security is not None:
            credentials[uri] = security
        else:
            credentials.pop(uri, None)
        try:
            response = await self.coap.request(message).response
        except aiocoap_error.NetworkError as exc:
            peer = "the AS" if send.peer == "as" else "the RS"
            raise PeerUnreachable(
                f"{peer} at {uri} is unreachable: {_network_reason(exc)}"
            ) from None
        except (aiocoap_error.Error, ValueError) as exc:
            if security is None:
                raise
            # An unprotected error or an unverifiable answer to a protected request.
            self._on_step(f"{send.method} {uri}: OSCORE exchange failed ({type(exc).__name__})")
            reply = Reply((4, 1))
        else:
            code = int(response.code)
            content_format = response.opt.content_format
            reply = Reply(
                (code >> 5, code & 0x1F),
                bytes(response.payload),
                int(content_format) if content_format is not None else None,
            )
        finally:
            if security is not None:
                credentials.pop(uri, None)
        protection = {"as": "OSCORE (client-AS)", "rs": "OSCORE (derived)", None: "plain CoAP"}
        self._on_step(f"{send.method} {uri} [{protection[send.security]}] -> {reply}")
        self.exchanges.append((send, reply))
        return reply

    async def request(
        self,
        method: str,
        path: str,
        payload: bytes = b"",
        *,
        content_format: int | None = None,
    ) -> Reply:
        """Run the whole flow for one request to the RS and return its reply."""
        flow = self.flow.request(
            method, path, payload, now=self._monotonic(), content_format=content_format
        )
        send = next(flow)
        while True:
            reply = await self.perform(send)
            try:
                send = flow.send(reply)
            except StopIteration as stop:
                result: Reply = stop.value
                return result


def response_text(reply: Reply) -> str:
    """A one-line rendering of a reply's payload for people."""
    if not reply.payload:
        return ""
    try:
        return reply.payload.decode("utf-8")
    except UnicodeDecodeError:
        return reply.payload.hex()


__all__ = [
    "AS_SEQUENCE_CHUNK",
    "CoapAceClient",
    "Endpoints",
    "PeerUnreachable",
    "client_context",
    "response_text",
]
