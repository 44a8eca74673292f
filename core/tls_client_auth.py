"""Mutual-TLS client authentication and certificate-bound tokens (RFC 8705), sans-IO.

Two ways for the AS to tell that a TLS client certificate is a client's (RFC 8705 §2):

- **PKI** (``tls_client_auth``, §2.1): the certificate chains to a configured
  trust anchor and names the client as registered: its subject distinguished
  name (``tls_client_auth_subject_dn``, compared as RFC 4514 strings) or one
  subject alternative name (``tls_client_auth_san_dns``, ``_san_uri``,
  ``_san_ip``, ``_san_email``, §2.1.2);
- **self-signed** (``self_signed_tls_client_auth``, §2.2): the certificate is
  the one registered for the client, compared by its SHA-256 thumbprint in
  constant time; its chain is not validated.

A token issued over such a connection is bound to the certificate with
``cnf`` ``x5t#S256``, the base64url SHA-256 of its DER encoding (§3.1); a
resource server compares that with the certificate of its own TLS connection
(:func:`check_certificate_binding`).

A :class:`TlsClientRegistration` is kept in the client record's ``credential``
bytes as a CBOR array whose first element is ``"rfc8705"`` (:meth:`~TlsClientRegistration.encode`);
an EDHOC credential there is a CBOR map, so the two never read as each other.
Time is a parameter; certificates are DER bytes.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final, Literal

import cbor2
from cryptography import x509
from cryptography.x509 import verification

from .errors import InvalidClient, InvalidToken
from .keys import b64u_encode

__all__ = [
    "MAX_CERTIFICATE_BYTES",
    "PKI",
    "SAN_KINDS",
    "SELF_SIGNED",
    "TlsClientRegistration",
    "certificate_thumbprint",
    "check_certificate_binding",
    "load_certificate",
]

#: RFC 8705 §2.1 and §2.2 ``token_endpoint_auth_method`` values.
PKI: Final = "tls_client_auth"
SELF_SIGNED: Final = "self_signed_tls_client_auth"
#: The subject alternative name kinds of RFC 8705 §2.1.2.
SAN_KINDS: Final = ("dns", "uri", "ip", "email")
#: Largest client certificate read, in bytes of DER.
MAX_CERTIFICATE_BYTES: Final = 16 * 1024
_MARK: Final = "rfc8705"

Method = Literal["tls_client_auth", "self_signed_tls_client_auth"]


def certificate_thumbprint(der: bytes) -> str:
    """``x5t#S256`` (RFC 8705 §3.1): base64url of the SHA-256 of the DER certificate."""
    return b64u_encode(hashlib.sha256(der).digest())


def load_certificate(der: bytes) -> x509.Certificate:
    """Parse a DER certificate, bounded by :data:`MAX_CERTIFICATE_BYTES`; ``ValueError`` if bad."""
    if len(der) > MAX_CERTIFICATE_BYTES:
        raise ValueError(f"the certificate is larger than {MAX_CERTIFICATE_BYTES} bytes")
    return x509.load_der_x509_certificate(der)


def check_certificate_binding(x5t_s256: str, der: bytes | None) -> None:
    """Refuse unless the connection's certificate ``der`` is the one the token is bound to
    (RFC 8705 §3: 401 ``invalid_token``)."""
    if der is None:
        raise InvalidToken("the access token is certificate-bound; no client certificate was sent")
    if not hmac.compare_digest(certificate_thumbprint(der).encode(), x5t_s256.encode()):
        raise InvalidToken("the access token is bound to another client certificate (RFC 8705 §3)")


def _san_values(certificate: x509.Certificate, kind: str) -> list[str]:
    try:
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    if kind == "dns":
        return list(names.get_values_for_type(x509.DNSName))
    if kind == "uri":
        return list(names.get_values_for_type(x509.UniformResourceIdentifier))
    if kind == "email":
        return list(names.get_values_for_type(x509.RFC822Name))
    return [str(address) for address in names.get_values_for_type(x509.IPAddress)]


