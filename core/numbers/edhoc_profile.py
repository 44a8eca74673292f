"""Code points of the EDHOC and OSCORE profile of ACE, and the EDHOC numbers it relies on.

PROVISIONAL. draft-ietf-ace-edhoc-oscore-profile-11 asks IANA for these values
(its §11 lists them as TBD; the values below are the ones its CDDL model,
Appendix "CDDL Model", uses). They follow the draft and change here, in this one
module, when IANA assigns the final values. Nothing else in keybound spells them.

The EDHOC numbers at the end (method, cipher suite, COSE header parameters, error
codes) are final: RFC 9528 §3.2, §3.6, §6, §10.
"""

from enum import IntEnum

#: ACE Profiles registry (RFC 9200 §8.8): ``coap_edhoc_oscore``. Provisional.
ACE_PROFILE_COAP_EDHOC_OSCORE = 4
#: CWT Confirmation Methods (RFC 8747 §7.2): ``kccs``, a CCS holding a COSE_Key. Provisional.
CNF_KCCS = 11
#: OAuth Parameters CBOR Mappings (RFC 9200 §8.10): ``edhoc_info``. Provisional.
PARAM_EDHOC_INFO = 47
#: CWT Claims (RFC 8392 §9.1): ``edhoc_info``. Provisional.
CLAIM_EDHOC_INFO = 41
#: EDHOC External Authorization Data: "ACE-OAuth Access Token" (sent critical, as -24).
#: Provisional.
EAD_ACCESS_TOKEN = 24


class EdhocInfo(IntEnum):
    """Fields of the EDHOC_Information object (the draft's §3.4). Provisional."""

    SESSION_ID = 0
    METHODS = 1
    CIPHER_SUITES = 2
    MESSAGE_4 = 3
    COMB_REQ = 4
    URI_PATH = 5


# ---- final numbers of RFC 9528 -------------------------------------------------------------

#: EDHOC method 3: static DH keys for Initiator and Responder (RFC 9528 §3.2).
METHOD_STATIC_DH = 3
#: EDHOC method 0: signature keys for both (RFC 9528 §3.2).
METHOD_SIGNATURE = 0
#: Cipher suite 2: AES-CCM-16-64-128, SHA-256, 8, P-256, ES256, ... (RFC 9528 §3.6).
CIPHER_SUITE_2 = 2
#: COSE header parameter ``kccs``: a CCS by value in ID_CRED_x (RFC 9528 §10.6).
COSE_HEADER_KCCS = 14
#: COSE header parameter ``kid`` (RFC 9052 §3.1), ID_CRED_x by reference.
COSE_HEADER_KID = 4
#: EDHOC error codes (RFC 9528 §6.1): unspecified error, wrong selected cipher suite.
ERR_UNSPECIFIED = 1
ERR_WRONG_SELECTED_CIPHER_SUITE = 2
#: Content-Format application/edhoc+cbor-seq (RFC 9528 §10.9), for EDHOC error messages.
CONTENT_FORMAT_EDHOC_CBOR_SEQ = 64
#: The EDHOC resource (RFC 9528 Appendix A.2).
WELL_KNOWN_EDHOC = (".well-known", "edhoc")

__all__ = [
    "ACE_PROFILE_COAP_EDHOC_OSCORE",
    "CIPHER_SUITE_2",
    "CLAIM_EDHOC_INFO",
    "CNF_KCCS",
    "CONTENT_FORMAT_EDHOC_CBOR_SEQ",
    "COSE_HEADER_KCCS",
    "COSE_HEADER_KID",
    "EAD_ACCESS_TOKEN",
    "ERR_UNSPECIFIED",
    "ERR_WRONG_SELECTED_CIPHER_SUITE",
    "METHOD_SIGNATURE",
    "METHOD_STATIC_DH",
    "PARAM_EDHOC_INFO",
    "WELL_KNOWN_EDHOC",
    "EdhocInfo",
]
