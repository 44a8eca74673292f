"""A call to an HTTP API with a DPoP-bound access token (``keybound client http``).

:func:`request_token` asks the AS's HTTP token endpoint for an access token bound
to a DPoP key (client credentials with ``client_secret_basic``, RFC 6749 §4.4,
§2.3.1, and a DPoP proof, RFC 9449 §5); the request then goes with
``Authorization: DPoP <token>`` and a fresh proof (RFC 9449 §7.1) through
:class:`~keybound.tools.http.client.DPoPAuth`, which answers a server's
``use_dpop_nonce`` once with the nonce it supplied (RFC 9449 §8, §9).
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import httpx
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, OKPKey

from keybound.tools.http.client import DPoPAuth

__all__ = [
    "MAX_KEY_FILE",
    "TokenRefused",
    "check_method",
    "check_url",
    "dpop_key",
    "load_dpop_key",
    "request_body",
    "request_token",
]

MAX_KEY_FILE = 16 * 1024

# RFC 9110 §9.1: a method is a token.
_METHOD = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,32}")
# Private key types and the proof algorithm each signs with (RFC 9449 §4.2).
_CURVE_ALGS = {("EC", "P-256"): "ES256", ("EC", "P-384"): "ES384", ("OKP", "Ed25519"): "EdDSA"}


class TokenRefused(Exception):
    """The token endpoint gave no DPoP-bound access token (the message says what it said)."""


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


def dpop_key(path: Path | None) -> tuple[ECKey | OKPKey, str]:
    """The DPoP key of ``path`` (:func:`load_dpop_key`), or without one an ephemeral P-256 key."""
    if path is not None:
        return load_dpop_key(path)
    return ECKey.generate_key("P-256"), "ES256"


def check_method(method: str) -> None:
    """ValueError unless ``method`` is an HTTP method (a token, RFC 9110 §9.1)."""
    if _METHOD.fullmatch(method) is None:
        raise ValueError(f"{method!r} is not an HTTP method")


def check_url(url: str, option: str) -> None:
    """ValueError (or httpx.InvalidURL) unless ``url`` is an http(s) URL with a host."""
    parsed = httpx.URL(url)
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ValueError(f"{option} must be an http:// or https:// URL, not {url!r}")


def _basic(client_id: str, secret: str) -> str:
    """``client_secret_basic``: form-urlencode each part, then Basic (RFC 6749 §2.3.1)."""
    raw = f"{quote_plus(client_id)}:{quote_plus(secret)}".encode()
    return "Basic " + base64.b64encode(raw).decode("ascii")


def request_body(data: str | None) -> bytes | None:
    """A request body as given: text, or ``@FILE`` for a file's bytes."""
    if data is None:
        return None
    if data.startswith("@"):
        return Path(data[1:]).read_bytes()
    return data.encode("utf-8")


def request_token(
    http: httpx.Client,
    auth: DPoPAuth,
    token_url: str,
    client_id: str,
    client_secret: str,
    audience: str | None,
    scope: str | None,
) -> str:
    """A DPoP-bound access token from ``token_url``; :class:`TokenRefused` otherwise."""
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
        raise TokenRefused(f"token request failed: {response.status_code} {response.text[:500]}")
    token = body.get("access_token")
    if body.get("token_type") != "DPoP" or not isinstance(token, str):
        raise TokenRefused(
            "the token endpoint did not issue a DPoP-bound access token "
            f"(token_type {body.get('token_type')!r})"
        )
    return token
