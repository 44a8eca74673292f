"""The AS's HTTPS token endpoint with client certificates (RFC 8705 §2): its TLS trust.

Python's TLS layer checks a client certificate during the handshake against
the certificates it trusts (uvicorn ``ssl_ca_certs``) and has no hook to take
one it cannot check. So the trust file handed to uvicorn holds the CA
certificates of PKI clients (``--client-ca``, §2.1) and, as trust anchors of
their own, the registered certificates of self-signed clients (§2.2). The AS
then decides which client a certificate is: the chain and the registered
subject DN or SAN for PKI clients, the exact certificate for self-signed ones
(:class:`keybound.core.tls_client_auth.TlsClientRegistration`). A self-signed
client registered while the AS runs is trusted after a restart.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from keybound.core.authz_store import AuthzStore, Client, ClientRegistration
from keybound.core.tls_client_auth import PKI, SELF_SIGNED, TlsClientRegistration
from keybound.tools.authz_server.http import MutualTlsPolicy

__all__ = ["add_tls_client", "mutual_tls_trust", "tls_registration"]


def mutual_tls_trust(
    store: AuthzStore, client_ca: str | None, state_dir: Path
) -> tuple[MutualTlsPolicy, Path]:
    """The token endpoint's :class:`MutualTlsPolicy` and the trust file for uvicorn.

    ``client_ca`` is a PEM file of the CA certificates PKI clients chain to (or
    None); the file written to ``state_dir`` adds the certificate of every
    self-signed client. Raises ``ValueError`` when nothing at all is trusted.
    """
    anchors: list[x509.Certificate] = []
    if client_ca is not None:
        anchors = x509.load_pem_x509_certificates(Path(client_ca).read_bytes())
    pems = [anchor.public_bytes(Encoding.PEM) for anchor in anchors]
    for client in store.list_clients():
        registration = TlsClientRegistration.decode(client.credential)
        if registration is not None and registration.method == SELF_SIGNED:
            assert registration.certificate is not None
            certificate = x509.load_der_x509_certificate(registration.certificate)
            pems.append(certificate.public_bytes(Encoding.PEM))
    if not pems:
        raise ValueError(
            "mutual TLS needs --client-ca or a client registered with a self-signed certificate"
        )
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / "tls-client-trust.pem"
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as out:
        out.write(b"".join(pems))
    return MutualTlsPolicy(trust_anchors=tuple(anchors)), path


def tls_registration(
    *, self_signed: bytes | None = None, subject_dn: str | None = None, san: str | None = None
) -> TlsClientRegistration:
    """A registration from the ``as client add-tls`` options: a self-signed certificate
    (PEM or DER bytes, §2.2), or a subject DN or ``KIND=VALUE`` SAN (§2.1.2).
    Raises ``ValueError`` unless exactly one is given and usable."""
    if sum(value is not None for value in (self_signed, subject_dn, san)) != 1:
        raise ValueError("give one of a self-signed certificate, a subject DN or a SAN")
    if self_signed is not None:
        if self_signed.lstrip().startswith(b"-----BEGIN"):
            der = x509.load_pem_x509_certificate(self_signed).public_bytes(Encoding.DER)
        else:
            der = self_signed
        return TlsClientRegistration(method=SELF_SIGNED, certificate=der)
    if subject_dn is not None:
        return TlsClientRegistration(method=PKI, subject_dn=subject_dn)
    assert san is not None
    kind, sep, value = san.partition("=")
    if not sep or not value:
        raise ValueError("a SAN is KIND=VALUE, KIND one of dns, uri, ip, email")
    return TlsClientRegistration(method=PKI, san=(kind.lower(), value))


def add_tls_client(
    store: AuthzStore,
    client_id: str,
    grants: dict[str, list[str]],
    registration: TlsClientRegistration,
) -> Client:
    """Register an HTTP client that authenticates with its TLS certificate (RFC 8705 §2).

    It has no OSCORE context and no secret; the registration is kept in the
    client record's ``credential`` (see :mod:`keybound.core.tls_client_auth`).
    """
    return store.add_client(
        ClientRegistration(client_id=client_id, grants=grants, credential=registration.encode())
    )
