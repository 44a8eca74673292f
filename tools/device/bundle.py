"""The device bundle of a client registered at the AS, and what in one would keep a
board off the network.

A device bundle (``keybound.json`` format, ``firmware/README.md``) holds the
client-AS OSCORE master secret, so it is written 0600.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from keybound.core.authz_store import AuthzStoreError
from keybound.tools.authz_server.operations import as_base_uri
from keybound.tools.authz_server.storage import SqlAuthzStore
from keybound.tools.bundles import (
    DEVICE_BUNDLE_KIND,
    WIFI_PASSWORD_PLACEHOLDER,
    WIFI_SSID_PLACEHOLDER,
    DeviceBundle,
    device_bundle,
    read_bundle_json,
)

__all__ = [
    "bundle_for",
    "bundle_from_db",
    "bundle_from_store",
    "bundle_warnings",
    "load_bundle",
    "with_wifi",
]


def bundle_from_store(
    store: SqlAuthzStore,
    name: str,
    *,
    audience: str | None = None,
    rs_uri: str | None = None,
    as_base: str | None = None,
) -> dict[str, Any]:
    """The device bundle of the registered client ``name`` (holds its OSCORE secret)."""
    client = store.get_client(name)
    if client is None:
        raise ValueError(f"no client {name!r} at the AS: add it with `keybound as client add`")
    if client.oscore is None:
        raise ValueError(f"client {name!r} has no OSCORE context (an HTTP-only client)")
    if audience is None:
        if len(client.grants) != 1:
            choices = ", ".join(sorted(client.grants)) or "none"
            raise ValueError(f"client {name!r} has audiences {choices}: choose one with --audience")
        (audience,) = client.grants
    scopes = client.allowed_scopes(audience)
    if not scopes:
        raise ValueError(f"client {name!r} has no scope for audience {audience!r}")
    if rs_uri is None:
        if not audience.startswith("coap://"):
            raise ValueError(f"audience {audience!r} is not an address: give --rs-uri")
        rs_uri = audience
    return device_bundle(
        name,
        as_base=as_base_uri(store, as_base),
        rs_uri=rs_uri,
        audience=audience,
        scope=" ".join(scopes),
        oscore=client.oscore,
    )


def bundle_from_db(
    db: str | None,
    name: str,
    *,
    audience: str | None = None,
    rs_uri: str | None = None,
    as_base: str | None = None,
) -> dict[str, Any]:
    """:func:`bundle_from_store` on the AS database ``db`` (None: the default one)."""
    try:
        store = SqlAuthzStore.open(db)
    except AuthzStoreError as exc:
        raise ValueError(str(exc)) from None
    try:
        return bundle_from_store(store, name, audience=audience, rs_uri=rs_uri, as_base=as_base)
    finally:
        store.close()


def load_bundle(path: Path) -> dict[str, Any]:
    """The device bundle file's JSON, checked as :class:`~keybound.tools.bundles.DeviceBundle`
    reads it (kind, format version, the OSCORE context with the AS the firmware needs)."""
    data = read_bundle_json(path, DEVICE_BUNDLE_KIND)
    DeviceBundle.from_json(data, where=f"bundle {path.name}")
    return data


def bundle_for(data: dict[str, Any], name: str) -> dict[str, Any]:
    """``data``, refused (ValueError) unless it is the bundle of client ``name``."""
    if data.get("client_id") != name:
        raise ValueError(f"the bundle is for {data.get('client_id')!r}, not {name!r}")
    return data


def with_wifi(data: dict[str, Any], ssid: str | None, password: str | None) -> dict[str, Any]:
    """``data`` with the Wi-Fi network ``ssid`` written in (unchanged without one)."""
    if ssid is not None:
        data["wifi"] = {"ssid": ssid, "password": password or ""}
    return data


def _loopback(uri: object) -> bool:
    if not isinstance(uri, str):
        return False
    host = urlsplit(uri).hostname or ""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bundle_warnings(data: dict[str, Any]) -> list[str]:
    """What in a device bundle would keep the board off the network.

    The Wi-Fi placeholders of a fresh bundle, and AS or RS addresses on loopback
    (on the board, 127.0.0.1 is the board itself).
    """
    warnings = []
    raw_wifi = data.get("wifi")
    wifi: dict[str, Any] = raw_wifi if isinstance(raw_wifi, dict) else {}
    if wifi.get("ssid") in (None, "", WIFI_SSID_PLACEHOLDER):
        warnings.append("the bundle names no Wi-Fi network; pass --wifi-ssid")
    elif wifi.get("password") == WIFI_PASSWORD_PLACEHOLDER:
        warnings.append("the Wi-Fi password is the placeholder; pass --wifi-password")
    for field in ("as_uri", "rs_uri"):
        if _loopback(data.get(field)):
            warnings.append(
                f"{field} {data[field]} is a loopback address, which the board cannot reach: "
                "provision it with the LAN addresses (--as-base, --rs-uri)"
            )
    return warnings
