"""Client secrets of the Authorization Server (RFC 6749 §2.3.1), hashed with scrypt.

Stored as ``scrypt$N$r$p$salt$hash`` (base64url); checks are constant-time, and an
unknown client costs as much time as a wrong secret.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from typing import Final

__all__ = ["burn_scrypt_time", "hash_client_secret", "secret_matches"]

# scrypt (RFC 7914) with the interactive-login parameters: 16 MiB and some tens of
# milliseconds per check.
_SCRYPT_N: Final = 2**14
_SCRYPT_R: Final = 8
_SCRYPT_P: Final = 1
_SCRYPT_LEN: Final = 32
_SCRYPT_MAX_N: Final = 2**20  # refuse stored parameters that would exhaust memory


def _scrypt(secret: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(
        secret.encode("utf-8"), salt=salt, n=n, r=r, p=p, dklen=_SCRYPT_LEN, maxmem=2**31 - 1
    )


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def hash_client_secret(secret: str) -> str:
    """A salted scrypt hash of a client secret: ``scrypt$N$r$p$salt$hash`` (base64url)."""
    salt = secrets.token_bytes(16)
    digest = _scrypt(secret, salt, _SCRYPT_N, _SCRYPT_R, _SCRYPT_P)
    return f"scrypt${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def secret_matches(secret: str, stored: str) -> bool:
    """Whether ``secret`` matches a hash of :func:`hash_client_secret` (constant-time)."""
    try:
        scheme, n_text, r_text, p_text, salt_text, digest_text = stored.split("$")
        n, r, p = int(n_text), int(r_text), int(p_text)
        salt, expected = _unb64(salt_text), _unb64(digest_text)
    except ValueError:
        return False
    if scheme != "scrypt" or not 1 < n <= _SCRYPT_MAX_N or not 0 < r <= 32 or not 0 < p <= 16:
        return False
    return hmac.compare_digest(_scrypt(secret, salt, n, r, p), expected)


_DUMMY_SALT: Final = bytes(16)


def burn_scrypt_time(secret: str) -> None:
    """As much work as a real check, so timing does not tell which client IDs exist."""
    _scrypt(secret, _DUMMY_SALT, _SCRYPT_N, _SCRYPT_R, _SCRYPT_P)
