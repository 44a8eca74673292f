"""``keybound bench --only trl``: token revocation list figures (no timings asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

UNITS = {
    "trl.revoke_to_refusal_ms": "ms",
    "trl.full_1_bytes": "bytes",
    "trl.full_10_bytes": "bytes",
    "trl.full_100_bytes": "bytes",
    "trl.full_1000_bytes": "bytes",
    "trl.diff_1_bytes": "bytes",
    "trl.diff_batch_bytes": "bytes",
    "trl.purge_1_of_1000_us": "µs",
}


def _array_head(count: int) -> int:
    """Bytes of a CBOR array head for ``count`` items (RFC 8949 §3)."""
    return 1 if count < 24 else 2 if count < 256 else 3


def test_trl_group_measures_its_figures_against_their_baselines() -> None:
    keybound = Path(sys.executable).parent / "keybound"
    done = subprocess.run(
        [str(keybound), "bench", "--quick", "--json", "--only", "trl"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    figures = {f["name"]: f for f in json.loads(done.stdout)["figures"]}
    assert list(figures) == list(UNITS)
    for name, figure in figures.items():
        assert figure["unit"] == UNITS[name]
        assert figure["value"] > 0
        assert figure["baseline"] > 0
    for n in (1, 10, 100, 1000):
        full = figures[f"trl.full_{n}_bytes"]
        # {0: [N byte strings of 33 bytes (head 0x58 0x21)], 2: 0}: map head, key, the
        # array, key, cursor
        assert full["value"] == 1 + 1 + _array_head(n) + n * 35 + 1 + 1
        assert full["baseline"] == n * 33
    # {1: [[[], [h]]], 2: 0, 3: false}: the one entry beside the same hash in a full query
    assert figures["trl.diff_1_bytes"]["value"] == 1 + 1 + 1 + 1 + 1 + 1 + 35 + 2 + 2
    assert figures["trl.diff_1_bytes"]["baseline"] == figures["trl.full_1_bytes"]["value"]
    assert figures["trl.revoke_to_refusal_ms"]["baseline_name"] == "trl.revoke_to_purge_ms"
    assert figures["trl.purge_1_of_1000_us"]["baseline_name"] == "trl.purge_scan_1000_us"
