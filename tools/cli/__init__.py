"""keybound.tools.cli.

The ``keybound`` command (typer commands only; the work is done elsewhere).
"""
