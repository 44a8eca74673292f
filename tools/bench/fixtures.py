"""The token, keys and exchange that every ``keybound bench`` group measures.

One access token, as the AS issues it (``keybound.core.authz_server``): issuer,
one audience, ``exp`` an hour after ``iat``, a 16-byte ``cti``, a text scope, and
``cnf`` with the client's P-256 public key. For the OSCORE profile the same
claims carry ``cnf.osc`` instead: a 3-byte ``id`` and a 16-byte Master Secret.
The constants are public so that a test can build the same token on its own
and compare byte counts. Sizes do not depend on the key material or the time
(NumericDates of this century are 4-byte CBOR integers and 10 JSON digits).
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

from keybound.coap.oscore_contexts import DurableSecurityContext
from keybound.core.keys import Key
from keybound.core.numbers.cose_keys import Curve
from keybound.core.oscore_derivation import DerivedContext
from keybound.core.oscore_material import OscoreInputMaterial
from keybound.core.oscore_sequence import SequenceNumberReservation
from keybound.core.scope import TextScope
from keybound.core.token import AccessToken, Cnf, CnfKey, CnfOsc

ISSUER = "coap://as.example"
AUDIENCE = "rs.example"
SCOPE = "temp.read"
LIFETIME = 3600
#: ``iat`` of the size figures; timed figures use the current time.
SIZE_EPOCH = 1_750_000_000
CTI = bytes(range(0x10, 0x20))
#: Key identifiers: the AS signing key and the AS-RS symmetric key.
AS_SIGNING_KID = b"as1"
AS_RS_KID = b"rs1"
#: The OSCORE input material's ``id`` (3 bytes, as the AS draws it) and Master Secret.
OSC_ID = b"\x0a\x0b\x0c"
OSC_MS = bytes(range(16))
#: The ``/authz-info`` exchange: N1, ID1 (the client's default), N2, ID2 (the RS's first pick).
NONCE1 = bytes.fromhex("018a278f7faab55a")
CLIENT_ID = b"\x01"
NONCE2 = bytes.fromhex("25a8991cd700ac01")
SERVER_ID = b"\x00"
#: The CoAP request measured on the wire: a confirmable GET /temp, aiocoap's 2-byte token.
COAP_PATH = ("temp",)
COAP_MID = 0x2A2A
COAP_TOKEN = b"\x7a\x01"
#: Where the loopback figures' servers listen.
HOST = "127.0.0.1"


def sample_token(cnf: Cnf, *, now: int = SIZE_EPOCH) -> AccessToken:
    """The benchmark's access token with ``cnf``, issued at ``now``."""
    return AccessToken(
        iss=ISSUER,
        aud=(AUDIENCE,),
        exp=now + LIFETIME,
        iat=now,
        cti=CTI,
        scope=TextScope.parse(SCOPE),
        cnf=cnf,
    )


def sample_material() -> OscoreInputMaterial:
    return OscoreInputMaterial(id=OSC_ID, ms=OSC_MS)


def free_udp_port() -> int:
    """A UDP port on :data:`HOST` that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def client_oscore_context(derived: DerivedContext) -> DurableSecurityContext:
    """A client's OSCORE context for aiocoap, in memory (no sequence number file)."""
    return DurableSecurityContext(
        derived,
        key_id=b"client",
        reservation=SequenceNumberReservation(0, chunk=1 << 20),
        persist_mark=lambda _mark: None,
        replay_window_known=True,
    )


@dataclass(frozen=True)
class Keys:
    """Fresh keys for one run.

    The AS signing key (ES256), the AS-RS keys for AES-CCM-16-64-128 (16 bytes)
    and for HMAC 256/64 and HS256 (32 bytes, the size RFC 9053 §3.1 asks for),
    and the client's PoP key.
    """

    as_signing: Key
    as_rs: Key
    as_rs_mac: Key
    client_pop: Key

    @classmethod
    def generate(cls) -> Keys:
        return cls(
            as_signing=Key.generate_ec2(Curve.P_256, kid=AS_SIGNING_KID),
            as_rs=Key.generate_symmetric(16, random_bytes=os.urandom, kid=AS_RS_KID),
            as_rs_mac=Key.generate_symmetric(32, random_bytes=os.urandom, kid=AS_RS_KID),
            client_pop=Key.generate_ec2(Curve.P_256),
        )

    def key_token(self, *, now: int = SIZE_EPOCH) -> AccessToken:
        """The token bound to the client's public key (``cnf`` COSE_Key / JWK)."""
        return sample_token(CnfKey(self.client_pop.public_key()), now=now)

    @staticmethod
    def osc_token(*, now: int = SIZE_EPOCH) -> AccessToken:
        """The token carrying OSCORE input material (``cnf.osc``), for an RS."""
        return sample_token(CnfOsc(sample_material()), now=now)


__all__ = [
    "AS_RS_KID",
    "AS_SIGNING_KID",
    "AUDIENCE",
    "CLIENT_ID",
    "COAP_MID",
    "COAP_PATH",
    "COAP_TOKEN",
    "CTI",
    "HOST",
    "ISSUER",
    "LIFETIME",
    "NONCE1",
    "NONCE2",
    "OSC_ID",
    "OSC_MS",
    "SCOPE",
    "SERVER_ID",
    "SIZE_EPOCH",
    "Keys",
    "client_oscore_context",
    "free_udp_port",
    "sample_material",
    "sample_token",
]
