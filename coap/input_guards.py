"""Guards for hostile datagrams that aiocoap 0.4 lets through as exceptions.

Found by fuzzing whole CoAP datagrams against the servers (``tests/test_fuzz_coap.py``):

* A string option (Uri-Path, Uri-Host, ...) that is not valid UTF-8 makes
  ``aiocoap.Message.decode`` raise ``UnicodeDecodeError`` where the UDP
  transport only expects ``UnparsableMessage``; the exception escapes into
  the event loop, which logs a traceback for every such datagram (a cheap
  log flood). :func:`harden_message_decoding`, installed once when a server
  starts, turns any decoding failure into ``UnparsableMessage``, which the
  transport ignores (RFC 7252 §4.2 allows a malformed message to be silently
  dropped).
* A malformed OSCORE option (RFC 8613 §6.1: a Partial IV announced but not
  present, reserved flag bits) makes ``oscore.verify_start`` raise
  ``oscore.DecodeError`` before :class:`aiocoap.oscore_sitewrapper.OscoreSiteWrapper`
  guards its errors, so the request was answered 5.00 with a traceback in the
  log; a kid context hint announced but absent raised ``IndexError`` there;
  and the Group OSCORE flag (draft-ietf-core-oscore-groupcomm) on a request for
  a pairwise context raised ``AttributeError`` inside aiocoap's unprotection.
  :class:`StrictOscoreSiteWrapper` answers all of them 4.02 Bad Option (RFC 8613
  §8.2 step 2) to a confirmable request and ignores a non-confirmable one, as
  the wrapper does for the errors it catches itself. keybound has no group
  contexts, so the group flag is always refused.
* A block-wise body was reassembled without a bound (a 20 MB upload to the AS's
  ``/token`` was taken block by block). Resources added with
  :meth:`StrictOscoreSiteWrapper.add_bounded` refuse a request that announces
  (Size1) or reaches past their bound with 4.13 and Size1, before OSCORE is
  tried and before the block is stored (RFC 7959 §2.9.3, §4); the partial
  uploads are counted per peer and in total (:mod:`keybound.coap.upload_limits`).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any, Protocol

import aiocoap
from aiocoap import error, oscore
from aiocoap.message import Message
from aiocoap.numbers.optionnumbers import OptionNumber
from aiocoap.oscore_sitewrapper import OscoreSiteWrapper

from .upload_limits import OSCORE_OVERHEAD, UploadTracker, bound_uploads, refuse_oversized

_MARK = "_keybound_hardened"


def harden_message_decoding() -> None:
    """Make ``aiocoap.Message.decode`` raise only ``UnparsableMessage``: process-wide, idempotent.

    A server calls this once, explicitly, when it starts serving (the RS in
    :meth:`~keybound.coap.resource_server_site.ResourceServerSite.serve`, the AS
    when it builds its site), never from a constructor: building a site or a
    context changes nothing global.

    Why a process-wide hook: aiocoap 0.4's UDP transport decodes each datagram
    with ``Message.decode`` in its receive callback, before any site, resource or
    context of ours is reached, and offers no parameter to decode otherwise. A
    datagram that fails there with anything but ``UnparsableMessage`` escapes into
    the event loop. Wrapping the classmethod once is the only way in; the wrapper
    changes nothing for a well-formed message, and every other failure of a
    malformed one becomes the ``UnparsableMessage`` aiocoap already ignores, so
    other users of aiocoap in the same process see the same messages decoded.
    """
    if getattr(Message, _MARK, False):
        return
    original = Message.decode.__func__

    def decode(cls: Any, rawdata: bytes, remote: Any = None) -> Any:
        try:
            return original(cls, rawdata, remote)
        except error.UnparsableMessage:
            raise
        except (ValueError, TypeError, IndexError, struct.error) as exc:
            # UnicodeDecodeError is a ValueError; none of these carry peer data worth logging
            raise error.UnparsableMessage(
                f"malformed CoAP message ({type(exc).__name__})"
            ) from None

    Message.decode = classmethod(decode)
    setattr(Message, _MARK, True)


class EdhocHandler(Protocol):
    """What serves the EDHOC resource (``keybound.coap.edhoc_responder``)."""

    async def render(self, request: aiocoap.Message) -> aiocoap.Message: ...


class StrictOscoreSiteWrapper(OscoreSiteWrapper):  # type: ignore[misc]
    """An ``OscoreSiteWrapper`` that refuses a malformed OSCORE option with 4.02, not 5.00.

    Resources added with :meth:`add_bounded` take bodies up to their bound only
    (an unprotected request is checked by the resource's bounded spool, before
    anything is stored). A protected request, whose Uri-Path is encrypted, is
    refused with 4.13 and Size1 before it is unprotected if it passes the largest
    bound plus :data:`OSCORE_OVERHEAD`; its inner blocks then meet their
    resource's spool. ``uploads`` counts the partial uploads of all of them.
    """

    def __init__(self, inner_site: Any, server_credentials: Any) -> None:
        super().__init__(inner_site, server_credentials)
        #: The partial Block1 uploads held by the site's resources.
        self.uploads = UploadTracker()
        self._bounds: dict[tuple[str, ...], int] = {}
        #: What answers ``/.well-known/edhoc`` (RFC 9528 Appendix A.2); None: 4.04.
        self.edhoc: EdhocHandler | None = None

    async def _render_edhoc_to_pipe(self, pipe: Any) -> None:
        """``/.well-known/edhoc``: through :attr:`edhoc`, one datagram, known options only."""
        request = pipe.request
        if self.edhoc is None:
            raise error.NotFound
        if request.opt.block1 is not None:
            response = aiocoap.Message(code=aiocoap.REQUEST_ENTITY_TOO_LARGE)
            response.opt.size1 = len(request.payload)
            pipe.add_response(response, is_last=True)
            return
        known = (OptionNumber.URI_PATH, OptionNumber.URI_HOST)
        if any(o.number.is_critical() and o.number not in known for o in request.opt.option_list()):
            raise error.BadOption
        pipe.add_response(await self.edhoc.render(request), is_last=True)

    def add_bounded(self, path: Sequence[str], resource: Any, max_body: int) -> None:
        """Add ``resource`` at ``path`` to the inner site, taking bodies of ``max_body`` bytes."""
        self._inner_site.add_resource(list(path), bound_uploads(resource, max_body, self.uploads))
        self._bounds[tuple(path)] = max_body

    @property
    def max_body(self) -> int:
        """The largest body any bounded resource takes."""
        return max(self._bounds.values(), default=0)

    async def render_to_pipe(self, pipe: Any) -> None:
        request = pipe.request
        if self._bounds and request.opt.oscore is not None:
            refuse_oversized(request, self.max_body + OSCORE_OVERHEAD)
        try:
            oscore.verify_start(request)
            option = request.opt.oscore or b""
            if option and option[0] & oscore.COMPRESSION_BIT_GROUP:
                raise oscore.DecodeError("Group OSCORE is not supported")
        except oscore.NotAProtectedMessage:
            pass
        except (oscore.DecodeError, IndexError, ValueError):
            if request.mtype == aiocoap.CON:
                raise error.BadOption("Failed to decode the OSCORE option") from None
            return
        await super().render_to_pipe(pipe)


__all__ = ["EdhocHandler", "StrictOscoreSiteWrapper", "harden_message_decoding"]
