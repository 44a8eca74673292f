"""``keybound token inspect`` and ``mint`` as a person runs them (the installed console script)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from keybound.core.keys import Key
from tests.helpers.paths import load_vectors
from tests.helpers.processes import run_keybound

VECTORS = load_vectors("rfc8392_appendix_a.json")
ECDSA = "A.2.3 Elliptic Curve Digital Signature Algorithm (ECDSA) P-256 256-Bit COSE Key"


def _write_keys(tmp_path: Path, a2_keys: dict[str, Key], names: list[str]) -> list[str]:
    args: list[str] = []
    for i, name in enumerate(names):
        key = a2_keys[name]
        path = tmp_path / f"key{i}"
        if key.is_symmetric:
            path.write_text(key.to_cose_key_bytes(include_private=True).hex())  # COSE_Key as hex
        else:
            path.write_text(json.dumps(key.public_key().to_jwk()))  # public JWK
        args += ["--key", str(path)]
    return args


def test_version() -> None:
    proc = run_keybound("--version")
    assert proc.returncode == 0
    assert proc.stdout.startswith("keybound ")


@pytest.mark.parametrize(
    "example", VECTORS["tokens"], ids=[t["section"] for t in VECTORS["tokens"]]
)
def test_inspect_rfc8392_examples_with_key(
    example: dict[str, object], a2_keys: dict[str, Key], tmp_path: Path
) -> None:
    keys = _write_keys(tmp_path, a2_keys, list(example["keys"]))  # type: ignore[arg-type]
    proc = run_keybound("token", "inspect", str(example["hex"]), *keys, "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["format"] == "cwt"
    assert out["verified"] is True
    layers = example["layers"]
    assert isinstance(layers, list)
    assert out["alg"] == layers[-1][1]
    if "iat" not in example:
        assert out["claims"]["iss"] == "coap://as.example.com"
        assert out["claims"]["cti"] == "0b71"
        assert out["claims"]["aud"] == "coap://light.example.com"
    assert out["diagnostic"].startswith(("16(", "17(", "18(", "61("))


def test_inspect_without_key_is_unverified() -> None:
    a3 = VECTORS["tokens"][0]["hex"]
    proc = run_keybound("token", "inspect", a3, "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["verified"] is False
    assert out["alg"] == "ES256"
    assert out["kid"] == "AsymmetricECDSA256"
    assert out["claims"]["sub"] == "erikw"
    encrypted = run_keybound("token", "inspect", VECTORS["tokens"][2]["hex"], "--json")
    assert json.loads(encrypted.stdout)["claims"] is None


def test_inspect_human_output_and_file_argument(tmp_path: Path) -> None:
    token_file = tmp_path / "token.hex"
    token_file.write_text(VECTORS["tokens"][1]["hex"] + "\n")
    proc = run_keybound("token", "inspect", f"@{token_file}")
    assert proc.returncode == 0, proc.stderr
    assert "MAC0" in proc.stdout
    assert "not verified" in proc.stdout
    assert "erikw" in proc.stdout
    assert "CBOR diagnostic notation" in proc.stdout


def test_inspect_wrong_key_fails_cleanly(tmp_path: Path) -> None:
    other = tmp_path / "other.json"
    other.write_text(json.dumps(Key.generate_ec2(kid=b"AsymmetricECDSA256").public_key().to_jwk()))
    proc = run_keybound("token", "inspect", VECTORS["tokens"][0]["hex"], "--key", str(other))
    assert proc.returncode == 2
    assert "invalid_token" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("bad", ["zz-not-a-token!", "d284", "@/nonexistent/file", ""])
def test_bad_input_exits_2_with_one_line(bad: str) -> None:
    proc = run_keybound("token", "inspect", bad)
    assert proc.returncode == 2, proc.stdout
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("fmt", ["cwt", "jwt"])
def test_mint_then_inspect(tmp_path: Path, fmt: str) -> None:
    key_path = tmp_path / "as.jwk"
    gen = run_keybound("key", "generate", str(key_path), "--type", "p256", "--kid", "as-1")
    assert gen.returncode == 0, gen.stderr
    assert key_path.stat().st_mode & 0o777 == 0o600
    pop = Key.generate_ec2()
    claims = tmp_path / "claims.json"
    claims.write_text(
        json.dumps(
            {
                "iss": "coap://as.example",
                "aud": "coap://rs.example",
                "scope": "temp.read",
                "cti": "0b71",
                "cnf": {"jwk": pop.public_key().to_jwk()},
            }
        )
    )
    minted = run_keybound(
        "token", "mint", "--claims", str(claims), "--key", str(key_path), "--format", fmt,
        "--lifetime", "600",
    )  # fmt: skip
    assert minted.returncode == 0, minted.stderr
    token = minted.stdout.strip()
    proc = run_keybound("token", "inspect", token, "--key", str(key_path), "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["format"] == fmt
    assert out["verified"] is True
    assert out["alg"] == "ES256"
    assert out["claims"]["scope"] == "temp.read"
    assert out["claims"]["cti"] == "0b71"
    assert out["claims"]["exp"] - out["claims"]["iat"] == 600
    assert out["claims"]["cnf"]["jkt"] == pop.jwk_thumbprint()
