"""Shared test helpers: paths, the RFC 8392 Appendix A keys, subprocess runners."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from keybound.core.keys import Key

ROOT = Path(__file__).resolve().parent.parent
VECTORS = ROOT / "tests" / "vectors"
BIN = Path(sys.executable).parent


def load_vectors(name: str) -> Any:
    return json.loads((VECTORS / name).read_text())


def rfc8392_keys() -> dict[str, Key]:
    """The keys of RFC 8392 Appendix A.2, by section title."""
    keys: dict[str, Key] = {}
    for title, spec in load_vectors("rfc8392_appendix_a.json")["keys"].items():
        kid = spec["kid"].encode()
        if "k" in spec:
            keys[title] = Key.symmetric(bytes.fromhex(spec["k"]), kid=kid)
        else:
            keys[title] = Key.from_cose_key(
                {
                    1: 2,
                    2: kid,
                    -1: 1,
                    -2: bytes.fromhex(spec["x"]),
                    -3: bytes.fromhex(spec["y"]),
                    -4: bytes.fromhex(spec["d"]),
                }
            )
    return keys


def run_keybound(
    *args: str, input_text: str | None = None, timeout: float = 60, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the installed ``keybound`` console script."""
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    return subprocess.run(
        [str(BIN / "keybound"), *args],
        input=input_text,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=cwd,
        check=False,
    )


@pytest.fixture(scope="session")
def a2_keys() -> dict[str, Key]:
    return rfc8392_keys()
