"""``keybound as``: set up, provision and run the desktop Authorization Server.

Every command takes ``--db URL`` (default: an SQLite file in the per-user data
directory; the ``KEYBOUND_AS_DB`` environment variable is honoured). Listing
commands take ``--json`` for scripts. Errors are one line on stderr, exit 2.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, ParamSpec, TypeVar
from urllib.parse import urlsplit

import typer
from rich.progress import Progress
from rich.table import Table

from keybound.core.authz_store import (
    AuthzStoreError,
    Client,
    IssuerSettings,
    RsRecord,
    UnknownRecord,
)
from keybound.core.errors import KeyboundError
from keybound.tools.authz_server.database import resolve_database_url
from keybound.tools.authz_server.http import check_listen
from keybound.tools.authz_server.provision import (
    add_clients,
    add_resource_server,
    init_issuer,
    new_introspection_secret,
    rotate_token_key,
)
from keybound.tools.authz_server.server import run_authorization_server
from keybound.tools.authz_server.storage import SqlAuthzStore
from keybound.tools.bundles import device_bundle, rs_bundle, write_bundle
from keybound.tools.cli.support import (
    LogLevelOption,
    console,
    describe,
    err_console,
    exit_code_for,
    fail,
    setup_logging,
)
from keybound.tools.keyfiles import write_secret_file
from keybound.tools.server_ready import no_port_sharing

__all__ = ["app"]

app = typer.Typer(
    help="The desktop Authorization Server: keys, resource servers, clients, serving.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
rs_app = typer.Typer(help="Resource servers the AS issues tokens for.", no_args_is_help=True)
client_app = typer.Typer(help="Clients (devices and HTTP clients).", no_args_is_help=True)
app.add_typer(rs_app, name="rs")
app.add_typer(client_app, name="client")

P = ParamSpec("P")
R = TypeVar("R")

DbOption = Annotated[
    str | None,
    typer.Option(
        "--db",
        envvar="KEYBOUND_AS_DB",
        help="database URL (sqlite:///file or postgresql://...); default: per-user SQLite file",
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="machine-readable output")]
AsBaseOption = Annotated[
    str | None,
    typer.Option("--as-base", help="the AS's CoAP address for bundles, coap://HOST:PORT"),
]


def _clean(func: Callable[P, R]) -> Callable[P, R]:
    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except (KeyboundError, AuthzStoreError, OSError, ValueError) as exc:
            raise fail(describe(exc), exit_code_for(exc)) from None
        except KeyboardInterrupt:
            sys.exit(130)

    return wrapper


@contextmanager
def _store(db: str | None, *, create: bool = False) -> Iterator[SqlAuthzStore]:
    store = SqlAuthzStore.init(db) if create else SqlAuthzStore.open(db)
    try:
        yield store
    finally:
        store.close()


def _as_base(store: SqlAuthzStore, given: str | None) -> str:
    if given:
        return given.rstrip("/")
    issuer = store.get_issuer()
    if issuer is not None and issuer.issuer.startswith("coap://"):
        parts = urlsplit(issuer.issuer)
        port = parts.port or 5683
        return f"coap://{parts.hostname}:{port}"
    return "coap://127.0.0.1:5683"


def _iso(epoch: int | None) -> str | None:
    """An epoch time as ISO 8601 UTC (``2026-12-01T22:00:00Z``)."""
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _emit(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=True))


# ---- init ---------------------------------------------------------------------------------------


@app.command("init")
@_clean
def init(
    issuer: Annotated[
        str | None, typer.Option("--issuer", help="the issuer URI (iss) of every token")
    ] = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Create the AS database and its ES256 signing key (keeps an existing key)."""
    with _store(db, create=True) as store:
        current = store.get_issuer()
        if issuer is None:
            issuer = current.issuer if current is not None else "coap://127.0.0.1:5683"
        settings = init_issuer(store, issuer)
        where = resolve_database_url(db).render_as_string(hide_password=True)
    if as_json:
        _emit({"issuer": settings.issuer, "database": where, "created": current is None})
        return
    verb = "created" if current is None else "kept"
    console.print(f"AS initialised: issuer {settings.issuer}, signing key {verb}, db {where}")


