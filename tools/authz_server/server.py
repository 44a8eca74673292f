"""Running the Authorization Server: aiocoap and uvicorn in one asyncio event loop.

``await run_authorization_server(store, coap=("::", 5683), http=("127.0.0.1", 8080))``
serves until cancelled. :class:`RunningServer` is the same, started and
stopped by hand (tests use it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import signal
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import aiocoap
import platformdirs
import uvicorn

from keybound.coap.authz_server_site import AsServerCredentials, build_site
from keybound.coap.authz_service import AuthzService
from keybound.coap.trl_resource import TrlResource
from keybound.core.authz_store import AuthzStore, TrlStore
from keybound.core.dpop_state import NonceIssuer
from keybound.core.dpop_token_endpoint import DPoPTokenEndpointPolicy
from keybound.tools.authz_server.http import TokenRequestHook, check_listen, create_app
from keybound.tools.authz_server.mutual_tls import mutual_tls_trust
from keybound.tools.authz_server.provision import as_config
from keybound.tools.authz_server.storage import SqlAuthzStore
from keybound.tools.http.replay_cache import InMemoryReplayCache, SqlReplayCache
from keybound.tools.http.tls import TlsExtensionH11Protocol
from keybound.tools.server_ready import announce_ready, check_port_free, url_for

__all__ = ["RunningServer", "default_state_dir", "run_authorization_server"]

log = logging.getLogger("keybound.as")

#: seconds between two looks at the TRL (RFC 9770): revocations by any process sharing
#: the database reach the observers within about this time
TRL_POLL_INTERVAL = 0.2


def default_state_dir() -> Path:
    """Where an earlier keybound kept OSCORE sequence numbers (the per-user state
    directory): read once per context; they are now kept in the AS's database."""
    return Path(platformdirs.user_state_dir("keybound")) / "as"


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


