# keybound firmware entry point.
#
# On an ESP32 this file runs at boot: it joins Wi-Fi with the SSID and
# password from the device bundle (never from source), then every period_s
# seconds reads a value and POSTs it to the resource server over OSCORE,
# getting a token from the AS first (see ace.py).  On the MicroPython unix
# port Wi-Fi is skipped, which is how the tests run it.
#
#   micropython main.py [bundle.json] [iterations]

import sys
import time

import ace
import cbor
import config
import oscore
from micropython import const

import coap

_WIFI_TIMEOUT_MS = const(20000)


def connect_wifi(wifi):
    """Join the Wi-Fi network named in the bundle (ESP32, network.WLAN)."""
    import network

    wlan = network.WLAN(network.STA_IF)
    wlan.active(True)
    if not wlan.isconnected():
        wlan.connect(wifi["ssid"], wifi.get("password", ""))
        start = time.ticks_ms()
        while not wlan.isconnected():
            if time.ticks_diff(time.ticks_ms(), start) > _WIFI_TIMEOUT_MS:
                raise OSError("Wi-Fi: could not join %s" % wifi["ssid"])
            time.sleep_ms(200)
    print("wifi:", wlan.ifconfig()[0])
    return wlan


def read_value():
    """The reading to report, as an int (the chip temperature on an ESP32)."""
    try:
        import esp32

        return esp32.mcu_temperature()
    except (ImportError, AttributeError):
        # No sensor on this port: a value that changes, for demonstrations.
        return 2000 + time.ticks_ms() % 500


def build_session(cfg, client=None):
    """An ace.Session wired to a CoAP client and the state directory."""
    state = cfg["state_dir"]
    config.ensure_dir(state)
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


def report(session, cfg, value):
    """POST one reading (a CBOR integer, Content-Format 60) to the RS."""
    req = coap.request(coap.POST, cfg["resource"], cbor.dumps(value), coap.CF_CBOR)
    return session.request(req)


def run(path="keybound.json", iterations=None):
    cfg = config.load(path)
    if cfg["wifi"] and sys.platform != "linux":
        connect_wifi(cfg["wifi"])
    session = build_session(cfg)
    n = 0
    while iterations is None or n < iterations:
        value = read_value()
        try:
            resp = report(session, cfg, value)
            print("sent %d -> %d.%02d" % (value, resp.code >> 5, resp.code & 31))
        except (coap.CoAPError, oscore.OSCOREError, ace.ACEError, OSError) as e:
            # Keep running: the next period retries, with a new token if needed.
            print("error: %s: %s" % (type(e).__name__, e))
        n += 1
        if iterations is None or n < iterations:
            time.sleep(cfg["period_s"])
    return session


if __name__ == "__main__":
    run(
        sys.argv[1] if len(sys.argv) > 1 else "keybound.json",
        int(sys.argv[2]) if len(sys.argv) > 2 else None,
    )
