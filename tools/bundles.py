"""Bundle files the AS hands out: one per resource server, one per device.

This module is the one home of both formats: it writes them (:func:`rs_bundle`,
:func:`device_bundle`, :func:`write_bundle`) and reads them (:class:`RsBundle`,
:class:`DeviceBundle`), and every problem with a bundle is a :class:`BundleError`.
The formats are documented in README.md ("Bundle files"); the device bundle's
fields, which the firmware reads too (``firmware/config.py``), in firmware/README.md.

Both are JSON objects, written 0600 and atomically, marked ``"contains_secrets":
true``, with a ``note`` saying who needs the file and how to keep it, a ``kind``
(``keybound-rs-bundle`` or ``keybound-device-bundle``) and a format ``version``.

**Versions.** This keybound writes and reads version 1 (:data:`BUNDLE_VERSION`).
Bundles written before the ``version`` field existed have none: a missing
``version`` is version 1. A newer version is refused with a message saying so, as is a
file of the other kind or one larger than :data:`MAX_BUNDLE` bytes.

Byte strings are hex. OSCORE IDs are those of the bundle's owner: its
``sender_id`` is what it sends with (RFC 8613 §3.1).
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from keybound.core.authz_store import IssuerSettings, OscoreContext, RsRecord
from keybound.core.errors import DecodeError, KeyboundError
from keybound.core.keys import Key
from keybound.core.oscore_derivation import DerivedContext

__all__ = [
    "BUNDLE_VERSION",
    "DEVICE_BUNDLE_KIND",
    "MAX_BUNDLE",
    "RS_BUNDLE_KIND",
    "WIFI_PASSWORD_PLACEHOLDER",
    "WIFI_SSID_PLACEHOLDER",
    "BundleError",
    "DeviceBundle",
    "RsBundle",
    "device_bundle",
    "oscore_from_json",
    "oscore_json",
    "read_bundle_json",
    "rs_bundle",
    "write_bundle",
]

RS_BUNDLE_KIND = "keybound-rs-bundle"
DEVICE_BUNDLE_KIND = "keybound-device-bundle"
#: The format version written; files up to it are read (a missing ``version`` is 1).
BUNDLE_VERSION = 1
#: The largest bundle file read, in bytes (an AS-written bundle is about 1 KiB).
MAX_BUNDLE = 64 * 1024
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


class BundleError(DecodeError, ValueError):
    """the bundle file is unreadable, malformed, of another kind or of an unknown version

    A :class:`~keybound.core.errors.DecodeError` (so a ``KeyboundError``), and a
    ``ValueError`` as the bundle readers raised before; ``description`` is one line.
    """


# ---- OSCORE contexts in bundles ----------------------------------------------------------------


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
    owner's point of view; the inverse of :func:`oscore_json`. Raises :class:`BundleError`."""
    if not isinstance(data, dict):
        raise BundleError("an OSCORE context must be an object of hex strings")
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
        raise BundleError(f"the OSCORE context is malformed: {exc}") from exc
    except KeyboundError as exc:
        raise BundleError(f"the OSCORE context is malformed: {exc.description}") from exc


# ---- reading and writing files -----------------------------------------------------------------


def _envelope(kind: str, note: str) -> dict[str, Any]:
    return {"kind": kind, "version": BUNDLE_VERSION, "contains_secrets": True, "note": note}


def _check_kind_and_version(data: Mapping[str, Any], kind: str, where: str) -> int:
    """The bundle's format version, after checking that ``data`` is a bundle of ``kind``.

    A missing ``version`` is 1: bundles written before the field existed have none.
    """
    found = data.get("kind")
    if found != kind:
        other = {RS_BUNDLE_KIND, DEVICE_BUNDLE_KIND} - {kind}
        hint = f" (it is a {found} file)" if found in other else ""
        raise BundleError(f"{where}: not a {kind} file{hint}")
    version = data.get("version", 1)
    if type(version) is not int or version < 1:
        raise BundleError(f"{where}: unsupported version {version!r}")
    if version > BUNDLE_VERSION:
        raise BundleError(
            f"{where}: unsupported version {version!r}: this keybound reads bundles up to "
            f"version {BUNDLE_VERSION}; upgrade it, or have this AS write the bundle again"
        )
    return version


