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
import json
from pathlib import Path
from typing import Annotated, Any

import platformdirs
import typer

from keybound.coap.client import response_text
from keybound.core.client_flow import error_description
from keybound.tools.bundles import DeviceBundle
from keybound.tools.cli.http_commands import http_command
from keybound.tools.cli.support import clean_errors, console, err_console, fail
from keybound.tools.client.run import reply_json, run_edhoc_request, run_request

app = typer.Typer(
    help="Call resource servers with proof-of-possession tokens.", no_args_is_help=True
)


def _say(line: str) -> None:
    err_console.print(line, markup=False, soft_wrap=True)


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
        edhoc_key: Annotated[
            Path | None,
            typer.Option(
                "--edhoc-key",
                help="use the EDHOC and OSCORE profile with this key (credential: KEY.ccs)",
            ),
        ] = None,
    ) -> None:
        loaded = DeviceBundle.read(bundle)
        state_dir = state or Path(platformdirs.user_state_dir("keybound")) / "clients"
        body = payload.encode()
        if edhoc_key is not None:
            reply = asyncio.run(
                run_edhoc_request(
                    loaded, method, url, body, state_dir, edhoc_key, verbose=verbose, say=_say
                )
            )
        else:
            reply = asyncio.run(
                run_request(loaded, method, url, body, state_dir, verbose=verbose, say=_say)
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


__all__ = ["app"]
