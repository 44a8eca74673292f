# keybound firmware: the application, started by main.py.
#
# Boot reads the device bundle (config.py, unloaded afterwards).  Then every
# round: join Wi-Fi while the link is down (wifi.py, loaded only then),
# resolve the AS and RS names, send the bundle's request to the RS over
# OSCORE, getting a token from the AS first (ace.py, with oscore_ace.py or
# edhoc_ace.py for the bundle's profile), and sleep period_s seconds.  With
# "method": "GET" (the default) the device reads the resource; with "POST" it
# sends a reading (a CBOR integer) from the sensor callback given to run(),
# else from esp32.mcu_temperature() where the chip has one; without either it
# says so and sends nothing: it never makes a value up.
#
# The loop never ends by itself.  A round that fails with any exception,
# MemoryError included, is printed and followed by a back-off (retry_ms,
# doubling up to max_retry_ms), a new socket and the names resolved again;
# after max_failures failed rounds in a row the board resets
# (machine.reset(); the unix port has none and exits with status 75).  With
# watchdog_s in the bundle a hardware watchdog (machine.WDT) is fed before
# every exchange, during the Wi-Fi join and while sleeping.
#
# An AS that refuses a request as a replay (RFC 8613 §7.4) has seen this
# device's sequence numbers before: the state folder was lost (an erased
# flash, the same bundle written again) or the bundle is on two boards.
# Every further request would reuse a nonce under the device's key, so the
# device stops talking to the AS until it is reset and says why every
# period; the way back is a new bundle (keybound as client rekey NAME).

import gc
import sys
import time

import cbor
import oscore
from micropython import const

import coap

# CoAP numbers (coap.py; a const() does not cross modules)
_CF_CBOR = const(60)
_OSCORE = const(9)
_UNAUTHORIZED = const(0x81)

_RESET_EXIT = const(75)
# A collection after every GC_THRESHOLD bytes allocated (gc.threshold), not
# only when the heap is full: garbage then goes before the next objects land
# between its pieces, and the heap fragments less.  Measured on pip's 64-bit
# unix port: the whole flow's heap floor 45.8 -> 43.3 KB, the EDHOC flow's
# 66.6 -> 61.2 KB; the collections cost time (firmware/README.md, "Limits").
GC_THRESHOLD = const(2048)


def boot(path="keybound.json"):
    """Read the bundle; returns the config dict.

    The bundle reader is needed once: the module is dropped again so its
    code does not occupy the heap while running.
    """
    gc.threshold(GC_THRESHOLD)
    gc.collect()  # one free run for the bundle's text after the code loaded
    import config

    cfg = config.load(path)
    del sys.modules["config"]
    gc.collect()
    return cfg


def _senders(cfg, client):
    # getaddrinfo runs here: again after every failed round.
    return (
        client.sender(*cfg["as_addr"]),
        client.sender(*cfg["rs_addr"]),
    )


def build_session(cfg, client=None):
    """The profile's ace.Session (oscore_ace or edhoc_ace) wired to a CoAP
    client and the state directory."""
    import os

    state = cfg["state_dir"]
    try:
        os.stat(state)
    except OSError:
        os.mkdir(state)
    # as_context's keys (config.parse) are oscore.Context's parameter names:
    # no string of its own for each.
    as_ctx = oscore.Context(store=oscore.SequenceStore(state + "/as.seq"), **cfg["as_context"])
    send_as, send_rs = _senders(cfg, client or coap.Client())
    if cfg["profile"] == "edhoc":
        # Loaded only here: an OSCORE-profile device never imports EDHOC.
        import edhoc_ace

        return edhoc_ace.build(cfg, as_ctx, send_as, send_rs)
    import oscore_ace  # likewise: an EDHOC-profile device never imports this

    return oscore_ace.Session(
        as_ctx,
        send_as,
        send_rs,
        cfg["audience"],
        cfg["scope"],
        oscore.SequenceStore(state + "/rs.seq"),
        None,
        token_path=cfg["token_path"],
        authz_info_path=cfg["authz_info_path"],
    )