def read_bundle_json(path: Path, kind: str, *, private: bool = False) -> dict[str, Any]:
    """The JSON object of the bundle file at ``path``, checked to be of ``kind`` and of a
    version this keybound reads, and at most :data:`MAX_BUNDLE` bytes.

    With ``private``, a file that others than its owner may read is refused too (the
    RS daemon asks for that: the bundle holds its token key).
    """
    path = Path(path)
    try:
        info = path.stat()
    except OSError as exc:
        raise BundleError(f"cannot read the bundle {path}: {exc.strerror}") from None
    if private and info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise BundleError(
            f"the bundle {path} holds secrets and must not be readable by others (chmod 600)"
        )
    if info.st_size > MAX_BUNDLE:
        raise BundleError(f"the bundle {path} is larger than {MAX_BUNDLE} bytes")
    try:
        with path.open("rb") as stream:
            raw = stream.read(MAX_BUNDLE + 1)
    except OSError as exc:
        raise BundleError(f"cannot read the bundle {path}: {exc.strerror}") from None
    if len(raw) > MAX_BUNDLE:
        raise BundleError(f"the bundle {path} is larger than {MAX_BUNDLE} bytes")
    try:
        data = json.loads(raw.decode("utf-8"))
    except ValueError as exc:
        raise BundleError(f"the bundle {path} is not valid JSON: {exc}") from None
    where = f"bundle {path.name}"
    if not isinstance(data, dict):
        raise BundleError(f"{where}: not a {kind} file (not a JSON object)")
    _check_kind_and_version(data, kind, where)
    return data


def write_bundle(path: Path, bundle: Mapping[str, Any] | RsBundle | DeviceBundle) -> Path:
    """Write ``bundle`` as JSON to ``path``, created 0600 (replacing a previous file
    atomically: through a temporary file in the same directory and a rename)."""
    data = bundle.to_json() if isinstance(bundle, RsBundle | DeviceBundle) else bundle
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(data, out, indent=2, sort_keys=False)
        out.write("\n")
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
    return path


def _need(data: Mapping[str, Any], name: str, kind: type, where: str) -> Any:
    if name not in data:
        raise BundleError(f"{where}: {name} is missing")
    value = data[name]
    if not isinstance(value, kind) or isinstance(value, bool) != (kind is bool):
        raise BundleError(f"{where}: {name} must be a {kind.__name__}")
    return value


def _optional_text(data: Mapping[str, Any], name: str, where: str) -> str | None:
    value = data.get(name)
    if value is not None and not isinstance(value, str):
        raise BundleError(f"{where}: {name} must be a string")
    return value


def _text_or(data: Mapping[str, Any], name: str, default: str, where: str) -> str:
    value = _optional_text(data, name, where)
    return default if value is None else value


# ---- the RS bundle -----------------------------------------------------------------------------