# ---- resource servers ---------------------------------------------------------------------------


def _rs_row(rs: RsRecord) -> dict[str, Any]:
    return {
        "name": rs.name,
        "audience": rs.audience,
        "scopes": list(rs.scopes),
        "has_clock": rs.has_clock,
        "profiles": list(rs.profiles),
        "lifetime": rs.default_lifetime,
        "token_key_kid": rs.token_key.kid.decode("ascii", "replace"),
        "token_key_versions": len(rs.token_keys),
    }


def _issuer(store: SqlAuthzStore) -> IssuerSettings:
    issuer = store.get_issuer()
    if issuer is None:
        raise fail("the AS is not initialised: run `keybound as init` first")
    return issuer


def _write_rs_bundle(
    store: SqlAuthzStore,
    issuer: IssuerSettings,
    rs: RsRecord,
    out: Path | None,
    as_base: str | None,
    introspection_secret: str | None = None,
) -> Path:
    """Write the RS bundle (0600) to ``out``, by default ``NAME-rs-bundle.json``.

    Without ``introspection_secret`` the one in the bundle file being replaced is
    kept: the AS holds only its hash (rotating the token key leaves it valid).
    """
    path = out or Path(f"{rs.name}-rs-bundle.json")
    if introspection_secret is None:
        introspection_secret = _bundle_introspection_secret(path, rs.name)
    return write_bundle(
        path,
        rs_bundle(
            rs,
            issuer,
            as_base=_as_base(store, as_base),
            introspection_secret=introspection_secret,
        ),
    )


def _bundle_introspection_secret(path: Path, name: str) -> str | None:
    """The ``introspection.http_secret`` of the RS bundle of ``name`` at ``path``, if any."""
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(old, dict) or old.get("name") != name:
        return None
    introspection = old.get("introspection")
    secret = introspection.get("http_secret") if isinstance(introspection, dict) else None
    return secret if isinstance(secret, str) else None


