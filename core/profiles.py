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
* which security context the RS derives from all that (:meth:`Profile.derive`);
  a binding installs it (``keybound.coap.profiles``).

:data:`PROFILES` holds the implemented profiles, keyed by their number in the IANA
"ACE Profiles" registry (RFC 9200 §8.8). :func:`select_profile` picks one for a
token by its ``ace_profile`` claim; a token without one uses
:data:`DEFAULT_PROFILE`. Another profile is added beside the OSCORE one, as a
module of its own with one entry here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Protocol

from .errors import IncompatibleAceProfiles
from .numbers.ace_profiles import AceProfile
from .oscore_profile import OSCORE_PROFILE

if TYPE_CHECKING:
    from .authz_info import AuthzInfoRequest
    from .oscore_derivation import DerivedContext
    from .oscore_material import OscoreInputMaterial
    from .token import AccessToken
    from .token_store import ContextParameters, PersistedContext


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

    def pop_key(self, token: AccessToken) -> OscoreInputMaterial:
        """The PoP key ``token`` binds; :class:`IncompatibleAceProfiles` for another method."""
        ...

    def key_id(self, material: OscoreInputMaterial) -> bytes:
        """An identifier of the PoP key without its secret: one stored token per key."""
        ...

    def read_exchange(
        self, request: AuthzInfoRequest, payload: Mapping[object, object]
    ) -> AuthzInfoRequest:
        """``request`` with the profile's ``/authz-info`` parameters of ``payload``, checked."""
        ...

    def context(
        self, request: AuthzInfoRequest, *, server_id: bytes, random: Callable[[int], bytes]
    ) -> ContextParameters:
        """The parameters of this exchange: the client's, the RS's ``server_id``, fresh nonces."""
        ...

    def restored(self, record: PersistedContext) -> ContextParameters:
        """The parameters of an exchange persisted before a restart, checked again."""
        ...

    def response(self, context: ContextParameters) -> bytes:
        """The payload of the RS's 2.01 (Created) to the ``/authz-info`` POST."""
        ...

    def derive(self, material: OscoreInputMaterial, context: ContextParameters) -> DerivedContext:
        """The RS's security context; refuses parameters it cannot be derived from."""
        ...


#: The implemented profiles by number (RFC 9200 §8.8).
PROFILES: Mapping[int, Profile] = MappingProxyType({int(AceProfile.COAP_OSCORE): OSCORE_PROFILE})
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
    if profile is None or ace_profile not in set(accepted):
        raise IncompatibleAceProfiles(f"ACE profile {ace_profile} is not supported here")
    return profile


def candidate_profiles(accepted: Iterable[int]) -> tuple[Profile, ...]:
    """The profiles a token may select at an RS that accepts ``accepted``."""
    numbers = {DEFAULT_PROFILE, *(n for n in accepted if n in PROFILES)}
    return tuple(PROFILES[n] for n in sorted(numbers))


__all__ = ["DEFAULT_PROFILE", "PROFILES", "Profile", "candidate_profiles", "select_profile"]
