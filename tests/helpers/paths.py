"""Where things are: the repository, the vectors, the running interpreter's scripts."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from keybound.core.keys import Key

ROOT = Path(__file__).resolve().parents[2]
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
