"""Reading and writing key files: JWK JSON, COSE_Key (CBOR or hex) and PEM.

Files holding private or secret material are written with mode 0600.
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

from keybound.core.errors import DecodeError, KeyboundError
from keybound.core.keys import Key

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


__all__ = ["SECRET_FILE_MODE", "parse_key", "read_key", "write_key", "write_secret_file"]
