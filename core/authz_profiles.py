"""What an ACE profile decides at the Authorization Server (RFC 9200 §5.8.4.3, §5.8.4.5).

The profile a token is issued for decides the PoP key the AS binds when the
client sent no key of its own, and with it how the token is protected: a
``cnf`` carrying a secret is encrypted for the RS, a public-key ``cnf`` is
only signed (RFC 8392 §7.1). :class:`AsProfile` is that decision;
:data:`AS_PROFILES` holds one implementation per ACE profile number
(RFC 9200 §8.8), looked up with :func:`as_profile`.

* :class:`OscoreAsProfile`, ``coap_oscore`` (RFC 9203 §3.2): the AS makes
  OSCORE input material, a symmetric ``osc`` cnf, so the token is encrypted.
* :class:`EdhocAsProfile`, ``coap_edhoc_oscore`` (draft-ietf-ace-edhoc-oscore-profile-11
  §3): the token binds the client's registered EDHOC credential (``kccs``), which
  carries no secret, so the token is only signed; the response names the RS's
  credential (``rs_cnf``) and the token series (``edhoc_info``).

A profile without an implementation here (and a JWT, which names no profile)
gets the AS's generic binding: a symmetric key it makes. Which profiles an RS
speaks, and refusing one it does not, stays with the token request's checks
(:class:`~keybound.core.errors.IncompatibleAceProfiles`).
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from .edhoc_credentials import Ccs
from .errors import InvalidRequest, UnsupportedPopKey
from .keys import Key
from .numbers.ace_profiles import AceProfile
from .numbers.edhoc_profile import CLAIM_EDHOC_INFO, PARAM_EDHOC_INFO, EdhocInfo
from .oscore_material import OscoreInputMaterial
from .token import Cnf, CnfKccs, CnfOsc

__all__ = [
    "AS_PROFILES",
    "AsProfile",
    "EdhocAsProfile",
    "OscoreAsProfile",
    "PopBinding",
    "PopRequest",
    "as_profile",
]


@dataclass(frozen=True)
class PopRequest:
    """What a profile decides the PoP key from."""

    client_key: Key | None
    """The public key the client sent (``req_cnf``), if any."""
    automatic: bool
    """Whether the client left the kind of key to the AS."""
    random_bytes: Callable[[int], bytes] = field(repr=False)
    oscore_salt: bool = True
    """The AS's policy of a salt in OSCORE input material (RFC 9203 §3.2.1)."""
    credential: bytes | None = field(default=None, repr=False)
    """An EDHOC credential the client sent by value (``req_cnf`` ``kccs``)."""
    credential_kid: bytes | None = None
    """An EDHOC credential the client named by reference (``req_cnf`` ``kid``)."""
    registered_credential: bytes | None = field(default=None, repr=False)
    """The EDHOC credential the client is registered with at the AS, if any."""
    rs_credential: bytes | None = field(default=None, repr=False)
    """The RS's EDHOC credential, if the AS knows one."""


@dataclass(frozen=True)
class PopBinding:
    """The PoP key a token is bound to (RFC 8747 §3) and what follows from it."""

    cnf: Cnf = field(repr=False)
    encrypt: bool
    """Whether the token carries a secret and must be encrypted for the RS (RFC 8392 §7.1)."""
    cnf_id: bytes | None
    """What the issued token is recorded with as its PoP key's name."""
    osc: OscoreInputMaterial | None = field(default=None, repr=False)
    """OSCORE input material for the client (RFC 9203 §3.2.1)."""
    client_key: Key | None = field(default=None, repr=False)
    """A key the AS made for the client, returned to it."""
    rs_cnf: Cnf | None = field(default=None, repr=False)
    """The RS's authentication credential for the client (RFC 9201 §5, ``rs_cnf``)."""
    claims: Mapping[int, object] = field(default_factory=dict, repr=False)
    """CWT claims the profile adds to the token, e.g. ``edhoc_info``."""
    parameters: Mapping[int, object] = field(default_factory=dict, repr=False)
    """Parameters the profile adds to the token response, e.g. ``edhoc_info``."""


