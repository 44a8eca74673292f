# keybound firmware: the application, started by main.py.
#
# Boot: read the device bundle (config.py, unloaded afterwards), join Wi-Fi
# on an ESP32, then every period_s seconds send the bundle's request to the
# resource server over OSCORE, getting a token from the AS first (ace.py).
# With "method": "GET" (the default) the device reads the resource; with
# "POST" it sends a reading (a CBOR integer) to it.

import gc
import sys
import time

import ace
import cbor
import oscore

import coap


def read_value():
    """The reading to report, as an int (the chip temperature on an ESP32)."""
    try:
        import esp32

        return esp32.mcu_temperature()
    except (ImportError, AttributeError):
        # No sensor on this port: a value that changes, for demonstrations.
        return 2000 + time.ticks_ms() % 500


def boot(path="keybound.json"):
    """Read the bundle, join Wi-Fi where there is one; returns the config dict.

    The bundle reader and the Wi-Fi code are needed once: both modules are
    dropped again so their code does not occupy the heap while running.
    """
    import config

    cfg = config.load(path)
    del sys.modules["config"]
    if cfg["wifi"] and sys.platform != "linux":
        import wifi

        wifi.connect(cfg["wifi"])
        del sys.modules["wifi"]
    gc.collect()
    return cfg


def build_session(cfg, client=None):
    """An ace.Session wired to a CoAP client and the state directory."""
    import os

    state = cfg["state_dir"]
    try:
        os.stat(state)
    except OSError:
        os.mkdir(state)
    c = cfg["as_context"]
    as_ctx = oscore.Context(
        c["master_secret"],
        c["master_salt"],
        c["sender_id"],
        c["recipient_id"],
        c["id_context"],
        c["alg"],
        oscore.SequenceStore(state + "/as.seq"),
    )
    if client is None:
        client = coap.Client()
    as_host, as_port, _ = coap.parse_uri(cfg["as_uri"])
    rs_host, rs_port, _ = coap.parse_uri(cfg["rs_uri"])
    return ace.Session(
        as_ctx,
        client.sender(as_host, as_port),
        client.sender(rs_host, rs_port),
        cfg["audience"],
        cfg["scope"],
        rs_store=oscore.SequenceStore(state + "/rs.seq"),
        token_path=cfg["token_path"],
        authz_info_path=cfg["authz_info_path"],
    )


def report(session, cfg):
    """One request to the RS: GET the resource, or POST a reading to it."""
    if cfg["method"] == "POST":
        value = read_value()
        req = coap.request(coap.POST, cfg["resource"], cbor.dumps(value), coap.CF_CBOR)
    else:
        req = coap.request(coap.GET, cfg["resource"])
    return session.request(req)


def run(path="keybound.json", iterations=None):
    cfg = boot(path)
    session = build_session(cfg)
    n = 0
    while iterations is None or n < iterations:
        try:
            resp = report(session, cfg)
            print(
                "%s %s -> %d.%02d %s"
                % (
                    cfg["method"],
                    cfg["resource"],
                    resp.code >> 5,
                    resp.code & 31,
                    bytes(resp.payload[:32]),
                )
            )
        except (coap.CoAPError, oscore.OSCOREError, ace.ACEError, OSError) as e:
            # Keep running: the next period retries, with a new token if needed.
            print("error: %s: %s" % (type(e).__name__, e))
        n += 1
        if iterations is None or n < iterations:
            time.sleep(cfg["period_s"])
    return session
