# keybound firmware: join the Wi-Fi network named in the device bundle
# (ESP32, network.WLAN).  Imported once at boot and dropped afterwards.

import time

from micropython import const

_TIMEOUT_MS = const(20000)


def connect(wifi):
    import network

    wlan = network.WLAN(network.STA_IF)
    wlan.active(True)
    if not wlan.isconnected():
        wlan.connect(wifi["ssid"], wifi.get("password", ""))
        start = time.ticks_ms()
        while not wlan.isconnected():
            if time.ticks_diff(time.ticks_ms(), start) > _TIMEOUT_MS:
                raise OSError("Wi-Fi: could not join %s" % wifi["ssid"])
            time.sleep_ms(200)
    print("wifi:", wlan.ifconfig()[0])
    return wlan