@dataclass(frozen=True)
class RsBundle:
    """The RS bundle ``keybound as rs add`` writes, read by ``keybound rs serve`` and by
    the HTTP token verifiers (README.md, "Bundle files", lists its fields)."""

    audience: str
    as_uri: str
    token_key: Key = field(repr=False)
    as_public_key: Key | None = None
    issuer: str | None = None
    name: str = ""
    has_clock: bool = True
    scopes: tuple[str, ...] = ()
    profiles: tuple[int, ...] = (2,)
    introspection_uri: str | None = None
    introspection_context: DerivedContext | None = field(default=None, repr=False)
    #: the RS's password at the AS's HTTP ``/introspect`` (``introspection.http_secret``)
    introspection_secret: str | None = field(default=None, repr=False)
    #: the RS's EDHOC authentication credential as the AS knows it (an encoded CCS)
    edhoc_credential: bytes | None = None
    note: str = field(default=_RS_NOTE, repr=False)
    #: the format version of the file read (1 for a file without ``version``)
    version: int = BUNDLE_VERSION

    @classmethod
    def read(cls, path: Path, *, private: bool = False) -> RsBundle:
        """Read and check the RS bundle file at ``path`` (``private``: refuse a file
        others may read). Raises :class:`BundleError` with one line."""
        data = read_bundle_json(path, RS_BUNDLE_KIND, private=private)
        return cls.from_json(data, where=f"bundle {Path(path).name}")

    @classmethod
    def from_json(cls, data: Mapping[str, Any], *, where: str = "the RS bundle") -> RsBundle:
        """The RS bundle of its decoded JSON; ``where`` starts each error message."""
        if not isinstance(data, Mapping):
            raise BundleError(f"{where}: not a {RS_BUNDLE_KIND} file (not a JSON object)")
        version = _check_kind_and_version(data, RS_BUNDLE_KIND, where)
        try:
            token_key = Key.from_jwk(dict(_need(data, "token_key", dict, where)))
            public = data.get("as_public_key")
            as_public_key = Key.from_jwk(public).public_key() if public else None
        except BundleError:
            raise
        except KeyboundError as exc:
            raise BundleError(f"{where}: {exc}") from None
        if not token_key.is_symmetric:
            raise BundleError(f"{where}: token_key must be a symmetric (oct) key")
        profiles = data.get("profiles", [2])
        if not isinstance(profiles, list) or not all(type(p) is int for p in profiles):
            raise BundleError(f"{where}: profiles must be a list of integers")
        scopes = data.get("scopes", [])
        if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
            raise BundleError(f"{where}: scopes must be a list of strings")
        issuer = data.get("issuer")
        if issuer is not None and not isinstance(issuer, str):
            raise BundleError(f"{where}: issuer must be a string")
        uri, context, secret = _introspection(data.get("introspection"), where)
        credential = data.get("edhoc_credential")
        if credential is not None:
            try:
                credential = bytes.fromhex(credential)
            except (TypeError, ValueError):
                raise BundleError(f"{where}: edhoc_credential must be hex") from None
        return cls(
            edhoc_credential=credential,
            name=str(data.get("name", "")),
            audience=_need(data, "audience", str, where),
            issuer=issuer,
            as_uri=_need(data, "as_uri", str, where),
            token_key=token_key,
            as_public_key=as_public_key,
            has_clock=bool(data.get("has_clock", True)),
            scopes=tuple(scopes),
            profiles=tuple(profiles),
            introspection_uri=uri,
            introspection_context=context,
            introspection_secret=secret,
            note=str(data.get("note", _RS_NOTE)),
            version=version,
        )

    def to_json(self) -> dict[str, Any]:
        """The bundle as written (the current :data:`BUNDLE_VERSION`)."""
        jwk = self.token_key.to_jwk(include_private=True)
        bundle = _envelope(RS_BUNDLE_KIND, self.note)
        bundle.update(
            {
                "name": self.name,
                "audience": self.audience,
                "issuer": self.issuer,
                "as_uri": self.as_uri,
                "token_key": {"kty": "oct", "k": jwk["k"], **_kid(jwk)},
            }
        )
        if self.as_public_key is not None:
            bundle["as_public_key"] = self.as_public_key.to_jwk()
        bundle.update(
            {
                "has_clock": self.has_clock,
                "scopes": list(self.scopes),
                "profiles": list(self.profiles),
            }
        )
        introspection: dict[str, Any] = {}
        if self.introspection_uri is not None and self.introspection_context is not None:
            introspection["uri"] = self.introspection_uri
            introspection["oscore"] = oscore_json(self.introspection_context)
        if self.introspection_secret is not None:
            introspection["http_secret"] = self.introspection_secret
        if introspection:
            bundle["introspection"] = introspection
        if self.edhoc_credential is not None:
            bundle["edhoc_credential"] = self.edhoc_credential.hex()
        return bundle

    def write(self, path: Path) -> Path:
        """Write the bundle to ``path`` (0600, atomically)."""
        return write_bundle(path, self)


def _kid(jwk: Mapping[str, str]) -> dict[str, str]:
    return {"kid": jwk["kid"]} if "kid" in jwk else {}


def _introspection(
    table: object, where: str
) -> tuple[str | None, DerivedContext | None, str | None]:
    """The bundle's ``introspection`` block: the AS's URI and the RS's OSCORE context
    (both or neither), and the RS's HTTP introspection secret."""
    if table is None:
        return None, None, None
    if not isinstance(table, dict):
        raise BundleError(f"{where}: introspection must hold a uri and an oscore context")
    secret = table.get("http_secret")
    if secret is not None and not isinstance(secret, str):
        raise BundleError(f"{where}: introspection.http_secret must be a string")
    if secret is not None and "uri" not in table and "oscore" not in table:
        return None, None, secret  # an RS without an OSCORE context at the AS
    if not isinstance(table.get("uri"), str):
        raise BundleError(f"{where}: introspection must hold a uri and an oscore context")
    try:
        context = oscore_from_json(table.get("oscore"))
    except BundleError as exc:
        raise BundleError(f"{where}: introspection.oscore: {exc.description}") from None
    return str(table["uri"]), context, secret


