# keybound firmware entry point; the board runs this file at boot.
# It stays a source file and stays small: the application is app.py
# (deployed compiled, as app.mpy).  On the unix port:
#
#   micropython main.py [bundle.json] [iterations]

import sys

import app

if __name__ == "__main__":
    a = sys.argv
    app.run(a[1] if len(a) > 1 else "keybound.json", int(a[2]) if len(a) > 2 else None)
