"""Reading and writing key files: JWK JSON, COSE_Key (CBOR or hex) and PEM.

Files holding private or secret material are written with mode 0600.
"""

from __future__ import annotations

import errno
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from keybound.core import cbor
from keybound.core.edhoc_credentials import Ccs, private_key_from_map, private_key_map
from keybound.core.errors import DecodeError, KeyboundError
from keybound.core.keys import Key
from keybound.core.numbers.cose_keys import Curve

SECRET_FILE_MODE = 0o600
MAX_KEY_FILE = 64 * 1024


def parse_key(data: bytes) -> Key:
    """A key from JWK JSON, a COSE_Key (CBOR bytes or hex text) or PEM."""
    stripped = data.strip()
    if stripped.startswith(b"-----BEGIN"):
        return Key.from_pem(stripped)
    if stripped.startswith(b"{"):
        try:
            obj = json.loads(stripped)
        except ValueError as exc:
            raise DecodeError(f"key file is not valid JSON: {exc}") from exc
        if isinstance(obj, dict) and "kty" not in obj:
            kind = obj.get("kind")
            if isinstance(kind, str):
                raise DecodeError(f"this is a {kind} file, not a key")
            raise DecodeError("not a JWK: it has no kty member")
        return Key.from_jwk(obj)
    try:
        text = stripped.decode("ascii")
        if text and all(c in "0123456789abcdefABCDEF" for c in text) and len(text) % 2 == 0:
            return Key.from_cose_key(bytes.fromhex(text))
    except UnicodeDecodeError:
        pass
    return Key.from_cose_key(bytes(data))


def read_key(path: str | Path) -> Key:
    """Load a key file; raises :class:`KeyboundError` with the file named on failure."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_KEY_FILE:
            raise DecodeError(f"{path}: key file larger than {MAX_KEY_FILE} bytes")
        data = path.read_bytes()
    except OSError as exc:
        raise DecodeError(f"cannot read key file {path}: {exc.strerror}") from exc
    try:
        return parse_key(data)
    except KeyboundError as exc:
        raise type(exc)(f"{path}: {exc.description}") from exc


def write_secret_file(path: str | Path, data: bytes, *, overwrite: bool = True) -> None:
    """Write ``data`` to ``path`` readable by the owner only (created 0600, never widened).

    Without ``overwrite`` an existing file is left alone: :class:`FileExistsError`.
    """
    path = Path(path)
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if overwrite else os.O_EXCL)
    try:
        fd = os.open(path, flags, SECRET_FILE_MODE)
    except FileExistsError:
        raise FileExistsError(
            errno.EEXIST, "exists already; refusing to replace it (use --force)", str(path)
        ) from None
    try:
        os.fchmod(fd, SECRET_FILE_MODE)
        os.write(fd, data)
    finally:
        os.close(fd)


def write_key(
    path: str | Path,
    key: Key,
    *,
    fmt: str = "jwk",
    include_private: bool = True,
    overwrite: bool = False,
) -> None:
    """Write ``key`` as JWK JSON or COSE_Key CBOR; private files are 0600.

    An existing file is never replaced unless ``overwrite`` (``--force``) says so.
    """
    if fmt == "jwk":
        data = (json.dumps(key.to_jwk(include_private=include_private), indent=2) + "\n").encode()
    elif fmt == "cose":
        data = key.to_cose_key_bytes(include_private=include_private)
    else:
        raise ValueError(f"unknown key format {fmt!r}")
    if include_private and key.has_private:
        write_secret_file(path, data, overwrite=overwrite)
    else:
        Path(path).write_bytes(data)


@dataclass(frozen=True)
class EdhocKeyFiles:
    """An EDHOC key written by :func:`write_edhoc_key`: the credential and where it went."""

    ccs: Ccs
    path: Path


def credential_path(key_path: str | Path) -> Path:
    """Where the credential of the EDHOC key at ``key_path`` goes: ``KEY.ccs``."""
    path = Path(key_path)
    return path.with_name(path.name + ".ccs")


def write_edhoc_key(
    path: str | Path,
    *,
    kid: bytes | None = None,
    subject: str | None = None,
    overwrite: bool = False,
    signing: bool = False,
) -> EdhocKeyFiles:
    """Generate a P-256 EDHOC key: the private COSE_Key (kty, crv, d) at ``path`` (0600)
    and the public credential, a CCS (RFC 9528 §3.5.2), at ``path.ccs``.

    Without ``kid`` a random one byte is chosen (ID_CRED_x by reference, RFC 9528 §3.5.3).
    ``signing``: the credential names an ES256 signature key (``alg`` -7), for the EDHOC
    methods in which this party signs (0, and 1 or 2 by its role); else a static DH key
    (methods 3, and 1 or 2 by role). One key is never used both ways.
    """
    key = Key.generate_ec2(Curve.P_256, kid=kid if kid else secrets.token_bytes(1))
    ccs = Ccs.make(key, subject=subject, signing=signing)
    public = credential_path(path)
    if not overwrite and public.exists():
        raise FileExistsError(
            errno.EEXIST, "exists already; refusing to replace it (use --force)", str(public)
        )
    write_secret_file(path, cbor.dumps(private_key_map(key)), overwrite=overwrite)
    public.write_bytes(ccs.encoded)
    return EdhocKeyFiles(ccs, public)


def read_edhoc_private_key(path: str | Path) -> bytes:
    """The ``d`` of the EDHOC private key file at ``path``; refuses a file others can read."""
    path = Path(path)
    if path.stat().st_mode & 0o077:
        raise PermissionError(f"{path}: a private key file must be readable by its owner only")
    data = path.read_bytes()
    if len(data) > 256:
        raise DecodeError(f"{path}: not an EDHOC private key (too long)")
    return private_key_from_map(cbor.loads(data))


def read_ccs(path: str | Path) -> Ccs:
    """The EDHOC credential (CCS) file at ``path``, checked."""
    data = Path(path).read_bytes()
    try:
        return Ccs.decode(data)
    except KeyboundError as exc:
        raise type(exc)(f"{path}: {exc.description}") from exc


__all__ = [
    "SECRET_FILE_MODE",
    "EdhocKeyFiles",
    "credential_path",
    "parse_key",
    "read_ccs",
    "read_edhoc_private_key",
    "read_key",
    "write_edhoc_key",
    "write_key",
    "write_secret_file",
]
