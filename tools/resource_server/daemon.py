"""The Resource Server daemon: ``keybound rs serve --config rs.toml``.

Configuration (TOML). Relative paths (``bundle``, ``state``) are resolved next to
the configuration file, not the working directory, so a service can start from
anywhere. Unknown keys and sections are errors (with a "did you mean" hint): a
misspelt ``listen`` must not serve on the default address::

    bundle = "rs-bundle.json"        # written by the AS: keys and names of this RS (0600)
    listen = "127.0.0.1:5683"        # host:port, or [v6 address]:port
    state = "rs-state.db"            # SQLite: tokens, contexts, sequence numbers (0600)
    require_as_signature = true      # tokens must carry the AS's COSE_Sign1 inside the
                                     # Encrypt0; the default is true when the bundle holds
                                     # the AS public key, false otherwise
    profiles = ["oscore", "edhoc"]   # the ACE profiles served (default: the bundle's):
                                     # oscore (RFC 9203) and/or edhoc (EDHOC and OSCORE
                                     # profile, draft-ietf-ace-edhoc-oscore-profile-11)

    [edhoc]                          # needed with the edhoc profile
    private_key = "rs.key"           # the RS's EDHOC key (keybound key generate --ccs, 0600)
    credential = "rs.key.ccs"        # its credential, the one the AS knows (rs add --credential)

    [capacity]
    tokens = 1000                    # stored tokens (and OSCORE contexts) at most

    [introspection]                  # optional: ask the AS about each posted token
    mode = "optional"                # off (default), optional, or required (refuse when
                                     # the AS cannot be reached); uses the bundle's
                                     # introspection block (RFC 9200 §5.9)

    [trl]                            # optional: follow the AS's token revocation list
    mode = "observe"                 # off (default), observe, or poll (RFC 9770): listed
                                     # tokens are removed at once and refused when posted
                                     # again; uses the bundle's introspection block
    interval = 5.0                   # poll: seconds between diff queries (0.1 to 3600)

    [oscore]                         # optional
    sequence_chunk = 64              # sequence numbers reserved per write (RFC 8613 B.1.1)
    response_partial_iv = false      # every response carries the RS's own Partial IV

    [resources."/temp"]              # a temperature sensor
    GET = ["temp.read"]

    [resources."/led"]               # an LED-like actuator: GET and PUT its state
    kind = "switch"
    GET = ["led.read"]
    PUT = ["led.write"]

Each resource maps methods to the text scope tokens that allow them (RFC 6749 §3.3;
AIF scopes of RFC 9237 need no declaration). ``kind`` is ``temperature`` (reads
``/sys/class/thermal/thermal_zone0/temp`` where present, otherwise a simulated
value) or ``switch``; without ``kind``, paths containing "temp" are temperature
sensors and the others switches.

The bundle is the JSON file the AS writes for this RS (``kind``
``keybound-rs-bundle``, ``version`` 1): ``audience``, ``issuer``, ``as_uri`` (sent
in AS Request Creation Hints, RFC 9200 §5.3), ``token_key`` (the AS-RS symmetric
JWK, AES-CCM-16-64-128), ``as_public_key`` (the AS's public JWK, verifying a
COSE_Sign1 nested in the token), ``has_clock`` (False: tokens must carry ``exi``,
RFC 9200 §5.10.3), ``scopes`` and ``profiles``. A bundle that others can read is
refused.

The daemon logs accepted and rejected tokens (never keys or secrets), expires
tokens and their contexts, and stops cleanly on SIGTERM or SIGINT; every state
change is durable before the RS answers, so a SIGKILL loses nothing but the
replay windows, which restarted contexts rebuild with Echo (RFC 8613 Appendix B.1.2).
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import hashlib
import json
import logging
import math
import os
import signal
import sqlite3
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiocoap
import aiocoap.resource
from aiocoap.numbers.codes import Code

from keybound.coap.client import client_context
from keybound.coap.introspection import Introspector
from keybound.coap.oscore_contexts import DurableSecurityContext
from keybound.coap.resource_server_site import EdhocIdentity, ResourceServerSite
from keybound.coap.trl_watcher import TrlWatcher
from keybound.core.edhoc_credentials import holds
from keybound.core.errors import KeyboundError
from keybound.core.numbers.ace_profiles import AceProfile
from keybound.core.resource_server import ResourceServer, RsPolicy
from keybound.core.trl import KnownHashes
from keybound.tools.bundles import BundleError, RsBundle
from keybound.tools.client.state import SequenceFile
from keybound.tools.keyfiles import read_ccs, read_edhoc_private_key
from keybound.tools.resource_server.state import SqliteRsState
from keybound.tools.server_ready import announce_ready, check_port_free, url_for

log = logging.getLogger("keybound.rs")

THERMAL_ZONE = Path("/sys/class/thermal/thermal_zone0/temp")
MAX_CONFIG_BYTES = 256 * 1024
_METHODS = ("GET", "POST", "PUT", "DELETE", "FETCH", "PATCH", "iPATCH")


class ConfigError(ValueError):
    """The configuration or the bundle is unusable; the message is one line."""


# ---- configuration ----------------------------------------------------------------------


@dataclass(frozen=True)
class ResourceSpec:
    path: str
    kind: str
    scopes: dict[str, list[str]]


@dataclass(frozen=True)
class RsConfig:
    bundle: RsBundle
    listen: tuple[str, int]
    state: Path
    capacity: int = 1000
    sequence_chunk: int = 64
    response_partial_iv: bool = False
    resources: tuple[ResourceSpec, ...] = ()
    introspection: str = "off"  # "off", "optional" or "required"
    trl: str = "off"  # "off", "observe" or "poll" (RFC 9770)
    trl_interval: float = 5.0  # seconds between the diff queries of "poll"
    require_as_signature: bool = False
    profiles: tuple[int, ...] = (2,)
    edhoc: EdhocIdentity | None = None


def parse_listen(text: object) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port``."""
    if not isinstance(text, str) or ":" not in text:
        raise ConfigError(f"listen must be 'host:port', not {text!r}")
    host, _, port_text = text.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ConfigError(f"listen must be 'host:port', not {text!r}")
    return host, int(port_text)


