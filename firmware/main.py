# keybound firmware entry point; the board runs this file at boot.
# It stays a source file and stays small: the application is app.py
# (deployed compiled, as app.mpy).  On the unix port:
#
#   micropython main.py [bundle.json] [iterations]
#
# app.run() never ends by itself; what could still end it (a bad bundle,
# no heap even to load the modules) is printed and, on a board, followed
# by a reset 30 s later.  Ctrl-C stops it for the REPL.  For POST readings
# from your own sensor: app.run(sensor=read), read() returning an integer.

import sys

if __name__ == "__main__":
    a = sys.argv
    try:
        import app

        app.run(a[1] if len(a) > 1 else "keybound.json", int(a[2]) if len(a) > 2 else None)
    except Exception as e:
        import machine

        if not hasattr(machine, "reset"):
            raise  # the unix port
        sys.print_exception(e)
        print("reset in 30 s")
        import time

        time.sleep(30)
        machine.reset()
