# keybound firmware: the device bundle (a JSON file written at provisioning).
#
# The format is documented in README.md next to this file.  load() checks
# every field it reads and raises ConfigError naming the field, so a bad
# bundle fails at boot with a clear message instead of mid-flow.  Like
# keybound.tools.bundles it refuses another kind and a newer version; a
# missing version is 1 (bundles from before the field), a missing kind is
# allowed (hand-written bundles).

from micropython import const

_KIND = "keybound-device-bundle"
_BUNDLE_VERSION = const(1)
_MAX_BUNDLE = const(4096)
_DEFAULT_PERIOD_S = const(60)
# The longest CoAP exchange (MAX_TRANSMIT_WAIT, RFC 7252 §4.8.2) is 93 s;
# the watchdog is fed before each one.
_MIN_WATCHDOG_S = const(100)


class ConfigError(ValueError):
    """The device bundle is missing a field or has a bad value."""


def _hex(d, name, required=True, max_len=64):
    v = d.get(name)
    if v is None:
        if required:
            raise ConfigError("bundle: missing %s" % name)
        return None
    if not isinstance(v, str):
        raise ConfigError("bundle: %s must be a hex string" % name)
    try:
        raw = bytes.fromhex(v)
    except ValueError:
        raise ConfigError("bundle: %s is not valid hex" % name) from None
    if len(raw) > max_len:
        raise ConfigError("bundle: %s is too long" % name)
    return raw


def _text(d, name, required=True):
    v = d.get(name)
    if v is None:
        if required:
            raise ConfigError("bundle: missing %s" % name)
        return None
    if not isinstance(v, str) or not v:
        raise ConfigError("bundle: %s must be a non-empty string" % name)
    return v


def _uri(d, name):
    # "coap://host:port/..." -> (host, port), the address app.py resolves:
    # parsed here at boot, so the parser is not in RAM while the device runs.
    # Only the coap scheme; no query or fragment (RFC 7252 §6.4 in the small).
    v = _text(d, name)
    try:
        if not v.startswith("coap://"):
            raise ValueError
        host = v[7:].split("/", 1)[0]
        port = ""
        i = host.rfind(":")
        if i > host.rfind("]"):  # not inside an IPv6 literal
            host, port = host[:i], host[i + 1 :]
        if host.startswith("["):
            host = host[1:-1]
        return host, int(port) if port else 5683
    except ValueError:
        raise ConfigError("bundle: %s must look like coap://host:port" % name) from None


def _int(d, name, default, low):
    v = d.get(name, default)
    if v is not None and (type(v) is not int or v < low):
        raise ConfigError("bundle: %s must be an integer of at least %d" % (name, low))
    return v


def parse(d):
    """Validate a decoded bundle (a dict) and return a normalised dict."""
    if not isinstance(d, dict):
        raise ConfigError("bundle: top level must be a JSON object")
    kind = d.get("kind", _KIND)
    if kind != _KIND:
        raise ConfigError("bundle: not a %s file (kind %s)" % (_KIND, kind))
    version = d.get("version", 1)
    if type(version) is not int or not 1 <= version <= _BUNDLE_VERSION:
        raise ConfigError("bundle: unsupported version %r (this firmware reads 1)" % (version,))
    ctx = d.get("as_context")
    if not isinstance(ctx, dict):
        raise ConfigError("bundle: missing as_context object")
    alg = ctx.get("alg", 10)
    if alg != 10:
        raise ConfigError("bundle: as_context.alg must be 10 (AES-CCM-16-64-128)")
    period = d.get("period_s", _DEFAULT_PERIOD_S)
    if not isinstance(period, int) or period < 1:
        raise ConfigError("bundle: period_s must be a positive integer")
    retry = _int(d, "retry_ms", 2000, 1)
    wifi = d.get("wifi")
    if wifi is not None and (not isinstance(wifi, dict) or "ssid" not in wifi):
        raise ConfigError("bundle: wifi must be an object with ssid (and password)")
    profile = d.get("profile", "oscore")
    if profile not in ("oscore", "edhoc"):
        raise ConfigError("bundle: profile must be oscore or edhoc")
    method = d.get("method", "GET")
    if method not in ("GET", "POST"):
        raise ConfigError("bundle: method must be GET or POST")
    out = {
        "method": method,
        "profile": profile,
        "client_id": _text(d, "client_id"),
        "as_uri": _text(d, "as_uri"),
        "rs_uri": _text(d, "rs_uri"),
        "as_addr": _uri(d, "as_uri"),
        "rs_addr": _uri(d, "rs_uri"),
        "audience": _text(d, "audience"),
        "scope": _text(d, "scope"),
        "resource": _text(d, "resource", False) or "/temp",
        "token_path": _text(d, "token_path", False) or "/token",
        "authz_info_path": _text(d, "authz_info_path", False) or "/authz-info",
        "state_dir": _text(d, "state_dir", False) or "state",
        "period_s": period,
        "retry_ms": retry,
        "max_retry_ms": max(retry, _int(d, "max_retry_ms", 300000, 1)),
        "max_failures": _int(d, "max_failures", 10, 1),
        "watchdog_s": _int(d, "watchdog_s", None, _MIN_WATCHDOG_S),
        "wifi": wifi,
        "as_context": {
            "master_secret": _hex(ctx, "master_secret"),
            "master_salt": _hex(ctx, "master_salt", False) or b"",
            "sender_id": _hex(ctx, "sender_id", max_len=7),
            "recipient_id": _hex(ctx, "recipient_id", max_len=7),
            "id_context": _hex(ctx, "id_context", False),
            "alg": alg,
        },
    }
    if len(out["as_context"]["master_secret"]) < 16:
        raise ConfigError("bundle: as_context.master_secret must be at least 16 bytes")
    return out


def load(path="keybound.json"):
    """Read and validate the bundle file at path.

    The size is checked with os.stat and the JSON parsed from the open
    file: no 4 KB buffer for the text, which needs a contiguous block of a
    heap that already holds the code.
    """
    import json
    import os

    try:
        size = os.stat(path)[6]
    except OSError:
        raise ConfigError("bundle: cannot read %s" % path) from None
    if size > _MAX_BUNDLE:
        raise ConfigError("bundle: %s is longer than %d bytes" % (path, _MAX_BUNDLE))
    try:
        with open(path) as f:
            d = json.load(f)
    except OSError:
        raise ConfigError("bundle: cannot read %s" % path) from None
    except ValueError:
        raise ConfigError("bundle: %s is not valid JSON" % path) from None
    return parse(d)