def _guard(send, feed, session=None, name=None):
    # Feeds the watchdog before each exchange; for the AS (session given) an
    # unprotected 4.01 "Replay detected" (RFC 8613 §7.4) sets session.lost
    # (lost.py, loaded only for an unprotected 4.01).
    def f(msg):
        if feed:
            feed()
        resp = send(msg)
        if session and resp.code == _UNAUTHORIZED and resp.get(_OSCORE) is None:
            import lost

            try:
                lost.check(session, resp, name)
            finally:
                del sys.modules["lost"]
        return resp

    return f


def run(path="keybound.json", iterations=None, sensor=None):
    """The device's main loop; iterations=None runs for ever.

    sensor, for POST: a function returning the reading as an integer, or
    None when there is none this time.
    """
    import machine

    cfg = boot(path)
    feed = None
    if cfg["watchdog_s"]:
        if hasattr(machine, "WDT"):
            feed = machine.WDT(timeout=cfg["watchdog_s"] * 1000).feed
        else:
            print("watchdog: this port has no machine.WDT")
    method = cfg["method"]
    resource = cfg["resource"]
    session = client = None
    failures = n = 0
    while iterations is None or n < iterations:
        delay = cfg["period_s"] * 1000
        try:
            if session and session.lost:
                print("stopped:", session.lost)
            else:
                if cfg["wifi"]:
                    try:
                        import network
                    except ImportError:
                        network = None  # no radio: the unix port
                    if network and not network.WLAN(network.STA_IF).isconnected():
                        import wifi

                        try:
                            wifi.connect(cfg["wifi"], feed)
                        finally:
                            del sys.modules["wifi"]
                if client is None:
                    client = coap.Client()
                    if session is None:
                        session = build_session(cfg, client)
                        session.lost = None
                    else:
                        session.send_as, session.send_rs = _senders(cfg, client)
                    session.send_as = _guard(session.send_as, feed, session, cfg["client_id"])
                    session.send_rs = _guard(session.send_rs, feed)
                if method == "POST":
                    value = None
                    if sensor:
                        value = sensor()
                    else:
                        try:
                            import esp32

                            value = esp32.mcu_temperature()
                        except (ImportError, AttributeError):
                            pass  # the classic ESP32, MicroPython before 1.23, unix
                    if value is None:
                        print("POST %s: no reading (no sensor)" % resource)
                        req = None
                    else:
                        req = coap.request(coap.POST, resource, cbor.dumps(value), _CF_CBOR)
                else:
                    req = coap.request(coap.GET, resource)
                if req:
                    resp = session.request(req)
                    print(
                        "%s %s -> %d.%02d %s"
                        % (
                            method,
                            resource,
                            resp.code >> 5,
                            resp.code & 31,
                            bytes(resp.payload[:32]),
                        )
                    )
                # Not held through the next round's request, a new token and
                # handshake among them (the EDHOC flow's heap floor, 256 bytes).
                req = resp = None
            failures = 0
        except Exception as e:  # MemoryError too: the loop must go on
            if session and session.lost:
                print("error: StateLost:", session.lost)  # a reset would not cure it
            else:
                failures += 1
                if client:
                    try:
                        client.close()
                    except Exception:
                        pass  # a broken socket may not close: it is replaced anyway
                client = None
                gc.collect()
                try:
                    # An unprotected answer's diagnostic payload says why, e.g.
                    # the AS's "Security context not found" (RFC 8613 §8.2).
                    r = getattr(e, "response", None)
                    r = " %r" % bytes(r.payload[:40]) if r else ""
                    print("error: %s: %s%s (%d in a row)" % (type(e).__name__, e, r, failures))
                except MemoryError:
                    pass  # no heap for the diagnostic: the round still counts as failed
                if failures >= cfg["max_failures"]:
                    print("reset: %d failed rounds in a row" % failures)
                    if hasattr(machine, "reset"):
                        machine.reset()
                    sys.exit(_RESET_EXIT)
                delay = min(cfg["retry_ms"] << min(failures - 1, 20), cfg["max_retry_ms"])
        n += 1
        if iterations is None or n < iterations:
            while delay > 0:
                if feed:
                    feed()
                time.sleep_ms(min(delay, 1000))
                delay -= 1000
    return session
