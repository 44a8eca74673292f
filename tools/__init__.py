"""keybound.tools: the applications (CLI, desktop AS, RS daemon, device tooling, benchmarks)."""

if __name__ != "keybound.tools":  # pragma: no cover - exercised by a subprocess test
    raise ImportError(
        f"this package must be imported as 'keybound.tools', not {__name__!r}: install "
        "keybound (pip install -e .) instead of importing the folder from the repository root"
    )