#: The keys ``rs.toml`` may hold: top-level keys, then the keys of each section (a
#: ``None`` entry is a section whose keys are checked where it is read).
KNOWN_KEYS: dict[str, frozenset[str] | None] = {
    "": frozenset({"bundle", "listen", "state", "require_as_signature", "profiles"}),
    "edhoc": frozenset({"private_key", "credential"}),
    "capacity": frozenset({"tokens"}),
    "introspection": frozenset({"mode"}),
    "trl": frozenset({"mode", "interval"}),
    "oscore": frozenset({"sequence_chunk", "response_partial_iv"}),
    "resources": None,
}


def _did_you_mean(name: str, known: frozenset[str] | set[str]) -> str:
    close = difflib.get_close_matches(name, sorted(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def check_known_keys(data: dict[str, Any], where: str) -> None:
    """Refuse keys and sections that :data:`KNOWN_KEYS` does not list."""
    top = KNOWN_KEYS[""] or frozenset()
    sections = {name for name in KNOWN_KEYS if name}
    for name, value in data.items():
        if name in sections:
            keys = KNOWN_KEYS[name]
            if keys is None or not isinstance(value, dict):
                continue
            for key in value:
                if key not in keys:
                    hint = _did_you_mean(key, keys)
                    raise ConfigError(f"{where}: unknown key {key!r} in [{name}]{hint}")
        elif name not in top:
            kind = "section" if isinstance(value, dict) else "key"
            hint = _did_you_mean(name, top | sections)
            raise ConfigError(f"{where}: unknown {kind} {name!r}{hint}")


def _need(table: dict[str, Any], name: str, kind: type, where: str) -> Any:
    if name not in table:
        raise ConfigError(f"{where}: {name} is missing")
    value = table[name]
    if not isinstance(value, kind) or isinstance(value, bool) != (kind is bool):
        raise ConfigError(f"{where}: {name} must be a {kind.__name__}")
    return value


def load_bundle(path: Path) -> RsBundle:
    """Read and check the RS bundle written by the AS (:meth:`RsBundle.read`); it must
    not be readable by others."""
    try:
        return RsBundle.read(path, private=True)
    except BundleError as exc:
        raise ConfigError(exc.description) from None


def load_config(path: Path) -> RsConfig:
    """Read ``rs.toml``; raises :class:`ConfigError` with one line on any problem."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path} is larger than {MAX_CONFIG_BYTES} bytes")
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    where = str(path)
    check_known_keys(data, where)
    base = path.parent
    bundle = load_bundle(base / _need(data, "bundle", str, where))
    listen = parse_listen(data.get("listen", "127.0.0.1:5683"))
    state = base / _need(data, "state", str, where)
    require_as_signature = data.get("require_as_signature", bundle.as_public_key is not None)
    if not isinstance(require_as_signature, bool):
        raise ConfigError(f"{where}: require_as_signature must be true or false")
    if require_as_signature and bundle.as_public_key is None:
        raise ConfigError(f"{where}: require_as_signature needs a bundle with as_public_key")
    capacity_table = data.get("capacity", {})
    if not isinstance(capacity_table, dict):
        raise ConfigError(f"{where}: [capacity] must be a table")
    capacity = capacity_table.get("tokens", 1000)
    if type(capacity) is not int or capacity < 1:
        raise ConfigError(f"{where}: capacity.tokens must be a positive integer")
    oscore_table = data.get("oscore", {})
    if not isinstance(oscore_table, dict):
        raise ConfigError(f"{where}: [oscore] must be a table")
    chunk = oscore_table.get("sequence_chunk", 64)
    if type(chunk) is not int or not 1 <= chunk <= 2**20:
        raise ConfigError(f"{where}: oscore.sequence_chunk must be 1 to 1048576")
    response_piv = oscore_table.get("response_partial_iv", False)
    if not isinstance(response_piv, bool):
        raise ConfigError(f"{where}: oscore.response_partial_iv must be true or false")
    introspection_table = data.get("introspection", {})
    if not isinstance(introspection_table, dict):
        raise ConfigError(f"{where}: [introspection] must be a table")
    introspection = introspection_table.get("mode", "off")
    if introspection not in ("off", "optional", "required"):
        raise ConfigError(f"{where}: introspection.mode must be off, optional or required")
    if introspection != "off" and bundle.introspection_uri is None:
        raise ConfigError(f"{where}: introspection needs a bundle with an introspection block")
    trl_table = data.get("trl", {})
    if not isinstance(trl_table, dict):
        raise ConfigError(f"{where}: [trl] must be a table")
    trl_mode = trl_table.get("mode", "off")
    if trl_mode not in ("off", "observe", "poll"):
        raise ConfigError(f"{where}: trl.mode must be off, observe or poll")
    trl_interval = trl_table.get("interval", 5.0)
    if type(trl_interval) not in (int, float) or not 0.1 <= trl_interval <= 3600:
        raise ConfigError(f"{where}: trl.interval must be 0.1 to 3600 seconds")
    if trl_mode != "off" and bundle.introspection_context is None:
        raise ConfigError(
            f"{where}: following the TRL needs a bundle with an introspection block "
            "(the RS's OSCORE context with the AS)"
        )
    resources_table = data.get("resources", {})
    if not isinstance(resources_table, dict) or not resources_table:
        raise ConfigError(f'{where}: declare at least one [resources."/path"] table')
    resources = []
    for res_path, spec in resources_table.items():
        if not isinstance(spec, dict) or not res_path.startswith("/") or res_path == "/":
            raise ConfigError(f"{where}: resources.{res_path!r} must be a table for a /path")
        kind = spec.get("kind", "temperature" if "temp" in res_path else "switch")
        if kind not in ("temperature", "switch"):
            raise ConfigError(f"{where}: resources.{res_path!r}.kind must be temperature/switch")
        scopes: dict[str, list[str]] = {}
        for method, tokens in spec.items():
            if method == "kind":
                continue
            if method not in _METHODS:
                hint = _did_you_mean(method, {*_METHODS, "kind"})
                raise ConfigError(
                    f"{where}: resources.{res_path!r}: unknown method {method!r}{hint}"
                )
            if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
                raise ConfigError(
                    f"{where}: resources.{res_path!r}.{method} must be a list of scope names"
                )
            scopes[method] = tokens
        resources.append(ResourceSpec(res_path, kind, scopes))
    profiles = _profiles(data.get("profiles"), bundle, where)
    edhoc = _edhoc_identity(data.get("edhoc"), profiles, bundle, base, where)
    return RsConfig(
        profiles=profiles,
        edhoc=edhoc,
        bundle=bundle,
        listen=listen,
        state=state,
        capacity=capacity,
        sequence_chunk=chunk,
        response_partial_iv=response_piv,
        resources=tuple(resources),
        introspection=introspection,
        trl=trl_mode,
        trl_interval=float(trl_interval),
        require_as_signature=require_as_signature,
    )


def _profiles(value: object, bundle: RsBundle, where: str) -> tuple[int, ...]:
    if value is None:
        return tuple(bundle.profiles)
    names = {"oscore": int(AceProfile.COAP_OSCORE), "edhoc": int(AceProfile.COAP_EDHOC_OSCORE)}
    if not isinstance(value, list) or not value or any(v not in names for v in value):
        raise ConfigError(f"{where}: profiles must be a list of oscore and/or edhoc")
    return tuple(dict.fromkeys(names[v] for v in value))


def _edhoc_identity(
    table: object, profiles: tuple[int, ...], bundle: RsBundle, base: Path, where: str
) -> EdhocIdentity | None:
    """The RS's EDHOC key and credential of ``[edhoc]``, checked against the bundle's."""
    if int(AceProfile.COAP_EDHOC_OSCORE) not in profiles:
        return None
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: the edhoc profile needs an [edhoc] table")
    key_path = base / _need(table, "private_key", str, where)
    credential_path = base / _need(table, "credential", str, where)
    try:
        private_key = read_edhoc_private_key(key_path)
        credential = read_ccs(credential_path)
    except (OSError, KeyboundError) as exc:
        raise ConfigError(f"{where}: [edhoc]: {exc}") from None
    if bundle.edhoc_credential is not None and bundle.edhoc_credential != credential.encoded:
        raise ConfigError(
            f"{where}: [edhoc] credential is not the one the AS knows for this RS (bundle)"
        )
    if not holds(private_key, credential):
        raise ConfigError(f"{where}: [edhoc] private_key does not belong to the credential")
    return EdhocIdentity(private_key, credential)


# ---- example resources ------------------------------------------------------------------


class TemperatureResource(aiocoap.resource.Resource):  # type: ignore[misc]
    """GET: the temperature in °C as text, from the thermal zone or simulated."""

    def __init__(self, source: Path = THERMAL_ZONE, clock: Callable[[], float] = time.time):
        super().__init__()
        self.source = source
        self.clock = clock
        self.simulating = False

    def read(self) -> float:
        try:
            value = int(self.source.read_text().strip()) / 1000.0
        except (OSError, ValueError) as exc:
            if not self.simulating:  # said once, and again after the sensor came back
                log.warning(
                    "no temperature at %s (%s): serving a simulated value",
                    self.source,
                    exc.strerror if isinstance(exc, OSError) else "not a number",
                )
                self.simulating = True
            return round(21.0 + 2.0 * math.sin(self.clock() / 600.0), 2)
        if self.simulating:
            log.info("temperature from %s again", self.source)
            self.simulating = False
        return value

    async def render_get(self, request: aiocoap.Message) -> aiocoap.Message:
        return aiocoap.Message(payload=f"{self.read():.2f}".encode(), content_format=0)


class SwitchResource(aiocoap.resource.Resource):  # type: ignore[misc]
    """An LED-like actuator: GET its state (``on``/``off``), PUT ``on``, ``off`` or ``toggle``."""

    def __init__(self) -> None:
        super().__init__()
        self.on = False

    async def render_get(self, request: aiocoap.Message) -> aiocoap.Message:
        return aiocoap.Message(payload=b"on" if self.on else b"off", content_format=0)

    async def render_put(self, request: aiocoap.Message) -> aiocoap.Message:
        value = request.payload.strip().lower()
        if value in (b"on", b"1", b"true"):
            self.on = True
        elif value in (b"off", b"0", b"false"):
            self.on = False
        elif value == b"toggle":
            self.on = not self.on
        else:
            return aiocoap.Message(code=Code.BAD_REQUEST, payload=b"on, off or toggle")
        return aiocoap.Message(code=Code.CHANGED, payload=b"on" if self.on else b"off")


# ---- running ----------------------------------------------------------------------------


def build_site(config: RsConfig) -> ResourceServerSite:
    """The RS with its resources and state store, restored from the state file."""
    bundle = config.bundle
    policy = RsPolicy(
        audience=bundle.audience,
        as_uri=bundle.as_uri,
        token_keys=(bundle.token_key,),
        as_public_keys=(bundle.as_public_key,) if bundle.as_public_key else (),
        issuer=bundle.issuer,
        has_clock=bundle.has_clock,
        profiles=frozenset(config.profiles),
        capacity=config.capacity,
        require_signature=config.require_as_signature,
    )
    rs = ResourceServer(policy)
    site = ResourceServerSite(
        rs,
        state=SqliteRsState(config.state),
        sequence_chunk=config.sequence_chunk,
        response_partial_iv=config.response_partial_iv,
        edhoc=config.edhoc,
    )
    for spec in config.resources:
        resource: aiocoap.resource.Resource = (
            TemperatureResource() if spec.kind == "temperature" else SwitchResource()
        )
        site.add_protected(spec.path, resource, scopes=spec.scopes)
    site.restore()
    return site


def as_context(site: ResourceServerSite, config: RsConfig) -> DurableSecurityContext:
    """The RS's OSCORE context with the AS, made once and shared (introspection and the
    TRL use one context object, so no sequence number is used twice). Its Sender
    Sequence Number is written ahead into ``<state>.introspection-seq.json``
    (RFC 8613 Appendix B.1.1)."""
    if site.as_context is not None:
        return site.as_context
    ctx = config.bundle.introspection_context
    assert ctx is not None  # load_config checked
    fingerprint = hashlib.sha256(ctx.master_secret + ctx.sender_id).hexdigest()[:16]
    seq = SequenceFile(
        config.state.with_name(config.state.name + ".introspection-seq.json"), fingerprint
    )
    context = client_context(ctx, mark=seq.load(), persist_mark=seq.store)
    site.as_context = context
    return context


def attach_introspector(site: ResourceServerSite, config: RsConfig) -> None:
    """Ask the AS about posted tokens (``[introspection] mode``), once the site is serving."""
    bundle = config.bundle
    if config.introspection == "off":
        return
    assert bundle.introspection_uri is not None
    site.introspector = Introspector(bundle.introspection_uri, as_context(site, config))
    site.introspection_required = config.introspection == "required"
    log.info("introspecting tokens at %s (%s)", bundle.introspection_uri, config.introspection)


def trl_uri(bundle: RsBundle) -> str:
    """The AS's TRL endpoint: ``/revoke/trl`` beside its ``/introspect``."""
    base = bundle.introspection_uri
    if base is not None and base.endswith("/introspect"):
        return base.removesuffix("/introspect") + "/revoke/trl"
    return bundle.as_uri.rsplit("/", 1)[0] + "/revoke/trl"  # as_uri names /token


def attach_trl_watcher(site: ResourceServerSite, config: RsConfig) -> TrlWatcher | None:
    """Follow the AS's token revocation list (``[trl] mode``), once the site is serving.

    The known token hashes and the cursor are kept in ``<state>.trl.json`` (0600);
    tokens they list are refused from the start, before the AS is reached again.
    """
    if config.trl == "off":
        return None
    path = config.state.with_name(config.state.name + ".trl.json")
    known = _load_known(path)
    watcher = TrlWatcher(
        site, trl_uri(config.bundle), as_context(site, config), known,
        save=lambda k: _save_known(path, k),
    )  # fmt: skip
    how = f"every {config.trl_interval:g} s" if config.trl == "poll" else "by observation"
    log.info("following the token revocation list at %s (%s)", watcher.uri, how)
    return watcher


def _load_known(path: Path) -> KnownHashes:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return KnownHashes()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    try:
        return KnownHashes.from_json(json.loads(text))
    except (ValueError, KeyboundError) as exc:
        raise ConfigError(f"{path} is damaged ({exc}); remove it to fetch the list again") from None


def _save_known(path: Path, known: KnownHashes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        json.dump(known.to_json(), out)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)


async def run(config: RsConfig, *, stop: asyncio.Event | None = None) -> None:
    """Serve until SIGTERM/SIGINT (or ``stop`` is set), then shut down cleanly.

    The clean shutdown saves the replay windows and marks the state file, so the
    next start needs no Echo; after a crash it does (RFC 8613 Appendix B.1.2).
    """
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    host, port = config.listen
    url = url_for("coap", host, port)
    check_port_free("coap", host, port)
    try:
        site = build_site(config)
    except (OSError, sqlite3.Error, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(f"cannot use the state file {config.state}: {reason}") from None
    watcher: TrlWatcher | None = None
    following: asyncio.Task[None] | None = None
    try:
        await site.serve(config.listen)
        attach_introspector(site, config)
        watcher = attach_trl_watcher(site, config)
        if watcher is not None:
            poll = config.trl_interval if config.trl == "poll" else None
            following = asyncio.create_task(watcher.run(poll=poll))
        log.info(
            "RS %r (audience %r) listening on %s with %d resource(s)",
            config.bundle.name,
            config.bundle.audience,
            url,
            len(config.resources),
        )
        announce_ready([url])
        await stop.wait()
        log.info("shutting down")
    finally:
        if following is not None:
            following.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await following
        if watcher is not None:
            await watcher.close()
        await site.shutdown()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)


__all__ = [
    "KNOWN_KEYS",
    "ConfigError",
    "ResourceSpec",
    "RsConfig",
    "SwitchResource",
    "TemperatureResource",
    "as_context",
    "attach_introspector",
    "attach_trl_watcher",
    "build_site",
    "check_known_keys",
    "load_bundle",
    "load_config",
    "parse_listen",
    "run",
    "trl_uri",
]
