"""The OSCORE profile of ACE (RFC 9203) at the Resource Server.

:class:`OscoreProfile` implements :class:`~keybound.core.profiles.Profile`:

* ``cnf``: the ``osc`` method only, OSCORE input material (RFC 9203 §3.2.1);
  the PoP key is identified by :func:`~keybound.core.token_store.pop_key_id`.
* The token carries the OSCORE Master Secret, so it must be encrypted for the RS
  (RFC 9203 §3.2; a COSE_Encrypt0, see :mod:`keybound.core.resource_server`).
* ``/authz-info`` (RFC 9203 §4.1, §4.2): the client sends N1 and ID1
  (``nonce1``, ``ace_client_recipientId``), the RS answers N2 and ID2.
* The security context is the OSCORE context of RFC 9203 §4.3, with the RS's
  Sender ID ID1 and Recipient ID ID2.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import ClassVar

from .authz_info import NONCE_BYTES, AuthzInfoRequest, AuthzInfoResponse, check_nonce
from .errors import IncompatibleAceProfiles, InvalidRequest
from .numbers.ace_profiles import AceProfile
from .oscore_derivation import DerivedContext, context_parameters
from .oscore_material import OscoreInputMaterial
from .records import frozen_record
from .token import AccessToken, CnfOsc
from .token_store import ContextParameters, PersistedContext, PopKey, pop_key_id


def _material(material: PopKey) -> OscoreInputMaterial:
    if not isinstance(material, OscoreInputMaterial):
        raise IncompatibleAceProfiles("the OSCORE profile needs OSCORE input material")
    return material


class OscoreProfile:
    """The OSCORE profile (RFC 9203) at the RS: ``coap_oscore``, ACE profile 2."""

    number: ClassVar[int] = int(AceProfile.COAP_OSCORE)
    encrypted_token: ClassVar[bool] = True
    derives_at_authz_info: ClassVar[bool] = True

    def pop_key(self, token: AccessToken) -> OscoreInputMaterial:
        """The OSCORE input material of ``cnf`` (RFC 9203 §3.2.1)."""
        if not isinstance(token.cnf, CnfOsc):
            raise IncompatibleAceProfiles("the OSCORE profile needs a cnf of method osc (RFC 9203)")
        return token.cnf.material

    def key_id(self, material: PopKey) -> bytes:
        return pop_key_id(_material(material))

    def read_exchange(
        self, request: AuthzInfoRequest, payload: Mapping[object, object]
    ) -> AuthzInfoRequest:
        """N1 and ID1 of an unprotected POST (RFC 9203 §4.1.1, §4.1.2), checked here once."""
        return request.read_exchange(payload)

    def context(
        self, request: AuthzInfoRequest, *, server_id: bytes, random: Callable[[int], bytes]
    ) -> ContextParameters:
        """N1 and ID1 of ``request``, a fresh N2 from ``random`` and ID2 (RFC 9203 §4.2)."""
        if request.nonce1 is None or request.client_recipient_id is None:  # pragma: no cover
            raise InvalidRequest("nonce1 and ace_client_recipientId are required")
        return frozen_record(
            ContextParameters,
            nonce1=request.nonce1,
            nonce2=random(NONCE_BYTES),
            client_id=request.client_recipient_id,
            server_id=server_id,
        )

    def restored(self, record: PersistedContext) -> ContextParameters:
        """The parameters of a persisted exchange, its nonces checked as on decoding."""
        return ContextParameters(
            check_nonce(record.nonce1, "nonce1"),
            check_nonce(record.nonce2, "nonce2"),
            record.client_id,
            record.server_id,
        )

    def response(self, context: ContextParameters | None) -> bytes:
        """N2 and ID2 (RFC 9203 §4.2)."""
        assert context is not None  # made by :meth:`context`
        return AuthzInfoResponse(context.nonce2, context.server_id).encode()

    def derive(self, material: PopKey, context: ContextParameters) -> DerivedContext:
        """The RS's OSCORE Security Context parameters (RFC 9203 §4.3).

        The nonces were checked where they were decoded (or made); the Recipient
        IDs are checked against the AEAD of ``material``, and ID1 == ID2 is refused.
        """
        return context_parameters(
            _material(material),
            context.nonce1,
            context.nonce2,
            context.client_id,
            context.server_id,
            role="rs",
        )


#: The one instance the registry (:data:`keybound.core.profiles.PROFILES`) holds.
OSCORE_PROFILE = OscoreProfile()


__all__ = ["OSCORE_PROFILE", "OscoreProfile"]
