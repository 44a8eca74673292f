"""One request of the CPython client through the whole ACE flow (RFC 9200, RFC 9203).

A token from the AS over the device's OSCORE context, ``/authz-info`` at the
RS, the derived context, then the request; the state it keeps across runs is
in :mod:`keybound.tools.client.state`.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiocoap

from keybound.coap.client import CoapAceClient, Endpoints, client_context
from keybound.coap.edhoc_client import EdhocAceClient
from keybound.core.client_flow import AceClient, Reply, error_description
from keybound.core.errors import DecodeError
from keybound.tools.bundles import DeviceBundle
from keybound.tools.client.state import SequenceFile, SessionFile, state_lock
from keybound.tools.keyfiles import credential_path, read_ccs, read_edhoc_private_key


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
    say: Callable[[str], None] | None = None,
) -> Reply:
    """One request through the whole flow; returns the RS's final reply."""
    rs_uri, path = _split(url)
    with state_lock(state_dir, bundle.client_id, on_wait=say):
        return await _run_locked(
            bundle,
            method,
            rs_uri,
            path,
            payload,
            state_dir,
            content_format,
            say=say if verbose else None,
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
    say: Callable[[str], None] | None,
) -> Reply:
    seq = SequenceFile(state_dir / f"{bundle.client_id}.as-seq.json", bundle.fingerprint())
    as_context = client_context(bundle.as_context, mark=seq.load(), persist_mark=seq.store)
    about = "|".join((bundle.fingerprint(), rs_uri, bundle.audience, bundle.scope or ""))
    session_id = hashlib.sha256(about.encode()).hexdigest()[:16]
    session = SessionFile(state_dir / f"{bundle.client_id}.{session_id}.rs.json", session_id)
    flow = AceClient(audience=bundle.audience, scope=bundle.scope, random_bytes=secrets.token_bytes)
    if session.load(now=time.time()):
        flow.grant, flow.context = session.grant, session.context
        if say is not None:
            say("reusing the token and context kept in --state")
    coap = await aiocoap.Context.create_client_context()
    try:
        client = CoapAceClient(
            coap,
            flow,
            Endpoints(bundle.as_uri, rs_uri, bundle.token_path, bundle.authz_info_path),
            as_context,
            monotonic=time.time,  # expiry is kept across runs: wall-clock time
            on_step=say,
            rs_context=session.context_maker(flow),
        )
        return await client.request(method, path, payload, content_format=content_format)
    finally:
        await coap.shutdown()


async def run_edhoc_request(
    bundle: DeviceBundle,
    method: str,
    url: str,
    payload: bytes,
    state_dir: Path,
    key_path: Path,
    *,
    verbose: bool = False,
    say: Callable[[str], None] | None = None,
) -> Reply:
    """One request through the EDHOC and OSCORE profile's flow (``--edhoc-key``).

    The client's private key is read from ``key_path`` (0600) and its credential from
    ``key_path.ccs``; the client-AS context's sequence numbers are kept as for the
    OSCORE profile. Tokens and EDHOC sessions live for the run only.
    """
    rs_uri, path = _split(url)
    private_key = read_edhoc_private_key(key_path)
    credential = read_ccs(credential_path(key_path))
    with state_lock(state_dir, bundle.client_id, on_wait=say):
        seq = SequenceFile(state_dir / f"{bundle.client_id}.as-seq.json", bundle.fingerprint())
        as_context = client_context(bundle.as_context, mark=seq.load(), persist_mark=seq.store)
        coap = await aiocoap.Context.create_client_context()
        try:
            client = EdhocAceClient(
                coap,
                as_uri=bundle.as_uri,
                rs_uri=rs_uri,
                as_context=as_context,
                private_key=private_key,
                credential=credential,
                audience=bundle.audience,
                scope=bundle.scope,
                token_path=bundle.token_path,
                on_step=say if verbose else None,
            )
            return await client.request(method, path, payload)
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


__all__ = ["reply_json", "run_edhoc_request", "run_request"]
