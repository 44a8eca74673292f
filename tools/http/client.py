"""Proof of possession for httpx clients: DPoP (RFC 9449) and HTTP message signatures (RFC 9421).

:class:`DPoPAuth` is an :class:`httpx.Auth`; its ``auth_flow`` generator yields
requests and receives responses, so one flow serves ``httpx.Client`` and
``httpx.AsyncClient``::

    auth = DPoPAuth(ECKey.generate_key("P-256"))
    token = httpx.post(token_url, data=..., auth=auth).json()["access_token"]
    auth.access_token = token
    httpx.get(resource_url, auth=auth)

Each request gets a new proof with its method as ``htm``, its URL without
query and fragment as ``htu`` (RFC 9449 §4.2), ``ath`` when an access token
is set (§7.1), and the last nonce the origin supplied (§8, §9). When the server
answers ``use_dpop_nonce`` with a ``DPoP-Nonce`` header — 401 with a
``WWW-Authenticate: DPoP error="use_dpop_nonce"`` challenge from a resource
server (§9), or 400 with a JSON ``{"error": "use_dpop_nonce"}`` from a token
endpoint (§8) — the request is sent once more with a new proof carrying that
nonce. Nonces are remembered per origin, since a nonce is only good at the
server that issued it (§9), and the newest one seen in any response is used
next (§8.2).

:class:`HttpSignatureAuth` signs every request with the symmetric PoP key the
AS returned in ``key`` (draft-ietf-oauth-pop-key-distribution §4.2), with
``hmac-sha256`` (RFC 9421 §3.3.3) under the label ``sig``: it covers
``@method``, ``@target-uri``, ``authorization`` and, when there is content,
``content-digest`` (RFC 9530, ``sha-256``, added to the request), names the key
in ``keyid``, and sets ``created`` and a fresh random ``nonce``; the token goes
in ``Authorization: PoP <token>``::

    answer = httpx.post(token_url, data={..., "token_type": "pop"}, auth=basic).json()
    httpx.post(resource_url, json={...}, auth=HttpSignatureAuth.from_token_response(answer))
"""

from __future__ import annotations

import re
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncGenerator, Callable, Generator, Mapping
from typing import Any

import httpx
from joserfc.jwk import ECKey, OKPKey

from keybound.core.content_digest import content_digest
from keybound.core.dpop import create_proof
from keybound.core.http_signatures import RequestParts, SignatureParameters, sign_request
from keybound.core.keys import Key, b64u_encode

__all__ = ["DPoPAuth", "HttpSignatureAuth"]

_DEFAULT_PORTS = {"http": 80, "https": 443}
_USE_DPOP_NONCE = re.compile(r"""\berror\s*=\s*"?use_dpop_nonce"?""", re.IGNORECASE)
# RFC 9449 §8.1: nonce = 1*NQCHAR (%x21 / %x23-5B / %x5D-7E); bounded by us.
_NONCE = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]{1,512}")


def _origin(url: httpx.URL) -> str:
    port = url.port if url.port is not None else _DEFAULT_PORTS.get(url.scheme)
    return f"{url.scheme}://{url.host}:{port}"


def _htu(url: httpx.URL) -> str:
    return str(url.copy_with(query=None, fragment=None))