def rs_bundle(
    rs: RsRecord,
    issuer: IssuerSettings,
    *,
    as_base: str,
    introspection_secret: str | None = None,
) -> dict[str, Any]:
    """The RS bundle for ``rs`` as JSON; ``as_base`` is ``coap://HOST:PORT``.

    ``introspection_secret`` (from
    :func:`keybound.tools.authz_server.provision.new_introspection_secret`) is the RS's
    password at the AS's HTTP ``/introspect``, written as
    ``introspection.http_secret``; the AS keeps only its hash.
    """
    token_key = rs.token_key
    context = rs.introspection_context
    return RsBundle(
        name=rs.name,
        audience=rs.audience,
        issuer=issuer.issuer,
        as_uri=f"{as_base}/token",
        token_key=Key.from_cose_key(token_key.key).with_kid(token_key.kid),
        as_public_key=Key.from_cose_key(issuer.signing_key).public_key(),
        has_clock=rs.has_clock,
        scopes=tuple(rs.scopes),
        profiles=tuple(rs.profiles),
        introspection_uri=None if context is None else f"{as_base}/introspect",
        introspection_context=None if context is None else _derived(context),
        introspection_secret=introspection_secret,
        edhoc_credential=rs.credential,
    ).to_json()


def _derived(context: OscoreContext) -> DerivedContext:
    """The AS store's context as a bundle holds it (the owner's view, RFC 8613 defaults)."""
    return DerivedContext(
        master_secret=context.master_secret,
        master_salt=context.master_salt,
        id_context=context.id_context,
        sender_id=context.sender_id,
        recipient_id=context.recipient_id,
    )


# ---- the device bundle -------------------------------------------------------------------------


