"""What an ACE profile decides at the Authorization Server (RFC 9200 §5.8.4.3, §5.8.4.5).

The profile a token is issued for decides the PoP key the AS binds when the
client sent no key of its own, and with it how the token is protected: a
``cnf`` carrying a secret is encrypted for the RS, a public-key ``cnf`` is
only signed (RFC 8392 §7.1). :class:`AsProfile` is that decision;
:data:`AS_PROFILES` holds one implementation per ACE profile number
(RFC 9200 §8.8), looked up with :func:`as_profile`.

* :class:`OscoreAsProfile`, ``coap_oscore`` (RFC 9203 §3.2): the AS makes
  OSCORE input material, a symmetric ``osc`` cnf, so the token is encrypted.

A profile without an implementation here (and a JWT, which names no profile)
gets the AS's generic binding: a symmetric key it makes. Which profiles an RS
speaks, and refusing one it does not, stays with the token request's checks
(:class:`~keybound.core.errors.IncompatibleAceProfiles`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from .keys import Key
from .numbers.ace_profiles import AceProfile
from .oscore_material import OscoreInputMaterial
from .token import Cnf, CnfOsc

__all__ = [
    "AS_PROFILES",
    "AsProfile",
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


AS_PROFILES: Mapping[int, AsProfile] = {profile.number: profile for profile in (OscoreAsProfile(),)}
"""The profiles with an AS-side implementation, by ACE profile number."""


def as_profile(number: int | None) -> AsProfile | None:
    """The implementation of ACE profile ``number``, or ``None`` (no profile, or none here)."""
    return None if number is None else AS_PROFILES.get(number)