@dataclass
class RunningServer:
    """The AS's CoAP and/or HTTP endpoints in the current event loop.

    ``public_url`` is the external URL of the HTTP root (behind a proxy, say
    ``https://as.example.com``); it defaults to the listening address. DPoP
    proofs at the token endpoint must name ``{public_url}/token`` (RFC 9449
    §4.3). ``dpop`` sets nonces, replay cache and algorithms (RFC 9449 §5, §8).
    ``mutual_tls`` (HTTPS only) asks for client certificates and lets clients
    registered for it authenticate with them (RFC 8705 §2); ``client_ca`` is the
    PEM file of the CAs PKI clients chain to (:mod:`~keybound.tools.authz_server.mutual_tls`).
    """

    store: AuthzStore
    coap: tuple[str, int] | None = None
    http: tuple[str, int] | None = None
    state_dir: Path = field(default_factory=default_state_dir)
    certfile: str | None = None
    keyfile: str | None = None
    insecure: bool = False
    token_request_hook: TokenRequestHook | None = None
    public_url: str | None = None
    dpop: DPoPTokenEndpointPolicy | None = None
    mutual_tls: bool = False
    client_ca: str | None = None
    _coap_context: aiocoap.Context | None = field(default=None, init=False, repr=False)
    _credentials: AsServerCredentials | None = field(default=None, init=False, repr=False)
    _uvicorn: uvicorn.Server | None = field(default=None, init=False, repr=False)
    _http_task: asyncio.Task[None] | None = field(default=None, init=False, repr=False)
    _trl: TrlResource | None = field(default=None, init=False, repr=False)
    _trl_task: asyncio.Task[None] | None = field(default=None, init=False, repr=False)

    async def start(self) -> None:
        """Bind the endpoints; raises if a port is taken or TLS is missing.

        A taken port is :class:`~keybound.tools.server_ready.AddressInUse`,
        found before the store is read.
        """
        config = await asyncio.to_thread(as_config, self.store)
        service = AuthzService(self.store, config)
        tls = self.certfile is not None and self.keyfile is not None
        if self.http is not None:
            check_listen(self.http[0], tls=tls, insecure=self.insecure)
            check_port_free("https" if tls else "http", *self.http, stream=True)
        if self.coap is not None:
            check_port_free("coap", *self.coap)
        if self.coap is not None:
            # Reads the store's index of OSCORE peers: off the event loop.
            if hasattr(self.store, "trl_view"):  # a store that keeps the TRL (RFC 9770)
                self._trl = TrlResource(cast(TrlStore, self.store))
            site, self._credentials = await asyncio.to_thread(
                build_site, self.store, config, self.state_dir, service=service, trl=self._trl
            )
            self._coap_context = await aiocoap.Context.create_server_context(site, bind=self.coap)
            if self._trl is not None:
                self._trl_task = asyncio.create_task(self._trl.watch(TRL_POLL_INTERVAL))
            log.info("CoAP AS listening on %s", url_for("coap", *self.coap))
        if self.http is not None:
            host, port = self.http
            scheme = "https" if tls else "http"
            tls_options: dict[str, Any] = {}
            policy = None
            if self.mutual_tls:
                if not tls:
                    raise ValueError("mutual TLS needs HTTPS: give a certificate and a key")
                policy, trust = await asyncio.to_thread(
                    mutual_tls_trust, self.store, self.client_ca, self.state_dir
                )
                tls_options = {
                    "ssl_cert_reqs": ssl.CERT_OPTIONAL,
                    "ssl_ca_certs": str(trust),
                    "http": TlsExtensionH11Protocol,
                }
            app = create_app(
                self.store,
                config,
                base_url=self.public_url or f"{scheme}://{_url_host(host)}:{port}",
                token_request_hook=self.token_request_hook,
                dpop=self.dpop,
                service=service,
                mutual_tls=policy,
                insecure=self.insecure,
            )
            uv_config = uvicorn.Config(
                app,
                host=host,
                port=port,
                ssl_certfile=self.certfile,
                ssl_keyfile=self.keyfile,
                log_level="warning",
                lifespan="off",
                **tls_options,
            )
            self._uvicorn = uvicorn.Server(uv_config)
            self._http_task = asyncio.create_task(self._uvicorn.serve())
            while not self._uvicorn.started:
                if self._http_task.done():
                    self._http_task.result()
                    raise OSError(f"HTTP server on {host}:{port} did not start")
                await asyncio.sleep(0.01)
            log.info("HTTP AS listening on %s", url_for(scheme, host, port))

    @property
    def urls(self) -> list[str]:
        """The listening URLs (CoAP first)."""
        tls = self.certfile is not None and self.keyfile is not None
        urls = [url_for("coap", *self.coap)] if self.coap is not None else []
        if self.http is not None:
            urls.append(url_for("https" if tls else "http", *self.http))
        return urls

    @property
    def http_task(self) -> asyncio.Task[None] | None:
        """The uvicorn task, once started."""
        return self._http_task

    async def stop(self) -> None:
        """Close the endpoints (the OSCORE sequence state is durable all along)."""
        if self._trl_task is not None:
            self._trl_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._trl_task
        if self._uvicorn is not None and self._http_task is not None:
            self._uvicorn.should_exit = True
            with contextlib.suppress(Exception):
                await self._http_task
        if self._coap_context is not None:
            await self._coap_context.shutdown()
        if self._credentials is not None:
            await asyncio.to_thread(self._credentials.close)


async def run_authorization_server(
    store: AuthzStore,
    *,
    coap: tuple[str, int] | None = None,
    http: tuple[str, int] | None = None,
    state_dir: Path | None = None,
    certfile: str | None = None,
    keyfile: str | None = None,
    insecure: bool = False,
    public_url: str | None = None,
    dpop_nonce: bool = False,
    mutual_tls: bool = False,
    client_ca: str | None = None,
) -> None:
    """Serve until cancelled (Ctrl-C).

    With ``dpop_nonce`` the token endpoint requires a server nonce in DPoP
    proofs (RFC 9449 §8), made with a random secret of this process. DPoP
    ``jti`` values are kept in the AS's database (:class:`SqlReplayCache`), so
    AS processes sharing it refuse a proof any of them accepted (RFC 9449 §11.1).
    """
    dpop = DPoPTokenEndpointPolicy(
        nonce_issuer=NonceIssuer(secrets.token_bytes(32)) if dpop_nonce else None,
        replay_cache=(
            SqlReplayCache(engine=store.engine)
            if isinstance(store, SqlAuthzStore)
            else InMemoryReplayCache()
        ),
    )
    server = RunningServer(
        store,
        coap=coap,
        http=http,
        state_dir=state_dir or default_state_dir(),
        certfile=certfile,
        keyfile=keyfile,
        insecure=insecure,
        public_url=public_url,
        dpop=dpop,
        mutual_tls=mutual_tls,
        client_ca=client_ca,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, stop.set)
    waiters: list[asyncio.Future[Any]] = [asyncio.ensure_future(stop.wait())]
    try:
        await server.start()
        announce_ready(server.urls)
        if server.http_task is not None:
            waiters.append(server.http_task)  # uvicorn ends on a signal it caught itself
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiters[0].cancel()
        await server.stop()
