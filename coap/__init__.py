"""keybound.coap: CoAP bindings on aiocoap (AS resources, RS site, the CPython client)."""

if __name__ != "keybound.coap":  # pragma: no cover - exercised by a subprocess test
    raise ImportError(
        f"this package must be imported as 'keybound.coap', not {__name__!r}: install "
        "keybound (pip install -e .) instead of importing the folder from the repository root"
    )