@dataclass(frozen=True)
class TlsClientRegistration:
    """How a client authenticates with its TLS certificate (RFC 8705 §2).

    ``self_signed_tls_client_auth``: ``certificate`` is the registered DER
    certificate. ``tls_client_auth``: exactly one of ``subject_dn`` or
    ``san`` (a ``(kind, value)`` pair, kind one of :data:`SAN_KINDS`).
    """

    method: Method
    certificate: bytes | None = None
    subject_dn: str | None = None
    san: tuple[str, str] | None = None

    def __post_init__(self) -> None:
        if self.method == SELF_SIGNED:
            if self.certificate is None or self.subject_dn is not None or self.san is not None:
                raise ValueError("a self-signed registration holds the certificate only")
            load_certificate(self.certificate)
        elif self.method == PKI:
            if self.certificate is not None or (self.subject_dn is None) == (self.san is None):
                raise ValueError("a PKI registration names a subject DN or one SAN")
            if self.san is not None:
                if self.san[0] not in SAN_KINDS:
                    raise ValueError(f"the SAN kind must be one of {SAN_KINDS}")
                if self.san[0] == "ip":
                    ipaddress.ip_address(self.san[1])
        else:
            raise ValueError(f"unknown TLS client authentication method {self.method!r}")

    @property
    def thumbprint(self) -> str | None:
        """The registered certificate's ``x5t#S256`` (self-signed registrations)."""
        return None if self.certificate is None else certificate_thumbprint(self.certificate)

    def encode(self) -> bytes:
        """The bytes kept in the client record's ``credential``."""
        body: dict[str, object] = {}
        if self.certificate is not None:
            body["certificate"] = self.certificate
        if self.subject_dn is not None:
            body["subject_dn"] = self.subject_dn
        if self.san is not None:
            body["san"] = list(self.san)
        return bytes(cbor2.dumps([_MARK, self.method, body]))

    @classmethod
    def decode(cls, data: bytes | None) -> TlsClientRegistration | None:
        """The registration in a client record's ``credential``; None when it holds none."""
        if not data or data[0] >> 5 != 4:  # CBOR major type 4: an array
            return None
        try:
            mark, method, body = cbor2.loads(data)
        except (ValueError, TypeError, cbor2.CBORDecodeError):
            return None
        if mark != _MARK or not isinstance(body, dict):
            return None
        san = body.get("san")
        return cls(
            method=method,
            certificate=body.get("certificate"),
            subject_dn=body.get("subject_dn"),
            san=None if san is None else (str(san[0]), str(san[1])),
        )

    def authenticate(
        self,
        der: bytes | None,
        *,
        chain: Sequence[bytes] = (),
        trust_anchors: Sequence[x509.Certificate] = (),
        now: int,
    ) -> str:
        """Check the client's TLS certificate ``der`` (RFC 8705 §2.1, §2.2); its ``x5t#S256``.

        ``chain`` holds intermediate certificates the client sent, ``trust_anchors``
        the CA certificates PKI clients must chain to. Raises
        :class:`~keybound.core.errors.InvalidClient`.
        """
        if der is None:
            raise InvalidClient("this client authenticates with a TLS client certificate")
        try:
            certificate = load_certificate(der)
        except ValueError:
            raise InvalidClient("the TLS client certificate does not parse") from None
        if self.method == SELF_SIGNED:
            assert self.certificate is not None
            if not hmac.compare_digest(
                hashlib.sha256(der).digest(), hashlib.sha256(self.certificate).digest()
            ):
                raise InvalidClient("the TLS client certificate is not the registered one")
            return certificate_thumbprint(der)
        self._verify_chain(certificate, chain, trust_anchors, now)
        if self.subject_dn is not None:
            if certificate.subject.rfc4514_string() != self.subject_dn:
                raise InvalidClient("the TLS client certificate names another subject")
        else:
            assert self.san is not None
            kind, value = self.san
            if value not in _san_values(certificate, kind):
                raise InvalidClient(f"the TLS client certificate lacks the {kind} SAN {value!r}")
        return certificate_thumbprint(der)

    @staticmethod
    def _verify_chain(
        certificate: x509.Certificate,
        chain: Sequence[bytes],
        trust_anchors: Sequence[x509.Certificate],
        now: int,
    ) -> None:
        if not trust_anchors:
            raise InvalidClient("no trust anchor is configured for PKI client certificates")
        try:
            intermediates = [load_certificate(item) for item in chain[:8]]
            verifier = (
                verification.PolicyBuilder()
                .store(verification.Store(list(trust_anchors)))
                .time(datetime.fromtimestamp(now, tz=UTC))
                .build_client_verifier()
            )
            verifier.verify(certificate, intermediates)
        except (ValueError, verification.VerificationError) as err:
            raise InvalidClient(
                f"the TLS client certificate does not chain to a trusted CA: {err}"
            ) from None
