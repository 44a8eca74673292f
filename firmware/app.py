# keybound firmware: the application, started by main.py.
#
# Boot: read the device bundle (config.py, unloaded afterwards), join Wi-Fi
# on an ESP32, then every period_s seconds send the bundle's request to the
# resource server over OSCORE, getting a token from the AS first (ace.py).
# With "method": "GET" (the default) the device reads the resource; with
# "POST" it sends a reading (a CBOR integer) to it: the chip temperature on
# an ESP32, elsewhere a value that changes, for demonstrations.

import gc
import sys
import time

import ace
import cbor
import oscore

import coap


def boot(path="keybound.json"):
    """Read the bundle, join Wi-Fi where there is one; returns the config dict.

    The bundle reader and the Wi-Fi code are needed once: both modules are
    dropped again so their code does not occupy the heap while running.
    """
    gc.collect()  # one free run for the bundle's text after the code loaded
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
    client = client or coap.Client()
    return ace.Session(
        as_ctx,
        client.sender(*coap.parse_uri(cfg["as_uri"])[:2]),
        client.sender(*coap.parse_uri(cfg["rs_uri"])[:2]),
        cfg["audience"],
        cfg["scope"],
        oscore.SequenceStore(state + "/rs.seq"),
        None,
        token_path=cfg["token_path"],
        authz_info_path=cfg["authz_info_path"],
    )


def run(path="keybound.json", iterations=None):
    cfg = boot(path)
    session = build_session(cfg)
    method = cfg["method"]
    resource = cfg["resource"]
    n = 0
    while iterations is None or n < iterations:
        try:
            if method == "POST":
                try:
                    import esp32

                    value = esp32.mcu_temperature()
                except (ImportError, AttributeError):
                    value = 2000 + time.ticks_ms() % 500
                req = coap.request(coap.POST, resource, cbor.dumps(value), coap.CF_CBOR)
            else:
                req = coap.request(coap.GET, resource)
            resp = session.request(req)
            print(
                "%s %s -> %d.%02d %s"
                % (method, resource, resp.code >> 5, resp.code & 31, bytes(resp.payload[:32]))
            )
        except (coap.CoAPError, oscore.OSCOREError, ace.ACEError, OSError) as e:
            # Keep running: the next period retries, with a new token if needed.
            print("error: %s: %s" % (type(e).__name__, e))
        n += 1
        if iterations is None or n < iterations:
            time.sleep(cfg["period_s"])
    return session
