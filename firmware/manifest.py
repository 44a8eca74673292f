# ruff: noqa: F821 - metadata() and module() are provided by the manifest tool
# keybound firmware package, micropython-lib style: freeze these modules
# with `include("path/to/firmware/manifest.py")` in a board manifest, or
# copy the .py (or .mpy) files to the board.  main.py is the application
# entry point; copy it to the board's filesystem rather than freezing it,
# so a board boots it.
metadata(
    description="keybound: ACE-OAuth client (OSCORE profile) with CBOR, CoAP and OSCORE",
    version="0.1.0",
    license="Apache-2.0",
)

module("cbor.py")
module("coap.py")
module("block.py")
module("oscore.py")
module("ace.py")
module("oscore_ace.py")
module("config.py")
module("wifi.py")
module("app.py")
module("lost.py")
# The EDHOC profile (imported only when the bundle says "profile": "edhoc").
module("p256.py")
module("edhoc.py")
module("edhoc_ace.py")
module("keygen.py")
