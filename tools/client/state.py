"""What the CPython client keeps across runs: sequence marks, sessions, the state lock.

The client-AS context's Sender Sequence Number is kept in a small state file,
written ahead in chunks before any number in the chunk is used (RFC 8613
Appendix B.1.1), so running the client again never reuses a nonce. The token
and the context derived with one RS are kept beside it (one session file per
client and RS, 0600) and reused until the token expires or the RS answers 4.01
(RFC 9200 §5.8.3, RFC 9203 §4.3).
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from keybound.coap.client import client_context
from keybound.coap.oscore_contexts import DurableSecurityContext
from keybound.core import cbor
from keybound.core.client_flow import EXPIRY_MARGIN, AceClient, TokenGrant
from keybound.core.errors import DecodeError, KeyboundError
from keybound.core.oscore_derivation import DerivedContext
from keybound.core.oscore_material import OscoreInputMaterial
from keybound.tools.bundles import oscore_from_json, oscore_json
from keybound.tools.keyfiles import write_secret_file


class SequenceFile:
    """The persisted Sender Sequence Number mark of the client-AS context (0600, fsynced)."""

    def __init__(self, path: Path, fingerprint: str) -> None:
        self.path = path
        self.fingerprint = fingerprint

    def load(self) -> int:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return 0
        except (OSError, ValueError) as exc:
            # Never guess: a damaged file could make the client reuse a nonce.
            raise DecodeError(f"{self.path} is unreadable ({exc}); refusing to guess") from exc
        if data.get("fingerprint") != self.fingerprint:
            return 0  # new key material starts again at 0
        mark = data.get("mark")
        if type(mark) is not int or mark < 0:
            raise DecodeError(f"{self.path} holds no valid mark; refusing to guess")
        return mark

    def store(self, mark: int) -> None:
        _write_durably(self.path, {"fingerprint": self.fingerprint, "mark": mark})


def _write_durably(path: Path, data: dict[str, Any]) -> None:
    """Replace ``path`` with ``data`` as JSON, 0600, fsynced before it takes the old one's place."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_suffix(".tmp")
    write_secret_file(tmp, json.dumps(data).encode())
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


class SessionFile:
    """The token and the context derived with one RS, kept across runs (0600, fsynced).

    ``fingerprint`` names the client-AS material, the RS and the audience and
    scope asked for: a session made for anything else is not reused. The file
    also holds the derived context's Sender Sequence Number mark, written ahead
    of use (RFC 8613 Appendix B.1.1), so a reused context never repeats a nonce.
    """

    def __init__(self, path: Path, fingerprint: str) -> None:
        self.path = path
        self.fingerprint = fingerprint
        self.grant: TokenGrant | None = None
        self.context: DerivedContext | None = None
        self.mark = 0

    def load(self, *, now: float) -> bool:
        """Read the session; True when it is for this client and RS and not expired."""
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return False
        except (OSError, ValueError) as exc:
            # Never guess: a damaged mark could make the client reuse a nonce.
            raise DecodeError(f"{self.path} is unreadable ({exc}); refusing to guess") from exc
        if not isinstance(data, dict) or data.get("fingerprint") != self.fingerprint:
            return False
        try:
            expires_at = data["expires_at"]
            if expires_at is not None and not isinstance(expires_at, int | float):
                raise TypeError("expires_at")
            grant = TokenGrant(
                access_token=bytes.fromhex(data["access_token"]),
                material=OscoreInputMaterial.from_cbor_map(
                    cbor.loads(bytes.fromhex(data["material"]))
                ),
                expires_at=expires_at,
                profile=int(data["profile"]),
            )
            context = oscore_from_json(data["context"])
            mark = data["mark"]
        except (KeyError, TypeError, ValueError, KeyboundError) as exc:
            raise DecodeError(f"{self.path} holds no valid session ({exc}); delete it") from exc
        if type(mark) is not int or mark < 0:
            raise DecodeError(f"{self.path} holds no valid mark; refusing to guess")
        if expires_at is not None and now >= expires_at - EXPIRY_MARGIN:
            return False
        self.grant, self.context, self.mark = grant, context, mark
        return True

    def store(self, grant: TokenGrant, context: DerivedContext, mark: int) -> None:
        _write_durably(
            self.path,
            {
                "fingerprint": self.fingerprint,
                "access_token": grant.access_token.hex(),
                "material": cbor.dumps(grant.material.to_cbor_map()).hex(),
                "expires_at": grant.expires_at,
                "profile": grant.profile,
                "context": oscore_json(context),
                "mark": mark,
            },
        )
        self.grant, self.context, self.mark = grant, context, mark

    def context_maker(self, flow: AceClient) -> Any:
        """Make the RS context for ``flow``: persisted here, continuing a reused one's mark."""

        def make(derived: DerivedContext) -> DurableSecurityContext:
            grant = flow.grant
            if grant is None:  # pragma: no cover - the flow has a token before it derives
                raise RuntimeError("a derived context without a token")
            mark = self.mark if self.context is not None and self.context == derived else 0
            self.store(grant, derived, mark)
            return client_context(
                derived, mark=mark, persist_mark=lambda new: self.store(grant, derived, new)
            )

        return make


@contextmanager
def state_lock(
    state_dir: Path, client_id: str, on_wait: Callable[[str], None] | None = None
) -> Iterator[None]:
    """Hold the client's state exclusively: two runs at once would reuse sequence numbers.

    A second run waits (and says so) until the first is done.
    """
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(state_dir / f"{client_id}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_wait is not None:
                on_wait(f"waiting for another run of {client_id} to finish with {state_dir}")
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


__all__ = ["SequenceFile", "SessionFile", "state_lock"]