class DPoPAuth(httpx.Auth):
    """Sign every request with a DPoP proof and send the access token as ``DPoP``.

    :param private_key: the client's DPoP key (RFC 9449 §4.2); its thumbprint
        is what the authorization server binds tokens to (``cnf.jkt``, §6.1).
    :param access_token: sent as ``Authorization: DPoP <token>`` (§7.1) when
        set; leave it ``None`` for token requests. May be changed later.
    :param alg: the JWS algorithm of the proofs.
    :param clock: seconds since the epoch, for ``iat``.
    :param max_origins: how many origins' nonces to remember (least recently
        used are forgotten first).
    """

    requires_request_body = True  # a nonce retry sends the body again

    def __init__(
        self,
        private_key: ECKey | OKPKey,
        access_token: str | None = None,
        *,
        alg: str = "ES256",
        clock: Callable[[], float] = time.time,
        max_origins: int = 128,
    ) -> None:
        if not private_key.is_private:
            raise ValueError("DPoPAuth needs the private key to sign proofs")
        self.private_key = private_key
        self.access_token = access_token
        self.alg = alg
        self.clock = clock
        self.max_origins = max_origins
        self._nonces: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()

    # ---- nonces per origin ---------------------------------------------------------------

    def nonce_for(self, url: httpx.URL | str) -> str | None:
        """The nonce remembered for the origin of ``url``, if any."""
        origin = _origin(httpx.URL(url))
        with self._lock:
            return self._nonces.get(origin)

    def _remember(self, origin: str, response: httpx.Response) -> str | None:
        values = response.headers.get_list("dpop-nonce")
        if len(values) != 1 or _NONCE.fullmatch(values[0]) is None:
            return None  # RFC 9449 §8: never more than one DPoP-Nonce header
        nonce = values[0]
        with self._lock:
            self._nonces[origin] = nonce
            self._nonces.move_to_end(origin)
            while len(self._nonces) > self.max_origins:
                self._nonces.popitem(last=False)
        return nonce

    # ---- the flow ------------------------------------------------------------------------

    def _sign(self, request: httpx.Request, nonce: str | None) -> None:
        proof = create_proof(
            self.private_key,
            request.method,
            _htu(request.url),
            now=int(self.clock()),
            access_token=self.access_token,
            nonce=nonce,
            alg=self.alg,
            random_bytes=secrets.token_bytes,
        )
        request.headers["DPoP"] = proof
        if self.access_token is not None:
            request.headers["Authorization"] = f"DPoP {self.access_token}"

    @staticmethod
    def _asks_for_nonce(response: httpx.Response) -> bool:
        if response.status_code == 401:
            challenges = response.headers.get_list("www-authenticate")
            return any(
                c.lstrip().lower().startswith("dpop") and _USE_DPOP_NONCE.search(c)
                for c in challenges
            )
        if response.status_code == 400:
            try:
                body: Any = response.json()
            except (ValueError, httpx.ResponseNotRead):
                return False
            return isinstance(body, dict) and body.get("error") == "use_dpop_nonce"
        return False

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        """Send with a proof; on ``use_dpop_nonce`` retry once with the supplied nonce."""
        origin = _origin(request.url)
        with self._lock:
            nonce = self._nonces.get(origin)
        self._sign(request, nonce)
        response = yield request
        supplied = self._remember(origin, response)
        if supplied is not None and self._asks_for_nonce(response):
            self._sign(request, supplied)
            response = yield request
            self._remember(origin, response)

    # httpx reads no response body before handing it to auth_flow; a token
    # endpoint's use_dpop_nonce is in the JSON body of a 400, so read just those.

    def sync_auth_flow(
        self, request: httpx.Request
    ) -> Generator[httpx.Request, httpx.Response, None]:
        request.read()
        flow = self.auth_flow(request)
        request = next(flow)
        while True:
            response = yield request
            if response.status_code == 400:
                response.read()
            try:
                request = flow.send(response)
            except StopIteration:
                break

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        await request.aread()
        flow = self.auth_flow(request)
        request = next(flow)
        while True:
            response = yield request
            if response.status_code == 400:
                await response.aread()
            try:
                request = flow.send(response)
            except StopIteration:
                break


class HttpSignatureAuth(httpx.Auth):
    """Sign every request with ``hmac-sha256`` (RFC 9421) and send the token as ``PoP``.

    :param key: the symmetric PoP key the AS returned in ``key`` (a JWK with a
        ``kid``, which is the signature's ``keyid``).
    :param access_token: sent as ``Authorization: PoP <token>``.
    :param clock: seconds since the epoch, for ``created``.
    :param label: the signature's label in ``Signature-Input`` and ``Signature``.
    """

    requires_request_body = True  # the content is digested (RFC 9530) and covered

    def __init__(
        self,
        key: Key | Mapping[str, Any],
        access_token: str,
        *,
        clock: Callable[[], float] = time.time,
        label: str = "sig",
    ) -> None:
        pop_key = key if isinstance(key, Key) else Key.from_jwk(dict(key))
        if not pop_key.is_symmetric or not pop_key.secret:
            raise ValueError("HttpSignatureAuth needs the symmetric PoP key")
        keyid = pop_key.to_jwk(include_private=True).get("kid")
        if keyid is None:
            raise ValueError("the PoP key has no kid to name it by in keyid")
        self._secret = pop_key.secret
        self.keyid = keyid
        self.access_token = access_token
        self.clock = clock
        self.label = label

    @classmethod
    def from_token_response(
        cls, answer: Mapping[str, Any], *, clock: Callable[[], float] = time.time
    ) -> HttpSignatureAuth:
        """From the AS's JSON token response: ``access_token`` and the ``key`` it made."""
        key = answer.get("key")
        token = answer.get("access_token")
        if not isinstance(key, Mapping) or not isinstance(token, str):
            raise ValueError("the token response has no symmetric key and access token")
        return cls(key, token, clock=clock)

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        """Add Content-Digest, Authorization, Signature-Input and Signature; send once."""
        body = request.content
        components = ["@method", "@target-uri", "authorization"]
        if body:
            request.headers["Content-Digest"] = content_digest(body)
            components.append("content-digest")
        request.headers["Authorization"] = f"PoP {self.access_token}"
        parts = RequestParts.from_pairs(
            request.method, str(request.url), request.headers.multi_items()
        )
        parameters = SignatureParameters(
            created=int(self.clock()), keyid=self.keyid, nonce=b64u_encode(secrets.token_bytes(16))
        )
        signature_input, signature = sign_request(
            parts, self._secret, components, parameters, label=self.label
        )
        request.headers["Signature-Input"] = signature_input
        request.headers["Signature"] = signature
        yield request
