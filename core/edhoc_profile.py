"""The EDHOC and OSCORE profile of ACE at the RS (draft-ietf-ace-edhoc-oscore-profile-11).

:class:`EdhocProfile` implements :class:`~keybound.core.profiles.Profile`:

* ``cnf``: the ``kccs`` method (a CCS with a COSE_Key, provisional number in
  :mod:`keybound.core.numbers.edhoc_profile`); the PoP key is the client's EDHOC
  authentication credential AUTH_CRED_C, identified by the SHA-256 of its encoding,
  so the RS keeps one token per credential and a new one supersedes the old.
* The token carries no secret, so it need not be encrypted: a COSE_Sign1 by the AS
  (draft §3.3.1).
* ``/authz-info`` takes the token alone and answers 2.01 without payload (draft
  §4.6.1); keybound also takes the first token of a series this way, unprotected,
  as the way of clients whose EDHOC stack cannot send it in EAD_3.
* The security context is set up later, by EDHOC with the RS as Responder
  (RFC 9528, RFC 9668), accepting only a credential bound in a valid stored token;
  ``keybound.coap.edhoc_responder`` runs it. Nothing is derived at ``/authz-info``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import ClassVar

from .authz_info import AuthzInfoRequest
from .edhoc_credentials import Ccs
from .errors import IncompatibleAceProfiles, InvalidRequest
from .numbers.ace_parameters import AceParameter
from .numbers.ace_profiles import AceProfile
from .oscore_derivation import DerivedContext
from .token import AccessToken, CnfKccs
from .token_store import ContextParameters, PersistedContext, PopKey


class EdhocProfile:
    """The EDHOC and OSCORE profile at the RS: ``coap_edhoc_oscore`` (provisional number)."""

    number: ClassVar[int] = int(AceProfile.COAP_EDHOC_OSCORE)
    encrypted_token: ClassVar[bool] = False
    derives_at_authz_info: ClassVar[bool] = False

    def pop_key(self, token: AccessToken) -> Ccs:
        """AUTH_CRED_C, the CCS of ``cnf`` ``kccs`` (draft §3.3.1)."""
        if not isinstance(token.cnf, CnfKccs):
            raise IncompatibleAceProfiles(
                "the EDHOC profile needs a cnf of method kccs (draft-ietf-ace-edhoc-oscore-profile)"
            )
        return Ccs.decode(token.cnf.ccs)

    def key_id(self, material: PopKey) -> bytes:
        if not isinstance(material, Ccs):
            raise IncompatibleAceProfiles("the EDHOC profile binds an EDHOC credential")
        return material.fingerprint

    def read_exchange(
        self, request: AuthzInfoRequest, payload: Mapping[object, object]
    ) -> AuthzInfoRequest:
        """Only the token: N1 and ID1 belong to the OSCORE profile and are refused."""
        if AceParameter.NONCE1 in payload or AceParameter.ACE_CLIENT_RECIPIENTID in payload:
            raise InvalidRequest("the EDHOC profile takes the access token alone at /authz-info")
        return request

    def context(
        self, request: AuthzInfoRequest, *, server_id: bytes, random: Callable[[int], bytes]
    ) -> ContextParameters | None:
        return None

    def restored(self, record: PersistedContext) -> ContextParameters | None:
        return None

    def response(self, context: ContextParameters | None) -> bytes:
        """2.01 (Created) without payload (draft §4.6.2)."""
        return b""

    def derive(self, material: PopKey, context: ContextParameters) -> DerivedContext:
        raise InvalidRequest("an EDHOC profile context is derived by EDHOC, not /authz-info")


#: The one instance the registry (:data:`keybound.core.profiles.PROFILES`) holds.
EDHOC_PROFILE = EdhocProfile()


__all__ = ["EDHOC_PROFILE", "EdhocProfile"]
