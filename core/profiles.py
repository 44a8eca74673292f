"""ACE profiles at the Resource Server: the :class:`Profile` protocol and its registry.

RFC 9200 leaves to a profile (§5.8.4.3, §5.10.1, §6.7) what the framework does not
fix. At the RS, a :class:`Profile` decides:

* which ``cnf`` methods bind the token to a proof-of-possession key, and which key
  that is (:meth:`Profile.pop_key`, :meth:`Profile.key_id`);
* whether the token must be encrypted for the RS because it carries a secret
  (:attr:`Profile.encrypted_token`);
* which ``/authz-info`` parameters the exchange needs besides the token, and what
  the RS answers (:meth:`Profile.read_exchange`, :meth:`Profile.context`,
  :meth:`Profile.response`);
* which security context the RS derives from all that (:meth:`Profile.derive`),
  when the ``/authz-info`` exchange sets it up (:attr:`Profile.derives_at_authz_info`;
  under EDHOC a later handshake does); a binding installs it (``keybound.coap.profiles``).

:data:`PROFILES` holds the implemented profiles, keyed by their number in the IANA
"ACE Profiles" registry (RFC 9200 §8.8). :func:`select_profile` picks one for a
token by its ``ace_profile`` claim; a token without one uses
:data:`DEFAULT_PROFILE`. Each profile is a module of its own with one entry here:
:mod:`keybound.core.oscore_profile` (RFC 9203) and :mod:`keybound.core.edhoc_profile`
(draft-ietf-ace-edhoc-oscore-profile-11).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Protocol

from .edhoc_profile import EDHOC_PROFILE
from .errors import IncompatibleAceProfiles
from .numbers.ace_profiles import AceProfile
from .oscore_profile import OSCORE_PROFILE
from .token_store import StoredToken

if TYPE_CHECKING:
    from .authz_info import AuthzInfoRequest
    from .oscore_derivation import DerivedContext
    from .token import AccessToken
    from .token_store import ContextParameters, PersistedContext, PopKey


class Profile(Protocol):
    """What one ACE profile decides at the RS (see the module docstring)."""

    @property
    def number(self) -> int:
        """The profile's number in the "ACE Profiles" registry (RFC 9200 §8.8)."""
        ...

    @property
    def encrypted_token(self) -> bool:
        """True when the token carries a secret for the RS and must be encrypted."""
        ...

    @property
    def derives_at_authz_info(self) -> bool:
        """True when the ``/authz-info`` exchange sets up the security context."""
        ...

    def pop_key(self, token: AccessToken) -> PopKey:
        """The PoP key ``token`` binds; :class:`IncompatibleAceProfiles` for another method."""
        ...

    def key_id(self, material: PopKey) -> bytes:
        """An identifier of the PoP key without its secret: one stored token per key."""
        ...

    def read_exchange(
        self, request: AuthzInfoRequest, payload: Mapping[object, object]
    ) -> AuthzInfoRequest:
        """``request`` with the profile's ``/authz-info`` parameters of ``payload``, checked."""
        ...

    def context(
        self, request: AuthzInfoRequest, *, server_id: bytes, random: Callable[[int], bytes]
    ) -> ContextParameters | None:
        """The parameters of this exchange: the client's, the RS's ``server_id``, fresh
        nonces; None for a profile whose context a later handshake sets up."""
        ...

    def restored(self, record: PersistedContext) -> ContextParameters | None:
        """The parameters of an exchange persisted before a restart, checked again."""
        ...

    def response(self, context: ContextParameters | None) -> bytes:
        """The payload of the RS's 2.01 (Created) to the ``/authz-info`` POST."""
        ...

    def derive(self, material: PopKey, context: ContextParameters) -> DerivedContext:
        """The RS's security context; refuses parameters it cannot be derived from."""
        ...


#: The implemented profiles by number (RFC 9200 §8.8).
PROFILES: Mapping[int, Profile] = MappingProxyType(
    {
        int(AceProfile.COAP_OSCORE): OSCORE_PROFILE,
        int(AceProfile.COAP_EDHOC_OSCORE): EDHOC_PROFILE,
    }
)
#: The profile of a token without ``ace_profile``: the one keybound's AS issues.
DEFAULT_PROFILE: int = int(AceProfile.COAP_OSCORE)


def select_profile(ace_profile: int | None, accepted: Iterable[int]) -> Profile:
    """The profile of a token with ``ace_profile`` at an RS that accepts ``accepted``.

    An absent claim means :data:`DEFAULT_PROFILE`. A profile the RS does not accept,
    or one keybound does not implement, is ``incompatible_ace_profiles``
    (:class:`IncompatibleAceProfiles`, 4.00, RFC 9200 §5.10.1.1).
    """
    if ace_profile is None:
        return PROFILES[DEFAULT_PROFILE]
    profile = PROFILES.get(ace_profile)
    if not isinstance(accepted, set | frozenset):  # a policy's is a frozenset already
        accepted = set(accepted)
    if profile is None or ace_profile not in accepted:
        raise IncompatibleAceProfiles(f"ACE profile {ace_profile} is not supported here")
    return profile


def derived_context(entry: StoredToken) -> DerivedContext:
    """The RS's security context parameters of ``entry``, derived once by its profile.

    Only for a token whose ``/authz-info`` exchange set up its context.
    """
    if entry.derived is None:
        if entry.context is None:
            raise ValueError("this token's security context is not set up at /authz-info")
        profile = PROFILES[entry.verified.profile]
        entry.derived = profile.derive(entry.verified.material, entry.context)
    return entry.derived


def candidate_profiles(accepted: Iterable[int]) -> tuple[Profile, ...]:
    """The profiles a token may select at an RS that accepts ``accepted``."""
    numbers = {DEFAULT_PROFILE, *(n for n in accepted if n in PROFILES)}
    return tuple(PROFILES[n] for n in sorted(numbers))


__all__ = [
    "DEFAULT_PROFILE",
    "PROFILES",
    "Profile",
    "candidate_profiles",
    "derived_context",
    "select_profile",
]
