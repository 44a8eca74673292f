"""``keybound client ...``: the CPython client for CoAP resource servers (and HTTP, with DPoP).

``keybound client get coap://HOST:PORT/PATH --bundle device.json`` runs the whole
ACE flow (RFC 9200, RFC 9203): a token from the AS over the device's OSCORE
context, ``/authz-info`` at the RS, the derived context, then the request.

The client-AS context's Sender Sequence Number is kept in a small state file
(``--state DIR``, by default the user's state directory), written ahead in
chunks before any number in the chunk is used (RFC 8613 Appendix B.1.1), so
running the command again never reuses a nonce.

Like a device, the client keeps its token and the context derived with the RS
in the same directory (one session file per client and RS, 0600) and reuses
them until the token expires or the RS answers 4.01 (RFC 9200 §5.8.3, RFC 9203
§4.3): a second run asks the AS for nothing. The derived context's Sender
Sequence Number is written ahead in that file the same way.
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

import aiocoap
import platformdirs
import typer

from keybound.coap.client import CoapAceClient, Endpoints, client_context, response_text
from keybound.coap.oscore_store import RsSecurityContext
from keybound.core import cbor
from keybound.core.client_flow import (
    EXPIRY_MARGIN,
    AceClient,
    Reply,
    TokenGrant,
    error_description,
)
from keybound.core.errors import DecodeError, KeyboundError
from keybound.core.oscore_material import OscoreInputMaterial
from keybound.core.oscore_profile import DerivedContext
from keybound.tools.bundles import oscore_from_json, oscore_json
from keybound.tools.cli_support import clean_errors, console, err_console, fail
from keybound.tools.http_client_cli import http_command
from keybound.tools.keyfiles import write_secret_file

app = typer.Typer(
    help="Call resource servers with proof-of-possession tokens.", no_args_is_help=True
)

MAX_BUNDLE = 64 * 1024


class DeviceBundle:
    """The device bundle ``keybound as client add`` writes (firmware/README.md documents it)."""

    def __init__(self, data: dict[str, Any]) -> None:
        def need(name: str) -> Any:
            if name not in data:
                raise DecodeError(f"the device bundle lacks {name!r}")
            return data[name]

        self.client_id = str(need("client_id"))
        self.as_uri = str(need("as_uri"))
        self.rs_uri = str(data.get("rs_uri") or "")
        self.audience = str(need("audience"))
        self.scope = str(data["scope"]) if data.get("scope") is not None else None
        self.token_path = str(data.get("token_path", "/token"))
        self.authz_info_path = str(data.get("authz_info_path", "/authz-info"))
        self.as_context = oscore_from_json(need("as_context"))

    @classmethod
    def read(cls, path: Path) -> DeviceBundle:
        try:
            if path.stat().st_size > MAX_BUNDLE:
                raise DecodeError(f"{path}: larger than {MAX_BUNDLE} bytes")
            data = json.loads(path.read_text())
        except OSError as exc:
            raise DecodeError(f"cannot read {path}: {exc.strerror}") from exc
        except ValueError as exc:
            raise DecodeError(f"{path}: not JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise DecodeError(f"{path}: the bundle must be a JSON object")
        return cls(data)

    def fingerprint(self) -> str:
        """Names the client-AS key material (not secret: a hash)."""
        ctx = self.as_context
        material = ctx.master_secret + b"|" + ctx.master_salt + b"|" + ctx.sender_id
        return hashlib.sha256(material).hexdigest()[:16]


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

        def make(derived: DerivedContext) -> RsSecurityContext:
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
def state_lock(state_dir: Path, client_id: str) -> Iterator[None]:
    """Hold the client's state exclusively: two runs at once would reuse sequence numbers.

    A second run waits (and says so) until the first is done.
    """
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(state_dir / f"{client_id}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            err_console.print(
                f"waiting for another run of {client_id} to finish with {state_dir}",
                markup=False,
                soft_wrap=True,
            )
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _split(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    if parts.scheme != "coap" or not parts.hostname:
        raise DecodeError(f"expected coap://HOST[:PORT]/PATH, not {url!r}")
    return f"coap://{parts.netloc}", parts.path or "/"


async def run_request(
    bundle: DeviceBundle,
    method: str,
    url: str,
    payload: bytes,
    state_dir: Path,
    content_format: int | None = None,
    *,
    verbose: bool = False,
) -> Reply:
    """One request through the whole flow; returns the RS's final reply."""
    rs_uri, path = _split(url)
    with state_lock(state_dir, bundle.client_id):
        return await _run_locked(
            bundle, method, rs_uri, path, payload, state_dir, content_format, verbose=verbose
        )


