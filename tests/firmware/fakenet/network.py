# A stand-in for the ESP32 port's network module, for the firmware on the
# unix port, which has no radio.  One station interface whose behaviour
# comes from fakenet.json in the working directory:
#   ssid, password   the access point's
#   ap_after         connect() attempts that find no AP (it is still booting)
#   busy             the radio still connects from before a soft reset:
#                    connect() raises "Wifi Internal Error" (as MicroPython
#                    1.22-1.25 do) until the interface is switched off
#   drop_after       the link drops (once) after this many isconnected()
#                    calls that answered True
#   raise_at         {"N": "MemoryError" | "ValueError"}: the N-th
#                    isconnected() call fails so (MemoryError by really
#                    running out of heap)
# Every call is printed as a "NET ..." line.  Status values as on the ESP32.

import json

STA_IF = 0
STAT_IDLE = 1000
STAT_CONNECTING = 1001
STAT_GOT_IP = 1010
STAT_NO_AP_FOUND = 201
STAT_WRONG_PASSWORD = 202

with open("fakenet.json") as f:
    _SCENE = json.load(f)
_st = {
    "active": False,
    "connected": False,
    "busy": _SCENE.get("busy", False),
    "attempts": 0,
    "checks": 0,
    "up_answers": 0,
    "status": STAT_IDLE,
}


class WLAN:
    def __init__(self, interface=STA_IF):
        self.interface = interface

    def active(self, on=None):
        if on is None:
            return _st["active"]
        print("NET active", bool(on))
        _st["active"] = bool(on)
        if not on:
            _st["connected"] = _st["busy"] = False
            _st["status"] = STAT_IDLE
        return None

    def isconnected(self):
        _st["checks"] += 1
        failure = _SCENE.get("raise_at", {}).get(str(_st["checks"]))
        if failure == "MemoryError":
            print("NET isconnected: allocating past the heap")
            return bytearray(1 << 24) is None
        if failure:
            raise ValueError(f"driver fault injected at check {_st['checks']}")
        if _st["connected"]:
            _st["up_answers"] += 1
            drop = _SCENE.get("drop_after")
            if drop is not None and _st["up_answers"] == drop + 1:
                print("NET link lost")
                _st["connected"] = False
                _st["status"] = STAT_IDLE
        return _st["connected"]

    def connect(self, ssid, password=""):
        if not _st["active"]:
            raise OSError("Wifi Not Started")
        _st["attempts"] += 1
        print("NET connect", ssid, _st["attempts"])
        if _st["busy"]:
            raise OSError("Wifi Internal Error")
        if ssid != _SCENE["ssid"] or _st["attempts"] <= _SCENE.get("ap_after", 0):
            _st["status"] = STAT_NO_AP_FOUND
        elif password != _SCENE["password"]:
            _st["status"] = STAT_WRONG_PASSWORD
        else:
            _st["connected"] = True
            _st["status"] = STAT_GOT_IP

    def disconnect(self):
        print("NET disconnect")
        _st["connected"] = False
        _st["status"] = STAT_IDLE

    def status(self):
        return _st["status"]

    def ifconfig(self):
        return ("10.0.0.2", "255.255.255.0", "10.0.0.1", "10.0.0.1")
