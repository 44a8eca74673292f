# Tiny check-and-report helper for the firmware tests on the MicroPython
# unix port.  Every check prints one line, "PASS name" or "FAIL name:
# detail"; done() prints a summary line and exits non-zero on any failure.
# The pytest wrapper (tests/test_firmware.py) parses these lines.

import binascii
import sys

_state = {"passed": 0, "failed": 0}


def hexstr(data):
    # Lowercase hex text of bytes.  Not data.hex(): on MicroPython 1.22 to
    # 1.25 b"".hex() returns b"" (bytes), which breaks string concatenation;
    # hexlify() returns bytes on every release.
    return binascii.hexlify(data).decode()


def check(name, ok, detail=""):
    if ok:
        _state["passed"] += 1
        print("PASS", name)
    else:
        _state["failed"] += 1
        print(f"FAIL {name}: {detail}")
    return ok


def eq(name, got, want):
    if isinstance(got, (bytes, bytearray)) and isinstance(want, (bytes, bytearray)):
        return check(name, bytes(got) == bytes(want), f"got {hexstr(got)} want {hexstr(want)}")
    return check(name, got == want, f"got {got!r} want {want!r}")


def raises(name, exc, fn, *args, contains=None):
    try:
        fn(*args)
    except exc as e:
        if contains is not None and contains not in str(e):
            return check(name, False, f"message {str(e)!r} lacks {contains!r}")
        return check(name, True)
    except Exception as e:
        return check(name, False, f"raised {type(e).__name__}: {e}")
    return check(name, False, "did not raise")


def done():
    print(f"DONE passed={_state['passed']} failed={_state['failed']}")
    sys.exit(1 if _state["failed"] else 0)
