"""``keybound client http METHOD URL``: call an HTTP API with a DPoP-bound access token.

The command asks the AS's HTTP token endpoint for an access token bound to a
DPoP key (client credentials with ``client_secret_basic``, RFC 6749 §4.4,
§2.3.1, and a DPoP proof, RFC 9449 §5), then sends the request with
``Authorization: DPoP <token>`` and a fresh proof (RFC 9449 §7.1) through
:class:`~keybound.tools.http.client.DPoPAuth`, which answers a server's
``use_dpop_nonce`` once with the nonce it supplied (RFC 9449 §8, §9).

Without ``--key`` an ephemeral P-256 key is made for this one call. The
response's status line and body go to stdout. Exit status: 0 for a 2xx
answer, 1 for any other answer or a failed token request, 2 for bad input
(one line on stderr).
"""

from __future__ import annotations

import base64
import json
import re
import sys
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote_plus

import httpx
import typer
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, OKPKey

from keybound.tools.cli.support import err_console, fail
from keybound.tools.http.client import DPoPAuth

__all__ = ["http_command", "load_dpop_key"]

#: Exit status for an answer that is not 2xx, or a token request the AS refused.
EXIT_NOT_OK = 1
MAX_KEY_FILE = 16 * 1024

# RFC 9110 §9.1: a method is a token.
_METHOD = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,32}")
# Private key types and the proof algorithm each signs with (RFC 9449 §4.2).
_CURVE_ALGS = {("EC", "P-256"): "ES256", ("EC", "P-384"): "ES384", ("OKP", "Ed25519"): "EdDSA"}


def load_dpop_key(path: Path) -> tuple[ECKey | OKPKey, str]:
    """A private JWK (RFC 7517) from ``path`` and its proof algorithm.

    P-256 (ES256), P-384 (ES384) and Ed25519 (EdDSA) keys are accepted; raises
    :class:`ValueError` for anything else or a key without its private part.
    """
    if path.stat().st_size > MAX_KEY_FILE:
        raise ValueError(f"{path} is larger than {MAX_KEY_FILE} bytes")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path} is not a JSON JWK: {err}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} is not a JSON object")
    alg = _CURVE_ALGS.get((str(data.get("kty")), str(data.get("crv"))))
    if alg is None:
        raise ValueError("the DPoP key must be an EC P-256/P-384 or OKP Ed25519 JWK")
    if "d" not in data:
        raise ValueError("the DPoP key file must hold the private key (JWK member 'd')")
    data.pop("alg", None)
    try:
        key: ECKey | OKPKey = (
            ECKey.import_key(data) if data["kty"] == "EC" else OKPKey.import_key(data)
        )
    except (JoseError, ValueError, TypeError) as err:
        raise ValueError(f"the DPoP key is not usable: {err}") from None
    return key, alg


def _check_url(url: str, option: str) -> None:
    parsed = httpx.URL(url)
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ValueError(f"{option} must be an http:// or https:// URL, not {url!r}")


def _basic(client_id: str, secret: str) -> str:
    """``client_secret_basic``: form-urlencode each part, then Basic (RFC 6749 §2.3.1)."""
    raw = f"{quote_plus(client_id)}:{quote_plus(secret)}".encode()
    return "Basic " + base64.b64encode(raw).decode("ascii")


def _body(data: str | None) -> bytes | None:
    if data is None:
        return None
    if data.startswith("@"):
        return Path(data[1:]).read_bytes()
    return data.encode("utf-8")


def _request_token(
    http: httpx.Client,
    auth: DPoPAuth,
    token_url: str,
    client_id: str,
    client_secret: str,
    audience: str | None,
    scope: str | None,
) -> str | None:
    form = {"grant_type": "client_credentials"}
    if audience is not None:
        form["audience"] = audience
    if scope is not None:
        form["scope"] = scope
    response = http.post(
        token_url,
        data=form,
        auth=auth,
        headers={"Authorization": _basic(client_id, client_secret)},
    )
    try:
        body: Any = response.json()
    except ValueError:
        body = None
    if response.status_code != 200 or not isinstance(body, dict):
        err_console.print(
            f"keybound: token request failed: {response.status_code} {response.text[:500]}",
            markup=False,
            soft_wrap=True,
        )
        return None
    token = body.get("access_token")
    if body.get("token_type") != "DPoP" or not isinstance(token, str):
        err_console.print(
            "keybound: the token endpoint did not issue a DPoP-bound access token "
            f"(token_type {body.get('token_type')!r})",
            markup=False,
            soft_wrap=True,
        )
        return None
    return token


def http_command(
    method: Annotated[str, typer.Argument(help="HTTP method, e.g. GET or POST")],
    url: Annotated[str, typer.Argument(help="the protected resource's URL")],
    token_url: Annotated[
        str, typer.Option("--token-url", help="the AS's HTTP token endpoint, e.g. .../token")
    ],
    client_id: Annotated[str, typer.Option("--client-id", help="client_id at the AS")],
    client_secret: Annotated[
        str,
        typer.Option(
            "--client-secret",
            envvar="KEYBOUND_CLIENT_SECRET",
            help="the client's HTTP secret (or KEYBOUND_CLIENT_SECRET)",
        ),
    ],
    key: Annotated[
        Path | None,
        typer.Option(
            "--key", help="private JWK file for DPoP (P-256, P-384, Ed25519); default: ephemeral"
        ),
    ] = None,
    audience: Annotated[
        str | None, typer.Option("--audience", help="audience of the token at the AS")
    ] = None,
    scope: Annotated[str | None, typer.Option("--scope", help="requested scope")] = None,
    data: Annotated[
        str | None, typer.Option("--data", help="request body; @FILE reads it from a file")
    ] = None,
    content_type: Annotated[
        str, typer.Option("--content-type", help="Content-Type of --data")
    ] = "application/json",
    timeout: Annotated[float, typer.Option("--timeout", help="seconds per HTTP request")] = 10.0,
) -> None:
    """Get a DPoP-bound token (RFC 9449 §5) and call URL with it (§7); exit 0 on 2xx."""
    try:
        if _METHOD.fullmatch(method) is None:
            raise ValueError(f"{method!r} is not an HTTP method")
        _check_url(url, "URL")
        _check_url(token_url, "--token-url")
        if timeout <= 0:
            raise ValueError("--timeout must be positive")
        if key is not None:
            private_key, alg = load_dpop_key(key)
        else:
            private_key, alg = ECKey.generate_key("P-256"), "ES256"
        body = _body(data)
    except (OSError, ValueError, httpx.InvalidURL) as err:
        raise fail(str(err)) from None

    auth = DPoPAuth(private_key, alg=alg)
    headers = {"Content-Type": content_type} if body is not None else {}
    try:
        with httpx.Client(timeout=timeout) as http:
            token = _request_token(http, auth, token_url, client_id, client_secret, audience, scope)
            if token is None:
                raise typer.Exit(EXIT_NOT_OK)
            auth.access_token = token
            response = http.request(method.upper(), url, content=body, headers=headers, auth=auth)
    except httpx.HTTPError as err:
        raise fail(f"HTTP request failed: {err!r}", EXIT_NOT_OK) from None
    typer.echo(f"{response.status_code} {response.reason_phrase}")
    if response.content:
        sys.stdout.write(response.text)
        if not response.text.endswith("\n"):
            sys.stdout.write("\n")
        sys.stdout.flush()
    if not 200 <= response.status_code < 300:
        raise typer.Exit(EXIT_NOT_OK)


if __name__ == "__main__":
    typer.run(http_command)
