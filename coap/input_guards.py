"""Guards for hostile datagrams that aiocoap 0.4 lets through as exceptions.

Found by fuzzing whole CoAP datagrams against the servers (``tests/test_fuzz_coap.py``):

* A string option (Uri-Path, Uri-Host, ...) that is not valid UTF-8 makes
  ``aiocoap.Message.decode`` raise ``UnicodeDecodeError`` where the UDP
  transport only expects ``UnparsableMessage``; the exception escapes into
  the event loop, which logs a traceback for every such datagram (a cheap
  log flood). :func:`harden_message_decoding` turns any decoding failure into
  ``UnparsableMessage``, which the transport ignores (RFC 7252 §4.2 allows a
  malformed message to be silently dropped).
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
"""

from __future__ import annotations

import struct
from typing import Any

import aiocoap
from aiocoap import error, oscore
from aiocoap.message import Message
from aiocoap.oscore_sitewrapper import OscoreSiteWrapper

_MARK = "_keybound_hardened"


def harden_message_decoding() -> None:
    """Make ``aiocoap.Message.decode`` raise only ``UnparsableMessage`` (idempotent)."""
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


class StrictOscoreSiteWrapper(OscoreSiteWrapper):  # type: ignore[misc]
    """An ``OscoreSiteWrapper`` that refuses a malformed OSCORE option with 4.02, not 5.00."""

    async def render_to_pipe(self, pipe: Any) -> None:
        request = pipe.request
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


__all__ = ["StrictOscoreSiteWrapper", "harden_message_decoding"]
