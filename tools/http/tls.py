"""The TLS client certificate of an HTTP request, for certificate-bound tokens (RFC 8705).

ASGI defines a ``tls`` extension (the ASGI TLS extension specification) in
which a server hands the application the connection's certificates:
``scope["extensions"]["tls"]["client_cert_chain"]``, PEM strings, the client's
own first. Hypercorn fills it in; **uvicorn does not** (it passes no TLS
details to the application at all, even with ``ssl_cert_reqs`` set, though it
does check the client certificate during the handshake). Three ways to get
the certificate, in the order of preference:

- :class:`TlsExtensionH11Protocol`: uvicorn's h11 protocol that adds the
  ``tls`` extension to each request's scope from the connection's SSL object
  (``uvicorn.Config(..., http=TlsExtensionH11Protocol)``), then
  :func:`tls_extension_certificate` reads it. This is what the AS's HTTPS
  front uses, and what a resource server on uvicorn should use;
- a server that provides the extension itself: :func:`tls_extension_certificate`;
- behind a TLS-terminating proxy that checked the certificate and passes it
  on in a header it always overwrites (nginx: ``proxy_set_header
  X-Client-Cert $ssl_client_escaped_cert;``): :func:`trusted_header_certificate`.
  Off unless configured: a client that can reach the application directly
  could set that header itself.

Each returns the DER certificate or ``None``; a certificate larger than
:data:`~keybound.core.tls_client_auth.MAX_CERTIFICATE_BYTES` or that does not
parse is ``None`` too.
"""

from __future__ import annotations

import base64
import binascii
import ssl
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import unquote

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from uvicorn.protocols.http.h11_impl import H11Protocol

from keybound.core.tls_client_auth import MAX_CERTIFICATE_BYTES

__all__ = [
    "TlsExtensionH11Protocol",
    "tls_extension_certificate",
    "trusted_header_certificate",
    "with_tls_extension",
]

Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Any, Any], Awaitable[None]]

#: ASGI TLS extension ``tls_version`` values (the TLS protocol version numbers).
_TLS_VERSIONS = {"TLSv1.2": 0x0303, "TLSv1.3": 0x0304}
_MAX_PEM = 4 * MAX_CERTIFICATE_BYTES


def _pem_to_der(pem: str) -> bytes | None:
    if len(pem) > _MAX_PEM:
        return None
    try:
        certificate = x509.load_pem_x509_certificate(pem.encode("ascii"))
    except (ValueError, UnicodeEncodeError):
        return None
    der = certificate.public_bytes(Encoding.DER)
    return der if len(der) <= MAX_CERTIFICATE_BYTES else None


def tls_extension_certificate(scope: Scope) -> bytes | None:
    """The client certificate of the ASGI ``tls`` extension (first of ``client_cert_chain``)."""
    extensions = scope.get("extensions") or {}
    tls = extensions.get("tls") if isinstance(extensions, dict) else None
    if not isinstance(tls, dict):
        return None
    chain = tls.get("client_cert_chain")
    if not chain or not isinstance(chain[0], str):
        return None
    return _pem_to_der(chain[0])


def trusted_header_certificate(name: str) -> Callable[[Scope], bytes | None]:
    """A source reading the certificate from header ``name`` set by a TLS-terminating
    proxy: URL-encoded PEM (nginx ``$ssl_client_escaped_cert``) or base64 DER.

    Only for an application that nothing but that proxy can reach, and a proxy
    that replaces the header on every request.
    """
    wanted = name.lower().encode("latin-1")

    def read(scope: Scope) -> bytes | None:
        values = [value for key, value in scope["headers"] if key.lower() == wanted]
        if len(values) != 1 or len(values[0]) > _MAX_PEM:
            return None
        text = unquote(values[0].decode("latin-1")).strip()
        if text.startswith("-----BEGIN"):
            return _pem_to_der(text)
        try:
            der = base64.b64decode(text, validate=True)
            x509.load_der_x509_certificate(der)
        except (binascii.Error, ValueError):
            return None
        return der if len(der) <= MAX_CERTIFICATE_BYTES else None

    return read


def with_tls_extension(app: ASGIApp, ssl_object: ssl.SSLObject | ssl.SSLSocket) -> ASGIApp:
    """``app`` with the ASGI ``tls`` extension of one connection added to each scope."""
    der = ssl_object.getpeercert(binary_form=True)
    chain: list[str] = []
    name: str | None = None
    if der:
        certificate = x509.load_der_x509_certificate(der)
        chain = [certificate.public_bytes(Encoding.PEM).decode("ascii")]
        name = certificate.subject.rfc4514_string()
    tls = {
        "server_cert": None,
        "client_cert_chain": chain,
        "client_cert_name": name,
        "client_cert_error": None,
        "tls_version": _TLS_VERSIONS.get(ssl_object.version() or ""),
        "cipher_suite": None,
    }

    async def wrapped(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] in ("http", "websocket"):
            extensions = dict(scope.get("extensions") or {})
            extensions["tls"] = tls
            scope = {**scope, "extensions": extensions}
        await app(scope, receive, send)

    return wrapped


class TlsExtensionH11Protocol(H11Protocol):
    """uvicorn's h11 protocol giving the application the ASGI ``tls`` extension.

    asyncio calls ``connection_made`` once the TLS handshake is done, so the
    peer certificate is known there; each request of the connection then sees
    it in ``scope["extensions"]["tls"]``. Plain HTTP connections are unchanged.
    """

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None:
            self.app = with_tls_extension(self.app, ssl_object)
