# Device bundle parsing (firmware config.py).
# Usage: micropython mp_config.py BUNDLE.json  (the example from README.md)

import json
import sys

import config
from mptest import done, eq, raises

cfg = config.load(sys.argv[1])
eq("README example: AS URI", cfg["as_uri"], "coap://192.168.1.10:5683")
eq("README example: master secret bytes", len(cfg["as_context"]["master_secret"]), 16)
eq("README example: empty sender_id allowed", cfg["as_context"]["recipient_id"], b"")
eq("README example: id_context", cfg["as_context"]["id_context"], bytes.fromhex("37cbf3210017a2d3"))
eq("defaults: token path", cfg["token_path"], "/token")
eq("defaults: back-off", (cfg["retry_ms"], cfg["max_retry_ms"]), (2000, 300000))
eq(
    "defaults: reset after 10 failed rounds, no watchdog",
    (cfg["max_failures"], cfg["watchdog_s"]),
    (10, None),
)

with open(sys.argv[1]) as f:
    base = json.load(f)


def broken(change):
    d = json.loads(json.dumps(base))
    change(d)
    return d


def drop(key):
    return lambda d: d.pop(key)


def ctx_set(key, value):
    return lambda d: d["as_context"].__setitem__(key, value)


for name, change, needle in (
    ("missing audience", drop("audience"), "audience"),
    ("missing as_context", drop("as_context"), "as_context"),
    ("https AS URI", lambda d: d.__setitem__("as_uri", "https://x"), "as_uri"),
    ("bad hex secret", ctx_set("master_secret", "zz"), "master_secret"),
    ("short secret", ctx_set("master_secret", "0102"), "at least 16"),
    ("sender_id too long", ctx_set("sender_id", "00" * 8), "sender_id"),
    ("alg 11", ctx_set("alg", 11), "alg"),
    ("period 0", lambda d: d.__setitem__("period_s", 0), "period_s"),
    ("retry_ms 0", lambda d: d.__setitem__("retry_ms", 0), "retry_ms"),
    ("max_failures as text", lambda d: d.__setitem__("max_failures", "3"), "max_failures"),
    (
        "watchdog shorter than an exchange",
        lambda d: d.__setitem__("watchdog_s", 60),
        "at least 100",
    ),
    ("version 2", lambda d: d.__setitem__("version", 2), "version"),
    ("version 0", lambda d: d.__setitem__("version", 0), "version"),
    ("version as text", lambda d: d.__setitem__("version", "1"), "version"),
    ("an RS bundle", lambda d: d.__setitem__("kind", "keybound-rs-bundle"), "not a keybound"),
):
    raises("refused: " + name, config.ConfigError, config.parse, broken(change), contains=needle)
eq("README example: kind", base["kind"], "keybound-device-bundle")
# Bundles written before the version field existed are version 1; hand-written ones
# may lack the kind.
eq("no version: read as 1", config.parse(broken(drop("version")))["client_id"], "sensor-17")
eq("no kind: accepted", config.parse(broken(drop("kind")))["client_id"], "sensor-17")

big = sys.argv[1] + ".big"
with open(big, "w") as f:
    f.write(json.dumps(base) + " " * 4096)
raises("oversized file", config.ConfigError, config.load, big, contains="longer than 4096")
raises(
    "missing file",
    config.ConfigError,
    config.load,
    "/nonexistent/bundle.json",
    contains="cannot read",
)
done()