@rs_app.command("add")
@_clean
def rs_add(
    name: Annotated[str, typer.Argument(help="local name of the resource server")],
    audience: Annotated[str, typer.Option("--audience", help="the aud tokens carry")],
    scope: Annotated[list[str], typer.Option("--scope", help="a scope it understands")],
    no_clock: Annotated[
        bool, typer.Option("--no-clock", help="the RS has no clock: exi tokens (RFC 9200 §5.10.3)")
    ] = False,
    lifetime: Annotated[int, typer.Option("--lifetime", help="token lifetime, seconds")] = 3600,
    out: Annotated[Path | None, typer.Option("--out", help="RS bundle file")] = None,
    as_base: AsBaseOption = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Register a resource server: its token key and introspection context; write its bundle."""
    with _store(db) as store:
        issuer = _issuer(store)
        rs = add_resource_server(
            store, name, audience, scope, has_clock=not no_clock, lifetime=lifetime
        )
        secret = new_introspection_secret(store, name)
        path = _write_rs_bundle(store, issuer, rs, out, as_base, secret)
    if as_json:
        _emit({**_rs_row(rs), "bundle": str(path)})
        return
    console.print(f"resource server {name} (audience {audience}) added; bundle: {path} (0600)")


@app.command("rotate-key")
@_clean
def rotate_key(
    name: Annotated[str, typer.Argument(help="resource server name")],
    out: Annotated[Path | None, typer.Option("--out", help="RS bundle file")] = None,
    introspection_secret: Annotated[
        bool,
        typer.Option(
            "--introspection-secret",
            help="replace the RS's HTTP introspection secret instead; the token key stays",
        ),
    ] = False,
    as_base: AsBaseOption = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """New token key for an RS (the previous one still decrypts for introspection), or
    with --introspection-secret a new password for the RS at HTTP /introspect."""
    with _store(db) as store:
        issuer = _issuer(store)
        if introspection_secret:
            rs = store.get_resource_server(name)
            if rs is None:
                raise fail(f"no resource server named {name!r}")
            secret: str | None = new_introspection_secret(store, name)
        else:
            rs, secret = rotate_token_key(store, name), None
        path = _write_rs_bundle(store, issuer, rs, out, as_base, secret)
    if as_json:
        _emit({**_rs_row(rs), "bundle": str(path)})
        return
    what = "introspection secret" if introspection_secret else "token key"
    console.print(f"new {what} for {name}; give the RS its new bundle: {path}")


# ---- clients ------------------------------------------------------------------------------------


def _client_row(client: Client) -> dict[str, Any]:
    return {
        "client_id": client.client_id,
        "oscore": client.oscore is not None,
        "oscore_sender_id": None if client.oscore is None else client.oscore.sender_id.hex(),
        "http_secret": client.has_secret,
        "grants": {aud: list(scopes) for aud, scopes in client.grants.items()},
    }


@client_app.command("add")
@_clean
def client_add(
    name: Annotated[str, typer.Argument(help="client_id (or the prefix with --count)")],
    audience: Annotated[str, typer.Option("--audience", help="resource server audience")],
    scope: Annotated[list[str], typer.Option("--scope", help="a scope it may be given")],
    count: Annotated[int | None, typer.Option("--count", help="make N clients")] = None,
    prefix: Annotated[
        str | None, typer.Option("--prefix", help="client_id prefix with --count (default NAME-)")
    ] = None,
    out: Annotated[Path, typer.Option("--out", help="directory for device bundles")] = Path("."),
    http_secret: Annotated[
        bool, typer.Option("--http-secret", help="also make a client secret for HTTP")
    ] = False,
    no_oscore: Annotated[
        bool, typer.Option("--no-oscore", help="HTTP only: no OSCORE context")
    ] = False,
    secret_out: Annotated[
        Path | None,
        typer.Option(
            "--secret-out",
            help="with --http-secret: write the client secret alone to FILE (0600; - prints it)",
        ),
    ] = None,
    rs_uri: Annotated[
        str, typer.Option("--rs-uri", help="the RS address the device talks to")
    ] = "coap://192.0.2.1:5683",
    as_base: AsBaseOption = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Register clients and write one device bundle (0600) each."""
    if no_oscore and not http_secret:
        raise fail("a client needs --http-secret when it has no OSCORE context")
    if secret_out is not None and not http_secret:
        raise fail("--secret-out needs --http-secret")
    if secret_out is not None and count is not None:
        raise fail("--secret-out takes one client; with --count each bundle holds its secret")
    if secret_out is not None and str(secret_out) == "-" and as_json:
        raise fail("--secret-out - prints the secret alone; use a file with --json")
    if count is not None:
        if count < 1:
            raise fail("--count must be at least 1")
        stem = prefix if prefix is not None else f"{name}-"
        ids = [f"{stem}{i}" for i in range(1, count + 1)]
    else:
        ids = [name]
    with _store(db) as store:
        if store.get_resource_server_by_audience(audience) is None:
            raise fail(f"no resource server with audience {audience!r}: add it with `rs add`")
        made = add_clients(
            store, ids, {audience: scope}, oscore=not no_oscore, http_secret=http_secret
        )
        base = _as_base(store, as_base)
    written: list[dict[str, Any]] = []
    with Progress(console=console, transient=True, disable=count is None or as_json) as bar:
        task = bar.add_task("writing device bundles", total=len(made))
        for new in made:
            bundle = device_bundle(
                new.client.client_id,
                as_base=base,
                rs_uri=rs_uri,
                audience=audience,
                scope=" ".join(scope),
                oscore=new.oscore,
                http_secret=new.http_secret,
            )
            path = write_bundle(out / f"{new.client.client_id}.json", bundle)
            written.append({**_client_row(new.client), "bundle": str(path)})
            bar.advance(task)
    secret = made[0].http_secret if secret_out is not None else None
    if secret is not None and secret_out is not None and str(secret_out) != "-":
        write_secret_file(secret_out, f"{secret}\n".encode())
    if as_json:
        _emit(written)
    else:
        console.print(f"{len(written)} client(s) added; device bundles in {out} (0600)")
        if http_secret and secret_out is None:
            console.print(
                "the HTTP client secret is in each bundle (http.client_secret); "
                "--secret-out FILE writes it alone"
            )
        elif secret_out is not None and str(secret_out) != "-":
            console.print(f"client secret written to {secret_out} (0600)")
    if secret is not None and str(secret_out) == "-":
        # asked for on purpose; the AS keeps only a hash, so it cannot be shown again
        err_console.print(
            "warning: the client secret follows; the AS cannot show it again", markup=False
        )
        sys.stdout.write(f"{secret}\n")


# ---- list, show, remove, revoke -----------------------------------------------------------------


@app.command("list")
@_clean
def list_all(db: DbOption = None, as_json: JsonOption = False) -> None:
    """The resource servers and clients."""
    with _store(db) as store:
        servers = [_rs_row(rs) for rs in store.list_resource_servers()]
        clients = [_client_row(c) for c in store.list_clients()]
    if as_json:
        _emit({"resource_servers": servers, "clients": clients})
        return
    rs_table = Table(title="resource servers")
    for column in ("name", "audience", "scopes", "clock", "key kid"):
        rs_table.add_column(column)
    for row in servers:
        rs_table.add_row(
            row["name"],
            row["audience"],
            " ".join(row["scopes"]),
            "yes" if row["has_clock"] else "no (exi)",
            row["token_key_kid"],
        )
    client_table = Table(title="clients")
    for column in ("client_id", "OSCORE", "HTTP", "grants"):
        client_table.add_column(column)
    for row in clients:
        grants = "; ".join(f"{aud}: {' '.join(s)}" for aud, s in row["grants"].items())
        client_table.add_row(
            row["client_id"],
            row["oscore_sender_id"] or "-",
            "yes" if row["http_secret"] else "-",
            grants,
        )
    console.print(rs_table)
    console.print(client_table)


@app.command("show")
@_clean
def show(
    name: Annotated[str, typer.Argument(help="client_id or resource server name")],
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """One client (with its recent tokens) or resource server."""
    with _store(db) as store:
        client = store.get_client(name)
        data: dict[str, Any]
        if client is not None:
            tokens = store.list_tokens(name, limit=20)
            data = {
                "kind": "client",
                **_client_row(client),
                "tokens": [
                    {
                        "cti": t.cti.hex(),
                        "audience": t.audience,
                        "scope": t.scope,
                        "iat": t.iat,
                        "iat_iso": _iso(t.iat),
                        "exp": t.exp,
                        "exp_iso": _iso(t.exp),
                        "exi": t.exi,
                        "sequence": t.sequence,
                        "revoked": t.revoked,
                    }
                    for t in tokens
                ],
            }
        else:
            rs = store.get_resource_server(name)
            if rs is None:
                raise fail(f"no client or resource server named {name!r}")
            data = {"kind": "resource_server", **_rs_row(rs)}
    if as_json:
        _emit(data)
        return
    table = Table(title=f"{data['kind'].replace('_', ' ')} {name}", show_header=False)
    for key, value in data.items():
        if key != "tokens":
            table.add_row(key, json.dumps(value) if not isinstance(value, str) else value)
    console.print(table)
    if data.get("tokens"):
        tokens_table = Table(title="recent tokens")
        for column in ("cti", "audience", "scope", "issued", "exp/exi", "revoked"):
            tokens_table.add_column(column, overflow="fold")
        for t in data["tokens"]:
            issued = f"{t['iat_iso']} ({t['iat']})" if t["iat"] is not None else ""
            limit = (
                f"exp {t['exp_iso']} ({t['exp']})" if t["exp"] is not None else f"exi {t['exi']}"
            )
            tokens_table.add_row(
                t["cti"], t["audience"], t["scope"], issued, limit, "yes" if t["revoked"] else ""
            )
        console.print(tokens_table)


@app.command("remove")
@_clean
def remove(
    name: Annotated[str, typer.Argument(help="client_id or resource server name")],
    db: DbOption = None,
) -> None:
    """Forget a client or a resource server (issued tokens stay on record)."""
    with _store(db) as store:
        if store.get_client(name) is not None:
            store.remove_client(name)
            console.print(f"client {name} removed")
        elif store.get_resource_server(name) is not None:
            store.remove_resource_server(name)
            console.print(f"resource server {name} removed")
        else:
            raise fail(f"no client or resource server named {name!r}")


def _cti(text: str) -> bytes:
    """A recorded cti: hex, or ``AUDIENCE#SEQ`` for a sequence-number token."""
    if "#" in text:
        audience, _, seq = text.rpartition("#")
        if not seq.isdigit() or not audience:
            raise ValueError("a sequence-number cti looks like AUDIENCE#NUMBER")
        return f"{audience}#{int(seq)}".encode()
    return bytes.fromhex(text)


@app.command("revoke")
@_clean
def revoke(
    cti: Annotated[str, typer.Argument(help="the token's cti in hex, or AUDIENCE#SEQ")],
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Mark a token revoked: introspection answers inactive from now on."""
    with _store(db) as store:
        try:
            record = store.revoke(_cti(cti))
        except UnknownRecord:
            raise fail(f"no token with cti {cti}") from None
    if as_json:
        _emit({"cti": record.cti.hex(), "client_id": record.client_id, "revoked": True})
        return
    console.print(f"token {cti} of {record.client_id} for {record.audience} revoked")


# ---- serve --------------------------------------------------------------------------------------


def _address(text: str, default_port: int) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep:
        return text, default_port
    host = host.strip("[]")
    if not port.isdigit() or not host:
        raise ValueError(f"not HOST:PORT: {text!r}")
    if not 0 < int(port) < 65536:
        raise ValueError(f"not HOST:PORT (port 1 to 65535): {text!r}")
    return host, int(port)


@app.command("serve")
@_clean
def serve(
    coap: Annotated[
        str | None, typer.Option("--coap", help="CoAP HOST:PORT (default 127.0.0.1:5683)")
    ] = None,
    http: Annotated[str | None, typer.Option("--http", help="HTTP HOST:PORT")] = None,
    cert: Annotated[Path | None, typer.Option("--cert", help="TLS certificate (PEM)")] = None,
    keyfile: Annotated[Path | None, typer.Option("--keyfile", help="TLS key (PEM)")] = None,
    insecure: Annotated[
        bool, typer.Option("--insecure", help="allow plain HTTP beyond loopback")
    ] = False,
    state_dir: Annotated[
        Path | None, typer.Option("--state-dir", help="where OSCORE sequence numbers are kept")
    ] = None,
    public_url: Annotated[
        str | None,
        typer.Option(
            "--public-url",
            help="external URL of the HTTP root (DPoP proofs name {URL}/token); "
            "default: the --http address",
        ),
    ] = None,
    dpop_nonce: Annotated[
        bool,
        typer.Option("--dpop-nonce", help="require server nonces in DPoP proofs (RFC 9449 §8)"),
    ] = False,
    db: DbOption = None,
    log_level: LogLevelOption = "info",
) -> None:
    """Run the AS: CoAP (/token, /introspect over OSCORE) and optionally HTTP, one event loop.

    Once every endpoint listens, prints ``keybound: ready URL [URL]`` on stdout
    and notifies systemd (``READY=1``) when ``NOTIFY_SOCKET`` is set.
    """
    if (cert is None) != (keyfile is None):
        raise fail("--cert and --keyfile go together")
    if public_url is not None:
        parts = urlsplit(public_url)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.query:
            raise fail(f"--public-url {public_url!r} is not an http(s) URL without a query")
    coap_addr = _address(coap, 5683) if coap else None
    http_addr = _address(http, 8080) if http else None
    if coap_addr is None and http_addr is None:
        coap_addr = ("127.0.0.1", 5683)
    if http_addr is not None:
        check_listen(http_addr[0], tls=cert is not None, insecure=insecure)
    setup_logging(log_level)
    no_port_sharing()
    with _store(db) as store, suppress(KeyboardInterrupt):
        asyncio.run(
            run_authorization_server(
                store,
                coap=coap_addr,
                http=http_addr,
                state_dir=state_dir,
                certfile=None if cert is None else os.fspath(cert),
                keyfile=None if keyfile is None else os.fspath(keyfile),
                insecure=insecure,
                public_url=None if public_url is None else public_url.rstrip("/"),
                dpop_nonce=dpop_nonce,
            )
        )


if __name__ == "__main__":
    app()
