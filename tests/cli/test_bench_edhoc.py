"""``keybound bench --only edhoc``: the EDHOC and OSCORE profile's figures (no timings asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

NAMES = [
    "edhoc.token_bytes",
    "edhoc.message_bytes",
    "edhoc.handshake_us",
    "edhoc.own_handshake_us",
    "edhoc.method_0_message_bytes",
    "edhoc.rs_protected_get_rps",
]
UNITS = {
    "edhoc.token_bytes": "bytes",
    "edhoc.message_bytes": "bytes",
    "edhoc.handshake_us": "µs",
    "edhoc.own_handshake_us": "µs",
    "edhoc.method_0_message_bytes": "bytes",
    "edhoc.rs_protected_get_rps": "requests/s",
}


def test_edhoc_group_measures_its_figures_against_their_baselines() -> None:
    keybound = Path(sys.executable).parent / "keybound"
    done = subprocess.run(
        [str(keybound), "bench", "--quick", "--json", "--only", "edhoc"],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    figures = {f["name"]: f for f in report["figures"]}
    assert list(figures) == NAMES
    for name, figure in figures.items():
        assert figure["unit"] == UNITS[name]
        assert figure["value"] > 0
        assert figure["baseline"] > 0
        assert abs(figure["ratio"] - figure["value"] / figure["baseline"]) < 1e-9
    # method 3, credentials by kid, no EAD: lakers' published 101 bytes, through the RS too
    assert figures["edhoc.message_bytes"]["value"] == 101
    assert figures["edhoc.message_bytes"]["baseline"] == 101
    assert figures["edhoc.method_0_message_bytes"]["baseline"] == 101  # method 3, own EDHOC
    assert figures["edhoc.token_bytes"]["baseline_name"] == "oscore_profile_token_bytes"
    assert figures["edhoc.rs_protected_get_rps"]["baseline_name"] == "bare_aiocoap_oscore_rps"
