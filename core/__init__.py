"""keybound.core: the sans-IO protocol layer.

Registries, errors, keys, COSE, the shared token model with its CWT and JWT
codecs, and the protocol logic of the AS, the RS and the client. Nothing here
does I/O: time, randomness and key lookup come in as parameters.
"""

if __name__ != "keybound.core":  # pragma: no cover - exercised by a subprocess test
    raise ImportError(
        f"this package must be imported as 'keybound.core', not {__name__!r}: install "
        "keybound (pip install -e .) instead of importing the folder from the repository root"
    )

__all__: list[str] = []
