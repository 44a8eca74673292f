"""Bundle files the AS hands out: one per resource server, one per device.

Both are JSON, written 0600, marked ``"contains_secrets": true`` and carry a
``note`` saying who needs the file and how to keep it.

RS bundle (read by ``keybound rs``)::

    {"kind": "keybound-rs-bundle", "version": 1, "contains_secrets": true, "note": ...,
     "name", "audience", "issuer", "as_uri": "coap://HOST:PORT/token",
     "token_key": {"kty": "oct", "k", "kid"},      # AES-CCM-16-64-128, RFC 9200 §6.1
     "as_public_key": {"kty": "EC", "crv": "P-256", "x", "y", "kid"},
     "has_clock": bool, "scopes": [...], "profiles": [2],
     "introspection": {"uri": "coap://HOST:PORT/introspect",
                       "oscore": {"master_secret", "master_salt", "sender_id",
                                  "recipient_id", "id_context", "alg": 10, "hkdf": 5},
                       "http_secret": str}}  # the RS's password at HTTP /introspect

Device bundle (read by ``firmware/config.py``)::

    {"kind": "keybound-device-bundle", "version": 1, "contains_secrets": true, "note": ...,
     "client_id", "as_uri" (coap://HOST:PORT, no path), "rs_uri", "audience", "scope",
     "resource", "token_path",
     "authz_info_path", "state_dir", "period_s",
     "wifi": {"ssid", "password"},                  # placeholders to fill in
     "as_context": {"master_secret", "master_salt", "sender_id", "recipient_id",
                    "id_context", "alg": 10, "hkdf": 5},
     "http": {"client_secret"}}                      # only for HTTP clients

An HTTP-only client (``client add --http-secret --no-oscore``) gets ``kind``,
``version``, ``contains_secrets``, ``note``, ``client_id``, ``as_uri``,
``audience``, ``scope`` and ``http``: no OSCORE context and no device settings.

Byte strings are hex. OSCORE IDs are those of the bundle's owner: its
``sender_id`` is what it sends with (RFC 8613 §3.1).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from keybound.core.authz_store import IssuerSettings, OscoreContext, RsRecord
from keybound.core.errors import DecodeError
from keybound.core.keys import Key
from keybound.core.oscore_profile import DerivedContext

__all__ = [
    "DEVICE_BUNDLE_KIND",
    "MAX_BUNDLE",
    "RS_BUNDLE_KIND",
    "WIFI_PASSWORD_PLACEHOLDER",
    "WIFI_SSID_PLACEHOLDER",
    "DeviceBundle",
    "device_bundle",
    "oscore_from_json",
    "oscore_json",
    "rs_bundle",
    "write_bundle",
]

RS_BUNDLE_KIND = "keybound-rs-bundle"
DEVICE_BUNDLE_KIND = "keybound-device-bundle"
BUNDLE_VERSION = 1
#: What a device bundle says until ``keybound device flash --wifi-ssid`` fills it in.
WIFI_SSID_PLACEHOLDER = "YOUR-WIFI-SSID"
WIFI_PASSWORD_PLACEHOLDER = "YOUR-WIFI-PASSWORD"  # noqa: S105 - a placeholder, not a secret

_RS_NOTE = (
    "For the resource server only. Holds the key that decrypts its access tokens and its "
    "OSCORE secret with the AS: copy it to the RS over a trusted channel, keep it 0600, "
    "never commit it or share it with clients."
)
_DEVICE_NOTE = (
    "For this one device only. Holds its OSCORE secret with the AS (and HTTP secret): copy "
    "it onto the device over a trusted channel, keep it 0600, delete other copies."
)


def oscore_json(context: OscoreContext | DerivedContext) -> dict[str, Any]:
    """An OSCORE context (owner's point of view) as hex strings, RFC 8613 defaults."""
    alg = context.alg if isinstance(context, DerivedContext) else 10
    return {
        "master_secret": context.master_secret.hex(),
        "master_salt": context.master_salt.hex(),
        "sender_id": context.sender_id.hex(),
        "recipient_id": context.recipient_id.hex(),
        "id_context": None if context.id_context is None else context.id_context.hex(),
        "alg": alg,  # AES-CCM-16-64-128 (10) unless the context says otherwise
        "hkdf": 5,  # HMAC 256/256 (RFC 9203 §3.2.1)
    }


def oscore_from_json(data: object) -> DerivedContext:
    """The OSCORE context of a bundle (``as_context``, ``introspection.oscore``), from its
    owner's point of view; the inverse of :func:`oscore_json`. Raises :class:`DecodeError`."""
    if not isinstance(data, dict):
        raise DecodeError("an OSCORE context must be an object of hex strings")
    try:
        return DerivedContext(
            master_secret=bytes.fromhex(data["master_secret"]),
            master_salt=bytes.fromhex(data.get("master_salt") or ""),
            id_context=bytes.fromhex(data["id_context"]) if data.get("id_context") else None,
            sender_id=bytes.fromhex(data["sender_id"]),
            recipient_id=bytes.fromhex(data["recipient_id"]),
            alg=int(data.get("alg", 10)),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise DecodeError(f"the OSCORE context is malformed: {exc}") from exc


def rs_bundle(
    rs: RsRecord,
    issuer: IssuerSettings,
    *,
    as_base: str,
    introspection_secret: str | None = None,
) -> dict[str, Any]:
    """The RS bundle for ``rs``; ``as_base`` is ``coap://HOST:PORT``.

    ``introspection_secret`` (from
    :func:`keybound.tools.authz_server.provision.new_introspection_secret`) is the RS's
    password at the AS's HTTP ``/introspect``, written as
    ``introspection.http_secret``; the AS keeps only its hash.
    """
    token_key = rs.token_key
    key = Key.from_cose_key(token_key.key).with_kid(token_key.kid)
    as_public = Key.from_cose_key(issuer.signing_key).public_key()
    bundle: dict[str, Any] = {
        "kind": RS_BUNDLE_KIND,
        "version": BUNDLE_VERSION,
        "contains_secrets": True,
        "note": _RS_NOTE,
        "name": rs.name,
        "audience": rs.audience,
        "issuer": issuer.issuer,
        "as_uri": f"{as_base}/token",
        "token_key": {
            "kty": "oct",
            "k": key.to_jwk(include_private=True)["k"],
            "kid": key.to_jwk(include_private=True)["kid"],
        },
        "as_public_key": as_public.to_jwk(),
        "has_clock": rs.has_clock,
        "scopes": list(rs.scopes),
        "profiles": list(rs.profiles),
    }
    if rs.introspection_context is not None:
        bundle["introspection"] = {
            "uri": f"{as_base}/introspect",
            "oscore": oscore_json(rs.introspection_context),
        }
    if introspection_secret is not None:
        bundle.setdefault("introspection", {})["http_secret"] = introspection_secret
    return bundle


def device_bundle(
    client_id: str,
    *,
    as_base: str,
    rs_uri: str,
    audience: str,
    scope: str,
    oscore: OscoreContext | None,
    http_secret: str | None = None,
) -> dict[str, Any]:
    """The device bundle ``firmware/config.py`` reads.

    A client without an OSCORE context is an HTTP client: its bundle has no
    firmware settings (Wi-Fi placeholders, CoAP paths, period), only who it is
    and its ``http`` secret.
    """
    bundle: dict[str, Any] = {
        "kind": DEVICE_BUNDLE_KIND,
        "version": BUNDLE_VERSION,
        "contains_secrets": True,
        "note": _DEVICE_NOTE,
        "client_id": client_id,
        "as_uri": as_base,
        "audience": audience,
        "scope": scope,
    }
    if oscore is not None:
        bundle.update(
            {
                "rs_uri": rs_uri,
                "resource": "/temp",
                "token_path": "/token",
                "authz_info_path": "/authz-info",
                "state_dir": "state",
                "period_s": 60,
                "wifi": {"ssid": WIFI_SSID_PLACEHOLDER, "password": WIFI_PASSWORD_PLACEHOLDER},
                "as_context": oscore_json(oscore),
            }
        )
    if http_secret is not None:
        bundle["http"] = {"client_secret": http_secret}
    return bundle


def write_bundle(path: Path, bundle: Mapping[str, Any]) -> Path:
    """Write ``bundle`` as JSON to ``path``, created 0600 (replacing a previous file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(bundle, out, indent=2, sort_keys=False)
        out.write("\n")
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
    return path


MAX_BUNDLE = 64 * 1024


class DeviceBundle:
    """The device bundle ``keybound as client add`` writes (firmware/README.md documents it)."""

    def __init__(self, data: dict[str, Any]) -> None:
        def need(name: str) -> Any:
            if name not in data:
                raise DecodeError(f"the device bundle lacks {name!r}")
            return data[name]

        self.client_id = str(need("client_id"))
        self.as_uri = str(need("as_uri"))
        self.rs_uri = str(data.get("rs_uri") or "")
        self.audience = str(need("audience"))
        self.scope = str(data["scope"]) if data.get("scope") is not None else None
        self.token_path = str(data.get("token_path", "/token"))
        self.authz_info_path = str(data.get("authz_info_path", "/authz-info"))
        self.as_context = oscore_from_json(need("as_context"))

    @classmethod
    def read(cls, path: Path) -> DeviceBundle:
        try:
            if path.stat().st_size > MAX_BUNDLE:
                raise DecodeError(f"{path}: larger than {MAX_BUNDLE} bytes")
            data = json.loads(path.read_text())
        except OSError as exc:
            raise DecodeError(f"cannot read {path}: {exc.strerror}") from exc
        except ValueError as exc:
            raise DecodeError(f"{path}: not JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise DecodeError(f"{path}: the bundle must be a JSON object")
        return cls(data)

    def fingerprint(self) -> str:
        """Names the client-AS key material (not secret: a hash)."""
        ctx = self.as_context
        material = ctx.master_secret + b"|" + ctx.master_salt + b"|" + ctx.sender_id
        return hashlib.sha256(material).hexdigest()[:16]
