"""``keybound as``: set up, provision and run the desktop Authorization Server.

Every command takes ``--db URL`` (default: an SQLite file in the per-user data
directory; the ``KEYBOUND_AS_DB`` environment variable is honoured). Listing
commands take ``--json`` for scripts. Errors are one line on stderr, exit 2.
The work is done by :mod:`keybound.tools.authz_server.operations`.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, ParamSpec, TypeVar

import typer

from keybound.core.authz_store import AuthzStoreError
from keybound.core.errors import KeyboundError
from keybound.tools.authz_server import operations
from keybound.tools.cli.support import (
    LogLevelOption,
    console,
    describe,
    err_console,
    exit_code_for,
    fail,
    setup_logging,
)

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
    done = operations.initialise(db, issuer)
    if as_json:
        _emit({"issuer": done.settings.issuer, "database": done.database, "created": done.created})
        return
    verb = "created" if done.created else "kept"
    console.print(
        f"AS initialised: issuer {done.settings.issuer}, signing key {verb}, db {done.database}"
    )


# ---- resource servers ---------------------------------------------------------------------------


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
    profile: Annotated[
        list[str] | None,
        typer.Option("--profile", help="an ACE profile it speaks: oscore (default) or edhoc"),
    ] = None,
    credential: Annotated[
        Path | None,
        typer.Option("--credential", help="its EDHOC credential (CCS file), for --profile edhoc"),
    ] = None,
    as_base: AsBaseOption = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Register a resource server: its token key and introspection context; write its bundle."""
    rs, path = operations.add_rs(
        db,
        name,
        audience,
        scope,
        has_clock=not no_clock,
        lifetime=lifetime,
        out=out,
        as_base=as_base,
        profiles=operations.profile_numbers(profile or ["oscore"]),
        credential=None if credential is None else operations.read_credential(credential),
    )
    if as_json:
        _emit({**operations.rs_row(rs), "bundle": str(path)})
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
    rs, path = operations.rotate(
        db, name, introspection_secret=introspection_secret, out=out, as_base=as_base
    )
    if as_json:
        _emit({**operations.rs_row(rs), "bundle": str(path)})
        return
    what = "introspection secret" if introspection_secret else "token key"
    console.print(f"new {what} for {name}; give the RS its new bundle: {path}")


# ---- clients ------------------------------------------------------------------------------------


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
    credential: Annotated[
        Path | None,
        typer.Option(
            "--credential",
            help="the client's EDHOC credential (CCS file, public): the EDHOC profile binds it",
        ),
    ] = None,
    as_base: AsBaseOption = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Register clients and write one device bundle (0600) each.

    With ``--credential`` the client is known by its public EDHOC credential
    (``keybound key generate --ccs``); its private key never reaches the AS.
    """
    from rich.progress import Progress  # noqa: PLC0415 - import time

    from keybound.tools.keyfiles import write_secret_file  # noqa: PLC0415

    if no_oscore and not http_secret:
        raise fail("a client needs --http-secret when it has no OSCORE context")
    if secret_out is not None and not http_secret:
        raise fail("--secret-out needs --http-secret")
    if secret_out is not None and count is not None:
        raise fail("--secret-out takes one client; with --count each bundle holds its secret")
    if secret_out is not None and str(secret_out) == "-" and as_json:
        raise fail("--secret-out - prints the secret alone; use a file with --json")
    ids = operations.client_ids(name, count, prefix)
    with Progress(console=console, transient=True, disable=count is None or as_json) as bar:
        task = bar.add_task("writing device bundles", total=len(ids))
        added = operations.add_clients_with_bundles(
            db,
            ids,
            audience,
            scope,
            oscore=not no_oscore,
            http_secret=http_secret,
            out=out,
            rs_uri=rs_uri,
            as_base=as_base,
            on_written=lambda: bar.advance(task),
            credential=None if credential is None else operations.read_credential(credential),
        )
    secret = added.made[0].http_secret if secret_out is not None else None
    if secret is not None and secret_out is not None and str(secret_out) != "-":
        write_secret_file(secret_out, f"{secret}\n".encode())
    if as_json:
        _emit(added.rows)
    else:
        console.print(f"{len(added.rows)} client(s) added; device bundles in {out} (0600)")
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


@client_app.command("add-tls")
@_clean
def client_add_tls(
    name: Annotated[str, typer.Argument(help="client_id")],
    audience: Annotated[str, typer.Option("--audience", help="resource server audience")],
    scope: Annotated[list[str], typer.Option("--scope", help="a scope it may be given")],
    self_signed: Annotated[
        Path | None,
        typer.Option(
            "--self-signed", help="its self-signed certificate, PEM or DER (RFC 8705 §2.2)"
        ),
    ] = None,
    subject_dn: Annotated[
        str | None,
        typer.Option("--subject-dn", help="PKI: its certificate's subject DN, RFC 4514 (§2.1)"),
    ] = None,
    san: Annotated[
        str | None,
        typer.Option("--san", help="PKI: a SAN of its certificate, dns=|uri=|ip=|email=VALUE"),
    ] = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Register an HTTP client that authenticates with a TLS certificate (RFC 8705 §2).

    Its tokens from the HTTPS token endpoint (``as serve --mtls``) are bound to
    that certificate (``cnf`` ``x5t#S256``). A self-signed client is trusted by
    a running AS after its restart.
    """
    from keybound.tools.authz_server.mutual_tls import (  # noqa: PLC0415 - import time
        add_tls_client,
        tls_registration,
    )

    try:
        registration = tls_registration(
            self_signed=None if self_signed is None else self_signed.read_bytes(),
            subject_dn=subject_dn,
            san=san,
        )
    except (OSError, ValueError) as err:
        raise fail(f"cannot register the client: {err}") from None
    with operations.open_store(db) as store:
        client = add_tls_client(store, name, {audience: list(scope)}, registration)
    row = {
        **operations.client_row(client),
        "tls_client_auth": registration.method,
        "x5t#S256": registration.thumbprint,
    }
    if as_json:
        _emit(row)
    else:
        console.print(f"client {name} added ({registration.method})")


