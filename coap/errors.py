"""CoAP error responses: a :class:`~keybound.core.errors.KeyboundError` as an aiocoap message.

:func:`error_response` is the one renderer of the AS's ``/token`` and
``/introspect``, the RS's ``/authz-info`` and protected resources, and the
block-wise upload bounds. The answer has the error's CoAP code and, as RFC 9200
§5.8.3 gives it for the token endpoint and §5.10.1 takes over for ``/authz-info``,
the CBOR error map (``error`` 30, ``error_description`` 31) in
``application/ace+cbor`` (Content-Format 19). The AS and the RS answer alike:
what differs between their errors is in the error classes (an ``access_denied``,
which the ACE registry lacks, is ``invalid_request`` over CoAP).

Options, where the error carries them: Size1 with the largest accepted body on a
4.13 (RFC 7252 §5.9.2.9, RFC 7959 §4), Max-Age with the seconds after which to
retry on a 5.03 (RFC 7252 §5.9.3.4).
"""

from __future__ import annotations

import aiocoap
from aiocoap.numbers.codes import Code

from keybound.core import cbor
from keybound.core.errors import (
    CoapCode,
    KeyboundError,
    PayloadTooLarge,
    TemporarilyUnavailable,
)
from keybound.core.numbers.ace_parameters import CONTENT_FORMAT_ACE_CBOR

__all__ = ["coap_code", "error_response"]


def coap_code(code: CoapCode) -> Code:
    """The aiocoap code of ``(class, detail)``: class in the top 3 bits (RFC 7252 §3)."""
    klass, detail = code
    return Code((klass << 5) | detail)


def error_response(err: KeyboundError, *, error_map: bool = True) -> aiocoap.Message:
    """The CoAP answer to ``err``: its code, its RFC 9200 §5.8.3 error map, its options.

    ``error_map=False`` answers with the code and options alone: the block-wise
    upload bound refuses one partial upload too many that way (5.03 with Max-Age,
    RFC 7252 §5.9.3.4), without a payload.
    """
    message = aiocoap.Message(code=coap_code(err.coap_code))
    if error_map:
        message.payload = cbor.dumps(err.to_cbor_map())
        message.opt.content_format = CONTENT_FORMAT_ACE_CBOR
    if isinstance(err, PayloadTooLarge) and err.limit is not None:
        message.opt.size1 = err.limit
    if isinstance(err, TemporarilyUnavailable) and err.retry_after is not None:
        message.opt.max_age = err.retry_after
    return message
