"""``keybound bench``: the JSON report, the stable figure names, and exact sizes.

The command runs once, as a user would (``--quick --json --only size codec
dpop``); the size figures are then checked against encodings made here with
other libraries (python-cwt's COSE layer, joserfc, cbor2, the option layout of
RFC 8613). Timings are never asserted, only that they are positive and that
every ratio is value / baseline.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import cbor2
import pytest
from cwt import COSE, COSEKey
from joserfc import jws

from keybound.core import jwt
from keybound.core.keys import Key
from keybound.tools.bench import fixtures as fx
from keybound.tools.bench import run as bench
from keybound.tools.bench.measure import (
    Figure,
    Group,
    Measurement,
    Paired,
    Timer,
    busy_reason,
)
from tests.helpers.require import require

GROUPS = ("size", "codec", "dpop", "httpsig")
#: The stable names of the groups run here; renaming one breaks users' dashboards.
EXPECTED = {
    "size": [
        "size.cwt_sign1_es256",
        "size.cwt_mac0",
        "size.cwt_encrypt0_osc",
        "size.cwt_encrypt0_rfc9203",
        "size.jwt_es256",
        "size.jwt_hs256",
        "size.cwt_over_jwt",
        "size.authz_info_request",
        "size.authz_info_response",
        "size.oscore_get",
    ],
    "codec": [
        "codec.cwt_sign.keybound",
        "codec.cwt_sign.python_cwt",
        "codec.cwt_sign.pycose",
        "codec.cwt_verify.keybound",
        "codec.cwt_verify.python_cwt",
        "codec.cwt_verify.pycose",
        "codec.jwt_sign.keybound",
        "codec.jwt_sign.joserfc",
        "codec.jwt_verify.keybound",
        "codec.jwt_verify.joserfc",
        "codec.floor.sign",
        "codec.floor.verify",
        "codec.floor.jwt_sign",
        "codec.floor.jwt_verify",
    ],
    "dpop": ["dpop.verify", "dpop.create"],
    "httpsig": ["httpsig.verify", "httpsig.sign"],
}
FIGURE_KEYS = {
    "name", "value", "unit", "baseline", "baseline_name", "ratio", "ratio_min", "ratio_max",
    "rounds", "clock", "min", "max", "load", "cpu_share", "waits", "busy",
}  # fmt: skip
CLOCKS = {"thread_cpu", "process_cpu", "wall", "exact"}


def check_figure(f: dict[str, Any]) -> None:
    """The shape every figure has, whatever the machine: never a timing."""
    name = f["name"]
    assert set(f) == FIGURE_KEYS, name
    assert f["value"] > 0, name
    assert f["baseline"] > 0, name
    assert f["min"] <= f["value"] <= f["max"], name
    assert f["baseline_name"], name
    assert f["clock"] in CLOCKS, name
    assert f["rounds"] >= 1, name
    assert f["ratio_min"] <= f["ratio"] <= f["ratio_max"], name
    if f["clock"] == "exact" or f["rounds"] == 1:
        # a count, or a figure and a baseline taken apart: the ratio is value / baseline
        assert f["ratio"] == pytest.approx(f["value"] / f["baseline"], rel=1e-12), name
        assert f["ratio_min"] == f["ratio_max"] == f["ratio"], name
    else:
        # paired rounds: the median of the same-round ratios
        assert f["rounds"] >= 3, name
    if f["clock"] == "exact":
        assert f["busy"] is None, name
    else:
        assert f["load"] is None or f["load"] >= 0, name
        assert f["busy"] is None or isinstance(f["busy"], str), name
    if f["clock"] in ("thread_cpu", "process_cpu"):
        assert f["cpu_share"] is not None, name
        assert f["cpu_share"] > 0, name


#: The groups with servers on loopback and the MicroPython unix port, run once more on their own.
LOOPBACK_GROUPS = ("as", "oscore", "firmware")
LOOPBACK_EXPECTED = {
    "as": [
        "as.issue_es256_req_cnf",
        "as.issue_osc",
        "as.issue_osc_no_clock",
        "as.issue_durable_over_stubbed",
        "as.issue_durable_over_stubbed_concurrent",
        "as.issue_no_clock_durable_over_stubbed",
        "as.issue_no_clock_durable_over_stubbed_concurrent",
        "as.floor",
        "as.coap_token_rps",
        "as.startup_10000_clients",
        "as.startup_100000_clients",
    ],
    "oscore": [
        "oscore.rs_protected_get_rps",
        "oscore.bare_aiocoap_oscore_rps",
        "oscore.rs_get_rps_10000_contexts",
        "oscore.rs_p99_200_clients_10000_contexts",
    ],
    "firmware": [
        "firmware.flow_ms",
        "firmware.oscore_request_ms",
        "firmware.peak_heap_bytes",
        "firmware.heap_floor_bytes",
        "firmware.edhoc_heap_floor_bytes",
        "firmware.mpy_bytes",
        "firmware.edhoc_handshake_ms",
        "firmware.p256_mul_ms",
        "firmware.edhoc_mpy_bytes",
    ],
}
LOOPBACK_UNITS = {
    "as": {"tokens/s", "requests/s"},
    "oscore": {"requests/s", "ms"},
    "firmware": {"ms", "bytes"},
}
MICROPYTHON = Path(sys.executable).parent / "micropython"


def bench_argv() -> list[str]:
    """``keybound bench`` once the command is registered, else the module itself."""
    script = Path(sys.executable).parent / "keybound"
    if script.exists():
        probe = subprocess.run(
            [str(script), "bench", "--help"], capture_output=True, text=True, check=False
        )
        if probe.returncode == 0:
            return [str(script), "bench"]
    return [sys.executable, "-m", "keybound.tools.cli.bench_commands"]


@pytest.fixture(scope="module")
def report() -> dict[str, Any]:
    done = subprocess.run(
        [*bench_argv(), "--quick", "--json", "--only", *GROUPS],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    parsed: dict[str, Any] = json.loads(done.stdout)
    return parsed


@pytest.fixture(scope="module")
def figures(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f["name"]: f for f in report["figures"]}


# ---- the report ---------------------------------------------------------------------------


def test_machine_block(report: dict[str, Any]) -> None:
    machine = report["machine"]
    for entry in ("python", "platform", "cpu_model", "openssl"):
        assert machine[entry], entry
    assert isinstance(machine["cpu_count"], int)
    assert machine["cpu_count"] >= 1
    for library in ("keybound", "cbor2", "cryptography", "joserfc", "aiocoap"):
        assert machine["libraries"][library], library


def test_every_figure_of_the_requested_groups_is_present(report: dict[str, Any]) -> None:
    names = [f["name"] for f in report["figures"]]
    assert names == [name for group in GROUPS for name in EXPECTED[group]]
    assert "skipped" not in report  # the development environment has every peer


def test_figures_are_positive_and_ratios_are_same_round_medians(
    report: dict[str, Any],
) -> None:
    for f in report["figures"]:
        check_figure(f)
        assert f["unit"] in ("bytes", "µs"), f["name"]
        if f["unit"] == "µs":
            assert f["clock"] == "thread_cpu", f["name"]
        else:
            assert f["clock"] == "exact", f["name"]


def test_the_load_average_is_recorded(report: dict[str, Any]) -> None:
    load = report["load_average"]
    for moment in ("start", "end"):
        assert len(load[moment]) == 3
        assert all(value >= 0 for value in load[moment])


def test_ratios_read_against_floors_and_keybound(figures: dict[str, dict[str, Any]]) -> None:
    for op in ("cwt_sign", "cwt_verify"):
        assert figures[f"codec.{op}.keybound"]["baseline_name"].startswith("codec.floor.")
        for peer in ("python_cwt", "pycose"):
            # keybound is timed again in the peer's own rounds, so only the name is shared
            assert figures[f"codec.{op}.{peer}"]["baseline_name"] == f"codec.{op}.keybound"
    assert figures["codec.floor.verify"]["baseline_name"] == "ecdsa_p256.verify"
    assert figures["dpop.verify"]["baseline_name"] == "es256.verify"
    assert figures["httpsig.verify"]["baseline_name"] == "hmac_sha256"
    assert figures["codec.jwt_sign.joserfc"]["baseline_name"] == "codec.jwt_sign.keybound"
    assert figures["size.cwt_over_jwt"]["baseline"] == figures["size.jwt_es256"]["value"]


# ---- the loopback groups: AS, OSCORE, firmware ---------------------------------------------


@pytest.fixture(scope="module")
def loopback_report() -> dict[str, Any]:
    done = subprocess.run(
        [*bench_argv(), "--quick", "--json", "--only", *LOOPBACK_GROUPS],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    parsed: dict[str, Any] = json.loads(done.stdout)
    return parsed


@pytest.fixture(scope="module")
def loopback(loopback_report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f["name"]: f for f in loopback_report["figures"]}


def test_loopback_groups_are_measured_not_pending(loopback_report: dict[str, Any]) -> None:
    assert "pending" not in loopback_report
    measured = [f["name"] for f in loopback_report["figures"]]
    skipped = [s["name"] for s in loopback_report.get("skipped", [])]
    expected = [name for group in LOOPBACK_GROUPS for name in LOOPBACK_EXPECTED[group]]
    assert sorted(measured + skipped) == sorted(expected)
    assert measured == [name for name in expected if name not in skipped]
    # provisioning 10,000 and 100,000 clients is for full runs only
    quick_only = ["as.startup_10000_clients", "as.startup_100000_clients"]
    if MICROPYTHON.exists():
        assert skipped == quick_only
    else:
        assert skipped == quick_only + LOOPBACK_EXPECTED["firmware"]


def test_loopback_figures_are_positive_and_ratios_are_same_round_medians(
    loopback_report: dict[str, Any],
) -> None:
    for f in loopback_report["figures"]:
        group = f["name"].split(".", 1)[0]
        check_figure(f)
        assert f["unit"] in LOOPBACK_UNITS[group], f["name"]


def test_loopback_baselines_are_named(loopback: dict[str, dict[str, Any]]) -> None:
    for name in ("as.issue_es256_req_cnf", "as.issue_osc", "as.issue_osc_no_clock"):
        assert loopback[name]["baseline_name"] == "as.floor"
    assert loopback["as.floor"]["baseline_name"] == "ecdsa_p256.sign"
    assert loopback["as.issue_durable_over_stubbed"]["baseline_name"] == "as.issue_osc_stubbed"
    for name, baseline in (
        ("as.issue_durable_over_stubbed_concurrent", "as.issue_osc_stubbed_concurrent"),
        ("as.issue_no_clock_durable_over_stubbed", "as.issue_osc_no_clock_stubbed"),
        (
            "as.issue_no_clock_durable_over_stubbed_concurrent",
            "as.issue_osc_no_clock_stubbed_concurrent",
        ),
    ):
        assert loopback[name]["baseline_name"] == baseline
        assert loopback[name]["unit"] == "tokens/s"
    # the AS answers over OSCORE: its baseline is a bare aiocoap OSCORE resource
    assert loopback["as.coap_token_rps"]["baseline_name"] == "as.coap_bare_oscore_rps"
    rs = loopback["oscore.rs_protected_get_rps"]
    assert rs["baseline_name"] == "oscore.bare_aiocoap_oscore_rps"
    assert loopback["oscore.bare_aiocoap_oscore_rps"]["baseline_name"] == "oscore.plain_get_rps"
    crowded = loopback["oscore.rs_get_rps_10000_contexts"]
    assert crowded["baseline_name"] == "oscore.rs_get_rps_few_contexts"
    latency = loopback["oscore.rs_p99_200_clients_10000_contexts"]
    assert latency["baseline_name"] == "oscore.rs_p99_200_clients_200_contexts"
    assert latency["clock"] == "wall"
    assert latency["rounds"] >= 5
    for f in loopback.values():
        if f["unit"] in ("tokens/s", "requests/s"):
            assert f["clock"] in ("thread_cpu", "process_cpu"), f["name"]
            assert f["rounds"] >= 5, f["name"]


def test_firmware_figures(loopback: dict[str, dict[str, Any]]) -> None:
    require(MICROPYTHON.exists(), f"the MicroPython unix port is not installed ({MICROPYTHON})")
    request = loopback["firmware.oscore_request_ms"]
    assert request["baseline_name"] == "firmware.plain_get_ms"
    flow = loopback["firmware.flow_ms"]
    assert flow["baseline_name"] == "3 x firmware.plain_get_ms"
    assert flow["baseline"] == pytest.approx(3 * request["baseline"], rel=1e-12)
    bytes_figures = ("peak_heap_bytes", "heap_floor_bytes", "mpy_bytes", "edhoc_mpy_bytes")
    for name in (f"firmware.{figure}" for figure in bytes_figures):
        f = loopback[name]
        assert f["unit"] == "bytes"
        assert f["min"] == f["max"] == f["value"]
        assert float(f["value"]).is_integer()
        assert float(f["baseline"]).is_integer()
    assert loopback["firmware.mpy_bytes"]["baseline_name"] == "firmware.source_bytes"
    floor = loopback["firmware.heap_floor_bytes"]
    assert floor["baseline_name"] == "firmware.heap_goal_bytes"
    assert floor["baseline"] == 40 * 1024
    assert floor["value"] % 256 == 0
    # EDHOC: the Initiator on the device against core's, one ECDH against cryptography's,
    # in paired rounds on wall clocks; the EDHOC modules against the others.
    handshake = loopback["firmware.edhoc_handshake_ms"]
    assert handshake["baseline_name"] == "firmware.cpython_edhoc_handshake_ms"
    mul = loopback["firmware.p256_mul_ms"]
    assert mul["baseline_name"] == "firmware.cpython_ecdh_ms"
    for f in (handshake, mul):
        assert f["unit"] == "ms"
        assert f["clock"] == "wall"
        assert f["rounds"] >= 5
        assert f["ratio_min"] <= f["ratio"] <= f["ratio_max"]
    edhoc = loopback["firmware.edhoc_mpy_bytes"]
    assert edhoc["baseline_name"] == "firmware.oscore_profile_mpy_bytes"
    mpy = loopback["firmware.mpy_bytes"]["value"]
    assert edhoc["value"] + edhoc["baseline"] == mpy


# ---- sizes, encoded here on their own -------------------------------------------------------


def _cose_key(key: Key, alg: int) -> Any:
    mapping = key.to_cose_key(include_private=True)
    mapping[3] = alg
    return COSEKey.new(mapping)


def _size(figures: dict[str, dict[str, Any]], name: str) -> int:
    f = figures[name]
    assert f["unit"] == "bytes"
    assert f["min"] == f["max"] == f["value"]
    assert float(f["value"]).is_integer()
    return int(f["value"])


#: RFC 9203 §3.2, "Example CWT Claims Set with OSCORE Parameters Using CBOR Encoding"
#: (tests/vectors/rfc9203_oscore_input_material.json): the RFC's claim order, the same length.
_RFC9203_CLAIMS_HEX = (
    "a5037674656d7053656e736f72496e4c6976696e67526f6f6d061a5112d728041a51145dc809781874656d"
    "70657261747572655f67206669726d776172655f7008a104a20041010250f9af838368e353e78888e1426bd9"
    "4e6f"
)


def test_cwt_sizes_match_python_cwt(figures: dict[str, dict[str, Any]]) -> None:
    keys = fx.Keys.generate()
    claims = cbor2.dumps(keys.key_token().to_cwt_claims())
    osc_claims = cbor2.dumps(keys.osc_token().to_cwt_claims())
    cose = COSE.new()
    sign1 = cose.encode(
        claims,
        _cose_key(keys.as_signing, -7),
        protected={1: -7},
        unprotected={4: fx.AS_SIGNING_KID},
    )
    mac0 = cose.encode(
        claims, _cose_key(keys.as_rs_mac, 4), protected={1: 4}, unprotected={4: fx.AS_RS_KID}
    )
    rs_key = _cose_key(keys.as_rs, 10)
    unprotected = {4: fx.AS_RS_KID, 5: bytes(13)}
    encrypt0 = cose.encode(osc_claims, rs_key, protected={1: 10}, unprotected=unprotected)
    assert _size(figures, "size.cwt_sign1_es256") == len(sign1)
    assert _size(figures, "size.cwt_mac0") == len(mac0)
    assert _size(figures, "size.cwt_encrypt0_osc") == len(encrypt0)
    rfc9203_claims = bytes.fromhex(_RFC9203_CLAIMS_HEX)
    rfc9203 = cose.encode(rfc9203_claims, rs_key, protected={1: 10}, unprotected=unprotected)
    assert _size(figures, "size.cwt_encrypt0_rfc9203") == len(rfc9203)
    assert figures["size.cwt_encrypt0_rfc9203"]["baseline"] == len(rfc9203_claims)
    assert figures["size.cwt_sign1_es256"]["baseline"] == len(claims)
    request = cbor2.dumps({1: encrypt0, 40: fx.NONCE1, 43: fx.CLIENT_ID})
    assert _size(figures, "size.authz_info_request") == len(request)
    response = cbor2.dumps({42: fx.NONCE2, 44: fx.SERVER_ID})
    assert _size(figures, "size.authz_info_response") == len(response)


def test_jwt_sizes_match_joserfc(figures: dict[str, dict[str, Any]]) -> None:
    keys = fx.Keys.generate()
    claims = json.dumps(keys.key_token().to_jwt_claims(), separators=(",", ":"), sort_keys=True)
    for name, key, alg, kid in (
        ("size.jwt_es256", keys.as_signing, "ES256", fx.AS_SIGNING_KID),
        ("size.jwt_hs256", keys.as_rs_mac, "HS256", fx.AS_RS_KID),
    ):
        header = {"alg": alg, "typ": "at+jwt", "kid": kid.decode()}
        compact = jws.serialize_compact(header, claims, jwt.to_jose_key(key), algorithms=[alg])
        assert _size(figures, name) == len(compact), name
        assert figures[name]["baseline"] == len(claims)


def test_oscore_get_size_follows_rfc8613(figures: dict[str, dict[str, Any]]) -> None:
    """GET /temp, first request of the context: Partial IV 0, kid = ID2, no ID Context.

    Plain: 4-byte header, token, Uri-Path option (1-byte head + "temp").
    OSCORE (RFC 8613 §4, §5, §6.1): the Uri-Path moves inside; outside stay the
    header, the token and the OSCORE option (1-byte head + flag byte + Partial IV
    + kid), then the payload marker and the ciphertext of code + Uri-Path, plus
    the 8-byte tag of AES-CCM-16-64-128.
    """
    path = fx.COAP_PATH[0].encode()
    uri_path = 1 + len(path)
    plain = 4 + len(fx.COAP_TOKEN) + uri_path
    oscore_option = 1 + (1 + 1 + len(fx.SERVER_ID))
    protected = 4 + len(fx.COAP_TOKEN) + oscore_option + 1 + (1 + uri_path + 8)
    assert _size(figures, "size.oscore_get") == protected
    assert figures["size.oscore_get"]["baseline"] == plain


# ---- the command line -----------------------------------------------------------------------


@pytest.mark.skipif(
    importlib.util.find_spec("matplotlib") is not None, reason="matplotlib is installed"
)
def test_plot_without_matplotlib_says_what_to_install(tmp_path: Path) -> None:
    out = tmp_path / "bench.png"
    done = subprocess.run(
        [*bench_argv(), "--only", "size", "--plot", str(out)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2
    assert "pip install keybound[plot]" in done.stderr
    assert done.stdout == ""
    assert not out.exists()


def test_unknown_group_is_refused() -> None:
    done = subprocess.run(
        [*bench_argv(), "--only", "nonsense"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 2
    assert "unknown benchmark group nonsense" in done.stderr


# ---- the pieces -------------------------------------------------------------------------------


def test_timer_reports_a_median_within_its_range() -> None:
    measured = Timer(0.01).measure(lambda: sum(range(100)))
    assert 0 < measured.low <= measured.median <= measured.high


def test_figure_ratio_and_json() -> None:
    f = Figure.of("x.y", Measurement(3.0, 2.0, 4.0), "µs", Measurement.exact(2.0), "x.base")
    assert f.ratio == 1.5
    assert f.to_json() == {
        "name": "x.y",
        "value": 3.0,
        "unit": "µs",
        "baseline": 2.0,
        "baseline_name": "x.base",
        "ratio": 1.5,
        "ratio_min": 1.5,
        "ratio_max": 1.5,
        "rounds": 1,
        "clock": "wall",
        "min": 2.0,
        "max": 4.0,
        "load": None,
        "cpu_share": None,
        "waits": False,
        "busy": None,
    }
    with pytest.raises(ValueError, match="positive"):
        Figure.of("x.y", Measurement.exact(0.0), "µs", Measurement.exact(1.0), "x.base")


def test_a_paired_figure_takes_the_median_same_round_ratio() -> None:
    ratios = (1.0, 2.0, 4.0, 3.0, 100.0)
    pair = Paired(
        Measurement(10.0, 1.0, 50.0), Measurement(5.0, 1.0, 9.0), ratios, "thread_cpu", 0.99
    )
    f = Figure.paired("x.y", pair, "µs", "x.base")
    # not value / baseline (2.0): the rounds' own ratios decide
    assert (f.ratio, f.ratio_min, f.ratio_max, f.rounds) == (3.0, 1.0, 100.0, 5)
    assert f.clock == "thread_cpu"
    rate = pair.per_second()
    assert rate.ratios == tuple(1 / r for r in ratios)


def test_compare_alternates_rounds_and_keeps_to_its_calls() -> None:
    calls = {"fn": 0, "base": 0, "reset": 0}

    def fn() -> None:
        calls["fn"] += 1
        sum(range(200))

    def base() -> None:
        calls["base"] += 1
        sum(range(100))

    def reset() -> None:
        calls["reset"] += 1

    pair = Timer(0.02, rounds=5).compare(fn, base, max_calls=400, reset=(reset, None))
    assert len(pair.ratios) == 5
    assert calls["fn"] <= 400
    assert calls["base"] <= 400
    assert calls["reset"] == 6  # after the warm-up and after each of the 5 batches
    assert pair.clock == "thread_cpu"
    assert pair.cpu_share is not None
    assert pair.cpu_share > 0
    ratio = pair.ratio
    assert ratio.low <= ratio.median <= ratio.high


def test_busy_figures_say_why() -> None:
    quiet = Figure.paired(
        "x.y",
        Paired(Measurement.exact(2.0), Measurement.exact(1.0), (2.0,) * 7, "thread_cpu", 0.99),
        "µs",
        "x.base",
    )
    assert busy_reason(dataclasses.replace(quiet, load=0.5), 2) is None
    assert "load average 3.10 on 2 CPUs" in (
        busy_reason(dataclasses.replace(quiet, load=3.1), 2) or ""
    )
    assert "had the CPU 40% of the time" in (
        busy_reason(dataclasses.replace(quiet, cpu_share=0.4), 2) or ""
    )
    # work that waits for the disk has a low CPU share on a quiet machine too
    assert busy_reason(dataclasses.replace(quiet, cpu_share=0.4, waits=True), 2) is None
    spread = Paired(
        Measurement.exact(2.0),
        Measurement.exact(1.0),
        (1.0, 1.0, 2.0, 2.0, 3.0, 3.0),
        "thread_cpu",
        0.99,
    )
    assert "spread" in (busy_reason(Figure.paired("x.y", spread, "µs", "x.base"), 2) or "")
    sized = Figure.of("x.y", Measurement.exact(2.0), "bytes", Measurement.exact(1.0), "x.base")
    assert busy_reason(dataclasses.replace(sized, clock="exact", load=9.0), 2) is None


def test_every_group_is_measured() -> None:
    assert [g.name for g in bench.GROUPS if g.run is None] == []
    for group in bench.GROUPS:
        if group.name in LOOPBACK_EXPECTED:
            assert list(group.figures) == LOOPBACK_EXPECTED[group.name]


def test_a_rate_turns_its_range_over() -> None:
    rate = Measurement(4.0, 2.0, 5.0).per_second()
    assert rate == Measurement(250_000.0, 200_000.0, 500_000.0)


def test_a_group_is_measured_or_pending_and_names_its_figures() -> None:
    with pytest.raises(ValueError, match="either run or a pending reason"):
        Group(name="x", title="x", figures=())
    with pytest.raises(ValueError, match=r"must be named x\.\*"):
        Group(name="x", title="x", figures=("y.z",), pending="later")


def test_markdown_report_renders_a_saved_result(tmp_path: Path) -> None:
    from keybound.tools.cli.bench_commands import markdown_report

    saved = {
        "machine": {
            "cpu_count": 2, "cpu_model": "cpu", "python": "CPython 3.11", "openssl": "OpenSSL",
            "libraries": {"cbor2": "5.9.0"},
        },
        "figures": [
            {"name": "size.cwt_sign1_es256", "value": 231.0, "unit": "bytes", "baseline": 151.0,
             "baseline_name": "claims.cbor", "ratio": 231 / 151},
            {"name": "codec.cwt_sign.keybound", "value": 58.63, "unit": "µs", "baseline": 24.16,
             "baseline_name": "codec.floor.sign", "ratio": 58.63 / 24.16},
        ],
    }  # fmt: skip
    text = markdown_report(saved)
    assert "| `size.cwt_sign1_es256` | 231 | bytes | 151 | claims.cbor | 1.53 |  |" in text
    assert "| `codec.cwt_sign.keybound` | 58.63 | µs | 24.16 | codec.floor.sign | 2.43 |  |" in text
    assert text.startswith("Measured on 2 x cpu, CPython 3.11, OpenSSL; cbor2 5.9.0.")
    saved["load_average"] = {"start": [0.5, 0.4, 0.3], "end": [3.5, 1.0, 0.5]}
    saved["figures"].append(
        {"name": "dpop.verify", "value": 80.0, "unit": "µs", "baseline": 60.0,
         "baseline_name": "es256.verify", "ratio": 1.3, "ratio_min": 1.2, "ratio_max": 1.5,
         "rounds": 21, "busy": "load average 3.50 on 2 CPUs"}
    )  # fmt: skip
    text = markdown_report(saved)
    assert "Load average 0.50 0.40 0.30 at the start, 3.50 1.00 0.50 at the end." in text
    assert "| `dpop.verify` (busy) | 80 | µs | 60 | es256.verify | 1.30 | 1.20–1.50 |" in text
    assert "- `dpop.verify`: load average 3.50 on 2 CPUs" in text
