# keybound firmware: join the Wi-Fi network named in the device bundle
# (network.WLAN).  app.py calls connect() inside its retry loop, before
# every round while the link is down, and drops the module again.
#
# One call is one attempt: it returns the WLAN once connected, or raises
# OSError saying why; the caller backs off and calls again, so an access
# point that boots later than the board is joined once it is up.  On
# MicroPython 1.22 to 1.25 wlan.connect() while the radio still connects
# (after a soft reset) raises "Wifi Internal Error": the attempt then
# disconnects and switches the interface off and on, and the next one
# starts clean.

import time

from micropython import const

_TIMEOUT_MS = const(20000)


def connect(wifi, feed=None):
    import network

    wlan = network.WLAN(network.STA_IF)
    if not wlan.active():
        wlan.active(True)
    if wlan.isconnected():
        return wlan
    # The status values a failed attempt ends in (ESP32 names; absent ones
    # are skipped): no need to wait out the timeout for those.
    failed = [
        getattr(network, n, None)
        for n in (
            "STAT_NO_AP_FOUND",
            "STAT_WRONG_PASSWORD",
            "STAT_ASSOC_FAIL",
            "STAT_HANDSHAKE_TIMEOUT",
            "STAT_CONNECT_FAIL",
        )
    ]
    try:
        wlan.connect(wifi["ssid"], wifi.get("password", ""))
    except OSError as e:
        # "Wifi Internal Error" (or any refusal): reset the interface.
        try:
            wlan.disconnect()
        except OSError:
            pass  # not connected: nothing to undo before the interface is reset
        wlan.active(False)
        wlan.active(True)
        raise OSError("Wi-Fi: %s; interface reset" % e) from None
    start = time.ticks_ms()
    while not wlan.isconnected():
        if feed:
            feed()
        st = wlan.status()
        if st in failed or time.ticks_diff(time.ticks_ms(), start) > _TIMEOUT_MS:
            wlan.disconnect()
            raise OSError("Wi-Fi: could not join %s (status %s)" % (wifi["ssid"], st))
        time.sleep_ms(100)
    print("wifi:", wlan.ifconfig()[0])
    return wlan
