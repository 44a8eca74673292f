"""Token introspection at the AS for a resource server that is online (RFC 9200 §5.9).

An RS checks every token on its own; when it can reach the AS it may also ask
whether the token is still active (not revoked). The request is
``POST /introspect`` with ``{11 (token): bstr}`` in ``application/ace+cbor``,
protected with the RS's OSCORE context with the AS (from its bundle); the answer
holds ``active`` (10) and, when active, the token's claims. What the answer means
for the token is decided by the core's ``/authz-info`` flow
(:meth:`keybound.core.resource_server.ResourceServer.authz_info`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import aiocoap
from aiocoap import error as aiocoap_error

from keybound.core import cbor
from keybound.core.errors import TemporarilyUnavailable
from keybound.core.numbers.ace_parameters import CONTENT_FORMAT_ACE_CBOR, IntrospectionParameter

from .oscore_contexts import DurableSecurityContext

DEFAULT_TIMEOUT = 5.0
MAX_RESPONSE = 4096


class AsUnreachable(TemporarilyUnavailable):
    """the AS could not be asked about the token"""


class Introspector:
    """Asks the AS whether a token is active, over the RS's OSCORE context with the AS."""

    def __init__(
        self, uri: str, context: DurableSecurityContext, *, timeout: float = DEFAULT_TIMEOUT
    ) -> None:
        self.uri = uri
        self.context = context
        self.timeout = timeout
        self._coap: aiocoap.Context | None = None

    async def _client(self) -> aiocoap.Context:
        # A client context of its own: the RS's server context sends no OSCORE requests.
        if self._coap is None:
            self._coap = await aiocoap.Context.create_client_context()
            self._coap.client_credentials[self.uri] = self.context
        return self._coap

    async def close(self) -> None:
        if self._coap is not None:
            await self._coap.shutdown()
            self._coap = None

    async def introspect(self, token: bytes) -> Mapping[int, Any]:
        """The AS's introspection answer; raises :class:`AsUnreachable` when there is none."""
        request = aiocoap.Message(
            code=aiocoap.POST,
            uri=self.uri,
            payload=cbor.dumps({int(IntrospectionParameter.TOKEN): token}),
            content_format=CONTENT_FORMAT_ACE_CBOR,
        )
        coap = await self._client()
        try:
            response = await asyncio.wait_for(coap.request(request).response, self.timeout)
        except (aiocoap_error.Error, OSError, TimeoutError) as exc:
            raise AsUnreachable(f"introspection failed: {type(exc).__name__}") from exc
        if not response.code.is_successful():
            raise AsUnreachable(f"the AS answered introspection with {response.code}")
        body = cbor.loads(bytes(response.payload), max_size=MAX_RESPONSE)
        if not isinstance(body, dict) or not isinstance(body.get(10), bool):
            raise AsUnreachable("the AS's introspection answer has no 'active' flag")
        return body


__all__ = ["AsUnreachable", "Introspector"]
