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
(one line on stderr). The work is done by :mod:`keybound.tools.tokens.http_call`.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import httpx
import typer

from keybound.tools.cli.support import err_console, fail
from keybound.tools.http.client import DPoPAuth
from keybound.tools.tokens.http_call import (
    TokenRefused,
    check_method,
    check_url,
    dpop_key,
    request_body,
    request_token,
)

__all__ = ["http_command"]

#: Exit status for an answer that is not 2xx, or a token request the AS refused.
EXIT_NOT_OK = 1


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
        check_method(method)
        check_url(url, "URL")
        check_url(token_url, "--token-url")
        if timeout <= 0:
            raise ValueError("--timeout must be positive")
        private_key, alg = dpop_key(key)
        body = request_body(data)
    except (OSError, ValueError, httpx.InvalidURL) as err:
        raise fail(str(err)) from None

    auth = DPoPAuth(private_key, alg=alg)
    headers = {"Content-Type": content_type} if body is not None else {}
    try:
        with httpx.Client(timeout=timeout) as http:
            try:
                token = request_token(
                    http, auth, token_url, client_id, client_secret, audience, scope
                )
            except TokenRefused as refused:
                err_console.print(f"keybound: {refused}", markup=False, soft_wrap=True)
                raise typer.Exit(EXIT_NOT_OK) from None
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