@client_app.command("rekey")
@_clean
def client_rekey(
    name: Annotated[str, typer.Argument(help="client_id of the device")],
    out: Annotated[Path, typer.Option("--out", help="directory for the new bundle")] = Path("."),
    audience: Annotated[
        str | None,
        typer.Option("--audience", help="which of the client's audiences (when it has several)"),
    ] = None,
    rs_uri: Annotated[
        str | None,
        typer.Option("--rs-uri", help="the RS address the device talks to (default: the audience)"),
    ] = None,
    as_base: AsBaseOption = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """New OSCORE keys for a device and its new bundle NAME.json (0600).

    The way back for a device whose state folder was lost (an erased flash given
    the same bundle again): its sequence numbers restarted under the old keys, so
    the AS refuses its requests as replays. With new keys (secret, salt, Sender ID)
    it starts again at 0; the old bundle stops working. Flash the new one.
    """
    from keybound.tools.bundles import write_bundle  # noqa: PLC0415 - import time
    from keybound.tools.device.bundle import bundle_from_db  # noqa: PLC0415

    where = {"audience": audience, "rs_uri": rs_uri, "as_base": as_base}
    bundle_from_db(db, name, **where)  # refuses (changing nothing) what it could not write
    client = operations.rekey_client(db, name)
    path = write_bundle(out / f"{name}.json", bundle_from_db(db, name, **where))
    if as_json:
        _emit({**operations.client_row(client), "bundle": str(path)})
        return
    console.print(
        f"new OSCORE keys for {name}; the old bundle no longer works. New bundle: {path} "
        f"(0600); flash it with `keybound device flash {name} --port PORT --bundle {path}`"
    )


# ---- list, show, remove, revoke -----------------------------------------------------------------


@app.command("list")
@_clean
def list_all(db: DbOption = None, as_json: JsonOption = False) -> None:
    """The resource servers and clients."""
    found = operations.listing(db)
    if as_json:
        _emit(found)
        return
    from rich.table import Table  # noqa: PLC0415 - import time

    rs_table = Table(title="resource servers")
    for column in ("name", "audience", "scopes", "clock", "key kid"):
        rs_table.add_column(column)
    for row in found["resource_servers"]:
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
    for row in found["clients"]:
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
    data = operations.record(db, name)
    if as_json:
        _emit(data)
        return
    from rich.table import Table  # noqa: PLC0415 - import time

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
    as_json: JsonOption = False,
) -> None:
    """Forget a client or a resource server (issued tokens stay on record)."""
    kind = operations.remove(db, name)
    if as_json:
        _emit({"name": name, "kind": kind, "removed": True})
        return
    console.print(f"{kind.replace('_', ' ')} {name} removed")


