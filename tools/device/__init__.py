"""keybound.tools.device.

Devices: the device bundle of a registered client (:mod:`.bundle`), and compiling and
copying the MicroPython firmware to a board (:mod:`.flash`).
"""
