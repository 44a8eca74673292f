"""Numbers of RFC 9770 (Token Revocation Lists, §12) and the registries it uses.

- the CoAP Content-Format of ``application/ace-trl+cbor`` (RFC 9770 §12.2);
- the Custom Problem Detail key ``ace-trl-error`` (RFC 9770 §12.3, in the registry
  of RFC 9290 §6.2) and the Concise Problem Details Content-Format (RFC 9290 §6.3);
- the "ACE Token Revocation List Parameters" (§12.4) and "Errors" (§12.5) registries;
- the Named Information Hash Algorithm registry (RFC 6920 §9.4) for token hashes.
"""

from enum import IntEnum

#: CoAP Content-Format of ``application/ace-trl+cbor`` (RFC 9770 §12.2)
CONTENT_FORMAT_ACE_TRL_CBOR = 262
#: CoAP Content-Format of ``application/concise-problem-details+cbor`` (RFC 9290 §6.3)
CONTENT_FORMAT_CONCISE_PROBLEM_DETAILS = 257
#: the media types, for HTTP
MEDIA_TYPE_ACE_TRL_CBOR = "application/ace-trl+cbor"
MEDIA_TYPE_CONCISE_PROBLEM_DETAILS = "application/concise-problem-details+cbor"


class ProblemDetail(IntEnum):
    """Keys of a Concise Problem Details map (RFC 9290 §2, §6.2) that RFC 9770 uses."""

    TITLE = -1
    DETAIL = -2
    ACE_TRL_ERROR = 1  # the Custom Problem Detail entry of RFC 9770 §12.3


class TrlErrorField(IntEnum):
    """Fields of the ``ace-trl-error`` entry (RFC 9770 §6.1)."""

    ERROR_ID = 0
    CURSOR = 1


class TrlParameter(IntEnum):
    """ACE Token Revocation List Parameters (RFC 9770 §8, §12.4)."""

    FULL_SET = 0
    DIFF_SET = 1
    CURSOR = 2
    MORE = 3


class TrlErrorId(IntEnum):
    """ACE Token Revocation List Errors (RFC 9770 §9, §12.5)."""

    INVALID_PARAMETER_VALUE = 0
    INVALID_SET_OF_PARAMETERS = 1
    OUT_OF_BOUND_CURSOR_VALUE = 2

    @property
    def title(self) -> str:
        return {
            TrlErrorId.INVALID_PARAMETER_VALUE: "Invalid parameter value",
            TrlErrorId.INVALID_SET_OF_PARAMETERS: "Invalid set of parameters",
            TrlErrorId.OUT_OF_BOUND_CURSOR_VALUE: "Out of bound cursor value",
        }[self]


class NamedInformationHash(IntEnum):
    """Named Information Hash Algorithm registry (RFC 6920 §9.4): the ID is the first
    byte of a binary-format hash (RFC 6920 §6). sha-256 is mandatory (RFC 9770 §4.4)."""

    SHA_256 = 1

    @property
    def digest_name(self) -> str:
        return {NamedInformationHash.SHA_256: "sha256"}[self]

    @property
    def length(self) -> int:
        return {NamedInformationHash.SHA_256: 32}[self]


__all__ = [
    "CONTENT_FORMAT_ACE_TRL_CBOR",
    "CONTENT_FORMAT_CONCISE_PROBLEM_DETAILS",
    "MEDIA_TYPE_ACE_TRL_CBOR",
    "MEDIA_TYPE_CONCISE_PROBLEM_DETAILS",
    "NamedInformationHash",
    "ProblemDetail",
    "TrlErrorField",
    "TrlErrorId",
    "TrlParameter",
]