class AsProfile(Protocol):
    """An ACE profile's part in issuing a token at the AS."""

    @property
    def number(self) -> int:
        """The profile's IANA number (RFC 9200 §8.8)."""
        ...

    def bind(self, request: PopRequest) -> PopBinding | None:
        """The PoP binding this profile makes, or ``None`` for the AS's generic one."""
        ...


@dataclass(frozen=True)
class OscoreAsProfile:
    """The OSCORE profile (RFC 9203): the AS makes the OSCORE input material."""

    number: int = int(AceProfile.COAP_OSCORE)

    def bind(self, request: PopRequest) -> PopBinding | None:
        """An ``osc`` cnf (RFC 9203 §3.2.1): ``id`` 3 bytes, ``ms`` 16, ``salt`` 8 by policy.

        Only when the client sent no key and left the choice to the AS.
        """
        if request.client_key is not None or not request.automatic:
            return None
        random_bytes = request.random_bytes
        osc = OscoreInputMaterial(
            id=random_bytes(3),
            ms=random_bytes(16),
            salt=random_bytes(8) if request.oscore_salt else None,
        )
        return PopBinding(cnf=CnfOsc(osc), encrypt=True, cnf_id=osc.id, osc=osc)


@dataclass(frozen=True)
class EdhocAsProfile:
    """The EDHOC and OSCORE profile (draft-ietf-ace-edhoc-oscore-profile-11 §3).

    The token binds AUTH_CRED_C, the client's registered credential: sent by value
    (``kccs``) or named by its kid, or, without ``req_cnf``, the registered one.
    A credential the client is not registered with is declined (draft §3.1) with
    ``invalid_request`` (4.00, RFC 9200 §5.8.3): the AS has not validated it as
    the client's. A naked COSE_Key is ``unsupported_pop_key``: EDHOC does not take
    one (draft §3.1). Each token opens a new token series: ``edhoc_info`` carries
    a fresh random ``session_id`` (8 bytes).
    """

    number: int = int(AceProfile.COAP_EDHOC_OSCORE)

    def bind(self, request: PopRequest) -> PopBinding | None:
        if request.client_key is not None:
            raise UnsupportedPopKey(
                "the EDHOC profile binds a credential (kccs), not a naked COSE_Key",
                claim="req_cnf",
            )
        registered = request.registered_credential
        if registered is None:
            raise InvalidRequest("this client has no registered EDHOC credential", claim="req_cnf")
        own = Ccs.decode(registered)
        if request.credential is not None and not hmac.compare_digest(
            request.credential, registered
        ):
            raise InvalidRequest(
                "req_cnf names a credential this client is not registered with", claim="req_cnf"
            )
        if request.credential_kid is not None and not hmac.compare_digest(
            request.credential_kid, own.kid
        ):
            raise InvalidRequest(
                "req_cnf names a credential this client is not registered with", claim="req_cnf"
            )
        if request.rs_credential is None:
            raise InvalidRequest("the resource server has no EDHOC credential at this AS")
        session = {int(EdhocInfo.SESSION_ID): request.random_bytes(8)}
        return PopBinding(
            cnf=CnfKccs(registered),
            encrypt=False,
            cnf_id=own.fingerprint,
            rs_cnf=CnfKccs(request.rs_credential),
            claims={CLAIM_EDHOC_INFO: session},
            parameters={PARAM_EDHOC_INFO: session},
        )


AS_PROFILES: Mapping[int, AsProfile] = {
    profile.number: profile for profile in (OscoreAsProfile(), EdhocAsProfile())
}
"""The profiles with an AS-side implementation, by ACE profile number."""


def as_profile(number: int | None) -> AsProfile | None:
    """The implementation of ACE profile ``number``, or ``None`` (no profile, or none here)."""
    return None if number is None else AS_PROFILES.get(number)
