"""keybound.tools: the applications (CLI, desktop AS, RS daemon, device tooling, benchmarks)."""

if __name__ != "keybound.tools":  # pragma: no cover - exercised by a subprocess test
    raise ImportError(
        f"this package must be imported as 'keybound.tools', not {__name__!r}: install "
        "keybound (pip install -e .) instead of importing the folder from the repository root"
    )

#: keybound's version, as pyproject.toml says (a test keeps the two equal): reading the
#: installed metadata instead costs ``keybound --version`` a third of its start-up.
__version__ = "0.1.0"
