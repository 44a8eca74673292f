"""CPython's view of the firmware folder: a regular package, so that
``importlib.resources`` can list the firmware files under every kind of
install (a wheel, and both setuptools editable modes).

This file is not firmware: ``keybound device flash`` and the freezing
manifest leave it out, and it holds no code, so a copy on a board would do
nothing.
"""
