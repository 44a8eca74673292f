"""The bundle formats (``keybound.tools.bundles``): what the AS writes reads back as
written, old files still load, and every unusable file is one :class:`BundleError` line."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import pytest

from keybound.core.errors import DecodeError
from keybound.tools.bundles import (
    BUNDLE_VERSION,
    DEVICE_BUNDLE_KIND,
    MAX_BUNDLE,
    RS_BUNDLE_KIND,
    BundleError,
    DeviceBundle,
    RsBundle,
    write_bundle,
)
from keybound.tools.http import jwt_token_verifier_from_bundle
from keybound.tools.resource_server.daemon import ConfigError, load_bundle
from tests.helpers.authz import provision


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The RS and device bundles an AS writes (JSON)."""
    where = tmp_path_factory.mktemp("as")
    setup = provision(f"sqlite:///{where / 'as.db'}")
    setup["store"].close()
    return {"rs": setup["temp_bundle"], "device": setup["sensor_bundle"]}


def save(path: Path, data: object) -> Path:
    path.write_text(json.dumps(data))
    path.chmod(0o600)
    return path


def one_line(err: pytest.ExceptionInfo[BaseException]) -> str:
    assert isinstance(err.value, BundleError)
    assert "\n" not in str(err.value)
    return err.value.description


# ---- round trips -------------------------------------------------------------------------------


def test_rs_bundle_round_trip(written: dict[str, Any], tmp_path: Path) -> None:
    path = save(tmp_path / "rs.json", written["rs"])
    bundle = RsBundle.read(path)
    assert bundle.version == BUNDLE_VERSION
    assert bundle.name == "temp-rs"
    assert bundle.audience == "temp"
    assert bundle.token_key.is_symmetric
    assert bundle.as_public_key is not None
    assert not bundle.as_public_key.has_private
    assert bundle.introspection_context is not None
    assert bundle.introspection_secret == written["rs"]["introspection"]["http_secret"]
    assert bundle.to_json() == written["rs"]
    again = bundle.write(tmp_path / "again.json")
    assert stat.S_IMODE(again.stat().st_mode) == 0o600
    assert json.loads(again.read_text()) == written["rs"]


def test_device_bundle_round_trip(written: dict[str, Any], tmp_path: Path) -> None:
    path = save(tmp_path / "device.json", written["device"])
    bundle = DeviceBundle.read(path)
    assert bundle.client_id == "sensor-1"
    assert bundle.scope == "read"
    assert len(bundle.as_context.master_secret) == 16
    assert bundle.to_json() == written["device"]
    again = write_bundle(tmp_path / "sub" / "again.json", bundle)
    assert stat.S_IMODE(again.stat().st_mode) == 0o600
    assert json.loads(again.read_text()) == written["device"]
    assert not list((tmp_path / "sub").glob(".*.tmp"))  # the temporary file was renamed


def test_write_replaces_a_file_and_keeps_it_private(tmp_path: Path) -> None:
    path = tmp_path / "b.json"
    path.write_text("old")
    path.chmod(0o644)
    write_bundle(path, {"kind": RS_BUNDLE_KIND})
    assert json.loads(path.read_text()) == {"kind": RS_BUNDLE_KIND}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


# ---- versions ----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["rs", "device"])
def test_a_bundle_without_version_is_version_1(
    written: dict[str, Any], tmp_path: Path, kind: str
) -> None:
    """Bundles written before the version field existed still load."""
    old = {key: value for key, value in written[kind].items() if key != "version"}
    path = save(tmp_path / "old.json", old)
    reader = RsBundle if kind == "rs" else DeviceBundle
    bundle = reader.read(path)
    assert bundle.version == 1
    assert bundle.to_json() == written[kind]  # written again, it says so


def test_the_daemon_loads_a_bundle_without_version(written: dict[str, Any], tmp_path: Path) -> None:
    old = {key: value for key, value in written["rs"].items() if key != "version"}
    assert load_bundle(save(tmp_path / "old.json", old)).audience == "temp"


@pytest.mark.parametrize("kind", ["rs", "device"])
def test_a_newer_version_is_refused(written: dict[str, Any], tmp_path: Path, kind: str) -> None:
    path = save(tmp_path / "new.json", {**written[kind], "version": BUNDLE_VERSION + 1})
    reader = RsBundle if kind == "rs" else DeviceBundle
    with pytest.raises(BundleError) as err:
        reader.read(path)
    message = one_line(err)
    assert message.startswith("bundle new.json: unsupported version 2: ")
    assert "reads bundles up to version 1" in message


@pytest.mark.parametrize("version", [0, "1", True, None, 1.0])
def test_a_malformed_version_is_refused(
    written: dict[str, Any], tmp_path: Path, version: object
) -> None:
    path = save(tmp_path / "bad.json", {**written["device"], "version": version})
    with pytest.raises(BundleError, match="unsupported version"):
        DeviceBundle.read(path)