async def _run_locked(
    bundle: DeviceBundle,
    method: str,
    rs_uri: str,
    path: str,
    payload: bytes,
    state_dir: Path,
    content_format: int | None,
    *,
    verbose: bool,
) -> Reply:
    seq = SequenceFile(state_dir / f"{bundle.client_id}.as-seq.json", bundle.fingerprint())
    as_context = client_context(bundle.as_context, mark=seq.load(), persist_mark=seq.store)
    about = "|".join((bundle.fingerprint(), rs_uri, bundle.audience, bundle.scope or ""))
    session_id = hashlib.sha256(about.encode()).hexdigest()[:16]
    session = SessionFile(state_dir / f"{bundle.client_id}.{session_id}.rs.json", session_id)
    flow = AceClient(audience=bundle.audience, scope=bundle.scope)
    if session.load(now=time.time()):
        flow.grant, flow.context = session.grant, session.context
        if verbose:
            err_console.print("reusing the token and context kept in --state", markup=False)
    coap = await aiocoap.Context.create_client_context()
    try:
        client = CoapAceClient(
            coap,
            flow,
            Endpoints(bundle.as_uri, rs_uri, bundle.token_path, bundle.authz_info_path),
            as_context,
            monotonic=time.time,  # expiry is kept across runs: wall-clock time
            on_step=(lambda line: err_console.print(line, markup=False)) if verbose else None,
            rs_context=session.context_maker(flow),
        )
        return await client.request(method, path, payload, content_format=content_format)
    finally:
        await coap.shutdown()


def reply_json(reply: Reply) -> dict[str, Any]:
    """The ``--json`` view of a reply: its code, and the payload as text or hex."""
    try:
        text: str | None = reply.payload.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    return {
        "code": str(reply),
        "success": reply.success,
        "content_format": reply.content_format,
        "payload": text,
        "payload_hex": reply.payload.hex(),
        **({} if reply.success else {"error": error_description(reply)}),
    }


def _command(method: str) -> Any:
    @clean_errors
    def command(
        url: Annotated[str, typer.Argument(help="coap://HOST:PORT/PATH of the resource")],
        bundle: Annotated[Path, typer.Option("--bundle", "-b", help="device bundle (JSON)")],
        payload: Annotated[
            str, typer.Option("--payload", "-p", help="request payload (text)")
        ] = "",
        state: Annotated[
            Path | None,
            typer.Option("--state", help="directory for sequence numbers, token and context"),
        ] = None,
        verbose: Annotated[
            bool, typer.Option("--verbose", "-v", help="show every exchange")
        ] = False,
        as_json: Annotated[
            bool, typer.Option("--json", help="print the reply as JSON (also an error reply)")
        ] = False,
    ) -> None:
        loaded = DeviceBundle.read(bundle)
        state_dir = state or Path(platformdirs.user_state_dir("keybound")) / "clients"
        reply = asyncio.run(
            run_request(loaded, method, url, payload.encode(), state_dir, verbose=verbose)
        )
        if as_json:
            print(json.dumps(reply_json(reply)))
            if not reply.success:
                raise typer.Exit(1)
            return
        if not reply.success:
            raise fail(error_description(reply), code=1)
        console.print(f"{reply} {response_text(reply)}".strip(), markup=False)

    command.__doc__ = f"{method} a CoAP resource through the ACE flow (token, /authz-info, OSCORE)."
    return command


for _method in ("GET", "POST", "PUT", "DELETE"):
    app.command(_method.lower())(_command(_method))

app.command("http")(http_command)


__all__ = [
    "DeviceBundle",
    "SequenceFile",
    "SessionFile",
    "app",
    "reply_json",
    "run_request",
    "state_lock",
]