@dataclass(frozen=True)
class DeviceBundle:
    """A device's bundle (``keybound as client add``, ``keybound device bundle``), read by
    ``keybound client`` and ``keybound device flash`` here and by ``firmware/config.py``
    on the board; firmware/README.md documents its fields.

    An HTTP-only client's file (``client add --no-oscore``) has the same ``kind`` but no
    ``as_context`` and no device settings; it is refused here (keybound reads its
    ``http.client_secret`` nowhere: ``keybound client http`` takes ``--client-secret``).
    """

    client_id: str
    as_uri: str
    audience: str
    as_context: DerivedContext = field(repr=False)
    scope: str | None = None
    rs_uri: str = ""
    resource: str = "/temp"
    token_path: str = "/token"  # noqa: S105 - a CoAP path
    authz_info_path: str = "/authz-info"
    state_dir: str = "state"
    period_s: int = 60
    #: ``GET`` reads the resource, ``POST`` sends readings; ``None``: not written (GET)
    method: str | None = None
    wifi_ssid: str | None = None
    wifi_password: str | None = field(default=None, repr=False)
    #: the HTTP client secret (``http.client_secret``), when the client has one
    http_secret: str | None = field(default=None, repr=False)
    note: str = field(default=_DEVICE_NOTE, repr=False)
    #: the format version of the file read (1 for a file without ``version``)
    version: int = BUNDLE_VERSION

    @classmethod
    def read(cls, path: Path) -> DeviceBundle:
        """Read and check the device bundle file at ``path``; raises :class:`BundleError`."""
        data = read_bundle_json(path, DEVICE_BUNDLE_KIND)
        return cls.from_json(data, where=f"bundle {Path(path).name}")

    @classmethod
    def from_json(
        cls, data: Mapping[str, Any], *, where: str = "the device bundle"
    ) -> DeviceBundle:
        """The device bundle of its decoded JSON; ``where`` starts each error message."""
        if not isinstance(data, Mapping):
            raise BundleError(f"{where}: not a {DEVICE_BUNDLE_KIND} file (not a JSON object)")
        version = _check_kind_and_version(data, DEVICE_BUNDLE_KIND, where)
        if "as_context" not in data:
            raise BundleError(
                f"{where}: as_context is missing: the firmware and `keybound client` talk "
                "OSCORE to the AS (an HTTP-only client's bundle has no context)"
            )
        try:
            as_context = oscore_from_json(data["as_context"])
        except BundleError as exc:
            raise BundleError(f"{where}: as_context: {exc.description}") from None
        period = data.get("period_s", 60)
        if type(period) is not int or period < 1:
            raise BundleError(f"{where}: period_s must be a positive integer")
        wifi = data.get("wifi")
        if wifi is not None and not (isinstance(wifi, dict) and isinstance(wifi.get("ssid"), str)):
            raise BundleError(f"{where}: wifi must be an object with ssid (and password)")
        http = data.get("http")
        if http is not None and not isinstance(http, dict):
            raise BundleError(f"{where}: http must be an object with client_secret")
        return cls(
            client_id=_need(data, "client_id", str, where),
            as_uri=_need(data, "as_uri", str, where),
            audience=_need(data, "audience", str, where),
            as_context=as_context,
            scope=_optional_text(data, "scope", where),
            rs_uri=_text_or(data, "rs_uri", "", where),
            resource=_text_or(data, "resource", "/temp", where),
            token_path=_text_or(data, "token_path", "/token", where),
            authz_info_path=_text_or(data, "authz_info_path", "/authz-info", where),
            state_dir=_text_or(data, "state_dir", "state", where),
            period_s=period,
            method=_optional_text(data, "method", where),
            wifi_ssid=None if wifi is None else wifi["ssid"],
            wifi_password=None if wifi is None else _optional_text(wifi, "password", where),
            http_secret=None if http is None else _optional_text(http, "client_secret", where),
            note=str(data.get("note", _DEVICE_NOTE)),
            version=version,
        )

    def to_json(self) -> dict[str, Any]:
        """The bundle as written (the current :data:`BUNDLE_VERSION`)."""
        bundle = _envelope(DEVICE_BUNDLE_KIND, self.note)
        bundle.update(
            {
                "client_id": self.client_id,
                "as_uri": self.as_uri,
                "audience": self.audience,
                "scope": self.scope,
                "rs_uri": self.rs_uri,
                "resource": self.resource,
                "token_path": self.token_path,
                "authz_info_path": self.authz_info_path,
                "state_dir": self.state_dir,
                "period_s": self.period_s,
            }
        )
        if self.method is not None:
            bundle["method"] = self.method
        if self.wifi_ssid is not None:
            bundle["wifi"] = {"ssid": self.wifi_ssid, "password": self.wifi_password or ""}
        bundle["as_context"] = oscore_json(self.as_context)
        if self.http_secret is not None:
            bundle["http"] = {"client_secret": self.http_secret}
        return bundle

    def write(self, path: Path) -> Path:
        """Write the bundle to ``path`` (0600, atomically)."""
        return write_bundle(path, self)

    def fingerprint(self) -> str:
        """Names the client-AS key material (not secret: a hash)."""
        ctx = self.as_context
        material = ctx.master_secret + b"|" + ctx.master_salt + b"|" + ctx.sender_id
        return hashlib.sha256(material).hexdigest()[:16]


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
    """The device bundle ``firmware/config.py`` reads, as JSON.

    A client without an OSCORE context is an HTTP client: its bundle has no
    firmware settings (Wi-Fi placeholders, CoAP paths, period), only who it is
    and its ``http`` secret.
    """
    if oscore is not None:
        return DeviceBundle(
            client_id=client_id,
            as_uri=as_base,
            audience=audience,
            scope=scope,
            rs_uri=rs_uri,
            wifi_ssid=WIFI_SSID_PLACEHOLDER,
            wifi_password=WIFI_PASSWORD_PLACEHOLDER,
            as_context=_derived(oscore),
            http_secret=http_secret,
        ).to_json()
    bundle = _envelope(DEVICE_BUNDLE_KIND, _DEVICE_NOTE)
    bundle.update({"client_id": client_id, "as_uri": as_base, "audience": audience})
    bundle["scope"] = scope
    if http_secret is not None:
        bundle["http"] = {"client_secret": http_secret}
    return bundle