# ---- refusals ----------------------------------------------------------------------------------


def test_an_rs_bundle_given_as_a_device_bundle_is_refused(
    written: dict[str, Any], tmp_path: Path
) -> None:
    path = save(tmp_path / "rs-bundle.json", written["rs"])
    with pytest.raises(BundleError) as err:
        DeviceBundle.read(path)
    assert one_line(err) == (
        f"bundle rs-bundle.json: not a {DEVICE_BUNDLE_KIND} file (it is a {RS_BUNDLE_KIND} file)"
    )


def test_a_device_bundle_given_as_an_rs_bundle_is_refused(
    written: dict[str, Any], tmp_path: Path
) -> None:
    path = save(tmp_path / "sensor-1.json", written["device"])
    with pytest.raises(BundleError) as err:
        RsBundle.read(path)
    assert one_line(err) == (
        f"bundle sensor-1.json: not a {RS_BUNDLE_KIND} file (it is a {DEVICE_BUNDLE_KIND} file)"
    )
    with pytest.raises(ConfigError, match=f"not a {RS_BUNDLE_KIND} file"):
        load_bundle(path)  # the daemon says the same, as its own error
    with pytest.raises(BundleError, match=f"not a {RS_BUNDLE_KIND} file"):
        jwt_token_verifier_from_bundle(written["device"])


@pytest.mark.parametrize("kind", ["rs", "device"])
def test_an_oversized_bundle_is_refused(written: dict[str, Any], tmp_path: Path, kind: str) -> None:
    padded = {**written[kind], "note": "x" * MAX_BUNDLE}
    path = save(tmp_path / "big.json", padded)
    reader = RsBundle if kind == "rs" else DeviceBundle
    with pytest.raises(BundleError) as err:
        reader.read(path)
    assert one_line(err) == f"the bundle {path} is larger than {MAX_BUNDLE} bytes"


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("{not json", "is not valid JSON"),
        ("[1, 2]", "not a JSON object"),
        ('{"kind": "something-else"}', "not a keybound-device-bundle file"),
        ("\xff", "is not valid JSON"),
    ],
)
def test_unusable_files_are_one_error(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "b.json"
    path.write_text(text, encoding="latin-1")
    with pytest.raises(BundleError) as err:
        DeviceBundle.read(path)
    assert needle in one_line(err)


def test_a_missing_file_is_a_bundle_error(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match=r"cannot read the bundle .*nothing\.json"):
        RsBundle.read(tmp_path / "nothing.json")


def test_a_readable_rs_bundle_is_refused_only_when_asked(
    written: dict[str, Any], tmp_path: Path
) -> None:
    path = save(tmp_path / "rs.json", written["rs"])
    path.chmod(0o644)
    assert RsBundle.read(path).audience == "temp"
    with pytest.raises(BundleError, match=r"must not be readable by others \(chmod 600\)"):
        RsBundle.read(path, private=True)


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        (lambda d: d.pop("as_context"), "as_context is missing"),
        (lambda d: d.pop("audience"), "audience is missing"),
        (lambda d: d.__setitem__("client_id", 7), "client_id must be a str"),
        (lambda d: d["as_context"].__setitem__("master_secret", "zz"), "as_context:"),
        (lambda d: d.__setitem__("period_s", 0), "period_s must be a positive integer"),
        (lambda d: d.__setitem__("wifi", "net"), "wifi must be an object"),
    ],
)
def test_device_fields_are_checked(written: dict[str, Any], change: Any, needle: str) -> None:
    data = json.loads(json.dumps(written["device"]))
    change(data)
    with pytest.raises(BundleError) as err:
        DeviceBundle.from_json(data)
    assert one_line(err).startswith("the device bundle: ")
    assert needle in err.value.description


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        (lambda d: d.pop("token_key"), "token_key is missing"),
        (lambda d: d.__setitem__("token_key", d["as_public_key"]), "symmetric (oct) key"),
        (lambda d: d.__setitem__("scopes", "read"), "scopes must be a list of strings"),
        (lambda d: d["introspection"].pop("uri"), "introspection must hold a uri"),
        (lambda d: d["introspection"]["oscore"].pop("sender_id"), "introspection.oscore:"),
    ],
)
def test_rs_fields_are_checked(written: dict[str, Any], change: Any, needle: str) -> None:
    data = json.loads(json.dumps(written["rs"]))
    change(data)
    with pytest.raises(BundleError) as err:
        RsBundle.from_json(data)
    assert needle in one_line(err)


def test_the_error_is_a_decode_error_and_a_value_error() -> None:
    """One type for every bundle problem, caught where the readers' errors were."""
    assert issubclass(BundleError, DecodeError)
    assert issubclass(BundleError, ValueError)
    assert str(BundleError("x")) == "invalid_request: x"