@app.command("revoke")
@_clean
def revoke(
    cti: Annotated[
        str,
        typer.Argument(
            help="the token's cti in hex, AUDIENCE#SEQ, or the token itself (hex, base64url, "
            "a JWT, @file)"
        ),
    ],
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Revoke a token: introspection answers inactive, and the token revocation list
    (RFC 9770) tells its client and RS at once."""
    done = operations.revoke(db, cti)
    token = done.token
    shown = token.cti.decode() if token.sequence is not None else token.cti.hex()
    if as_json:
        _emit(
            {
                "cti": shown,
                "client_id": token.client_id,
                "audience": token.audience,
                "revoked": True,
                "revoked_at": token.revoked_at,
                "on_trl": done.on_trl,
                "token_hash": None if token.token_hash is None else token.token_hash.hex(),
                "notified": list(done.notified),
                "note": done.note or None,
            }
        )
        return
    console.print(f"token {shown} of {token.client_id} for {token.audience} revoked")
    if done.on_trl:
        console.print(f"on the token revocation list; notifying {', '.join(done.notified)}")
    else:
        console.print(done.note)


@app.command("trl")
@_clean
def trl_command(db: DbOption = None, as_json: JsonOption = False) -> None:
    """Show the token revocation list (RFC 9770): revoked tokens not yet expired."""
    rows = operations.trl_entries(db)
    if as_json:
        _emit(rows)
        return
    if not rows:
        console.print("the token revocation list is empty")
        return
    for row in rows:
        revoked = operations.iso(row["revoked_at"])
        console.print(
            f"{row['token_hash']}  cti {row['cti']}  {row['client_id']} -> {row['audience']}"
            f"  revoked {revoked}  to {', '.join(row['requesters'])}"
        )


# ---- serve --------------------------------------------------------------------------------------


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
        Path | None,
        typer.Option(
            "--state-dir",
            help="an earlier keybound's OSCORE state directory, read once per context "
            "(sequence numbers are now kept in the database)",
        ),
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
    mtls: Annotated[
        bool,
        typer.Option(
            "--mtls", help="HTTPS: client certificates, certificate-bound tokens (RFC 8705)"
        ),
    ] = False,
    client_ca: Annotated[
        Path | None,
        typer.Option("--client-ca", help="with --mtls: CA certificates (PEM) of PKI clients"),
    ] = None,
    db: DbOption = None,
    log_level: LogLevelOption = "info",
) -> None:
    """Run the AS: CoAP (/token, /introspect over OSCORE) and optionally HTTP, one event loop.

    Once every endpoint listens, prints ``keybound: ready URL [URL]`` on stdout
    and notifies systemd (``READY=1``) when ``NOTIFY_SOCKET`` is set.
    """
    from keybound.tools.authz_server.http import check_listen  # noqa: PLC0415 - import time
    from keybound.tools.server_ready import no_port_sharing  # noqa: PLC0415

    if (cert is None) != (keyfile is None):
        raise fail("--cert and --keyfile go together")
    if mtls and (cert is None or http is None):
        raise fail("--mtls needs --http with --cert and --keyfile")
    if client_ca is not None and not mtls:
        raise fail("--client-ca needs --mtls")
    public = None if public_url is None else operations.check_public_url(public_url)
    coap_addr = operations.parse_address(coap, 5683) if coap else None
    http_addr = operations.parse_address(http, 8080) if http else None
    if coap_addr is None and http_addr is None:
        coap_addr = ("127.0.0.1", 5683)
    if http_addr is not None:
        check_listen(http_addr[0], tls=cert is not None, insecure=insecure)
    setup_logging(log_level)
    no_port_sharing()
    operations.serve(
        db,
        coap=coap_addr,
        http=http_addr,
        state_dir=state_dir,
        certfile=cert,
        keyfile=keyfile,
        insecure=insecure,
        public_url=public,
        dpop_nonce=dpop_nonce,
        mutual_tls=mtls,
        client_ca=client_ca,
    )


if __name__ == "__main__":
    app()
