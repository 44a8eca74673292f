"""keybound 0.1.0's CBOR, COSE, CWT and claims codec, kept as the reference for differential tests.

Copies of ``core/cbor.py``, ``core/cose.py``, ``core/cwt.py`` and the CWT half of
``core/token.py`` as they were before the codec was made faster; the current codec
must give the same output and the same errors (class and ACE/OAuth code) on every input.
"""
