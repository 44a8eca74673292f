"""Every failure is one line on stderr, ``keybound: <what>: <why>``, with its exit code.

A table of bad invocations runs the installed ``keybound`` as a subprocess each:
no traceback, no Python type names or reprs, the named cause and the exit code
(2 for bad input, 3 for a peer that cannot be reached or a port that is taken).
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers.paths import BIN
from tests.helpers.ports import free_port, free_udp_port
from tests.helpers.processes import run_keybound, start_server

STYLE = re.compile(r"^keybound: \S.*$")
PYTHON_NOISE = re.compile(
    r"Traceback|Error:|Exception|\[\'|fromhex|None is not|KeyError|ValueError|OSError"
)


@dataclass(frozen=True)
class Case:
    name: str
    args: Callable[[Path, dict[str, str]], list[str]]
    code: int
    says: str  # a fragment the one line must hold


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """An AS database with one RS and one client; a running AS; a busy TCP port."""
    root = tmp_path_factory.mktemp("errors")
    db = f"sqlite:///{root / 'as.db'}"
    as_port, rs_port = free_udp_port(), free_udp_port()
    as_base = f"coap://127.0.0.1:{as_port}"
    rs_uri = f"coap://127.0.0.1:{rs_port}"
    for args in (
        ["as", "init", "--db", db, "--issuer", as_base],
        ["as", "rs", "add", "temp-rs", "--db", db, "--audience", rs_uri, "--scope", "temp.read",
         "--out", str(root / "rs-bundle.json"), "--as-base", as_base],
        ["as", "client", "add", "sensor-1", "--db", db, "--audience", rs_uri, "--scope",
         "temp.read", "--out", str(root), "--rs-uri", rs_uri, "--as-base", as_base],
    ):  # fmt: skip
        assert run_keybound(*args).returncode == 0, args
    # a bundle whose AS is not there (nothing listens on its port)
    bundle = json.loads((root / "sensor-1.json").read_text())
    dead_as = free_udp_port()
    text = json.dumps(bundle).replace(f"127.0.0.1:{as_port}", f"127.0.0.1:{dead_as}")
    (root / "no-as.json").write_text(text)
    (root / "no-as.json").chmod(0o600)
    assert run_keybound("key", "generate", str(root / "key.jwk")).returncode == 0
    server = start_server(
        ["as", "serve", "--db", db, "--coap", f"127.0.0.1:{as_port}", "--state-dir",
         str(root / "as-state")], root / "as.log",
    )  # fmt: skip
    busy = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    busy.bind(("127.0.0.1", free_port(socket.SOCK_STREAM)))
    busy.listen()
    try:
        yield {
            "root": str(root),
            "db": db,
            "rs_uri": rs_uri,
            "dead_as": str(dead_as),
            "busy_tcp": str(busy.getsockname()[1]),
        }
    finally:
        busy.close()
        server.terminate()
        server.wait(20)


def _rs_toml(root: Path, body: str) -> str:
    path = root / f"rs-{abs(hash(body))}.toml"
    path.write_text(body)
    return str(path)


CASES = [
    Case(
        "client get: the RS is not there",
        lambda r, w: [
            "client",
            "get",
            f"{w['rs_uri']}/temp",
            "--bundle",
            str(r / "sensor-1.json"),
            "--state",
            str(r / "cs1"),
        ],
        3,
        "the RS at coap://127.0.0.1:",
    ),
    Case(
        "client get: the AS is unreachable",
        lambda r, w: [
            "client",
            "get",
            f"{w['rs_uri']}/temp",
            "--bundle",
            str(r / "no-as.json"),
            "--state",
            str(r / "cs2"),
        ],
        3,
        "the AS at coap://127.0.0.1:",
    ),
    Case(
        "as serve --http on a port in use",
        lambda r, w: [
            "as",
            "serve",
            "--db",
            w["db"],
            "--http",
            f"127.0.0.1:{w['busy_tcp']}",
            "--state-dir",
            str(r / "s2"),
        ],
        3,
        "the address is already in use",
    ),
    Case(
        "as serve --coap nonsense",
        lambda r, w: ["as", "serve", "--db", w["db"], "--coap", "nonsense:99999"],
        2,
        "not HOST:PORT",
    ),
    Case(
        "as serve --coap a host that does not resolve",
        lambda r, w: [
            "as",
            "serve",
            "--db",
            w["db"],
            "--coap",
            "nonsense.invalid",
            "--state-dir",
            str(r / "s3"),
        ],
        2,
        "cannot listen on coap://nonsense.invalid:5683",
    ),
    Case(
        "a client added twice",
        lambda r, w: [
            "as",
            "client",
            "add",
            "sensor-1",
            "--db",
            w["db"],
            "--audience",
            w["rs_uri"],
            "--scope",
            "temp.read",
            "--out",
            str(r / "again"),
        ],
        2,
        "clients exist already: sensor-1",
    ),
    Case(
        "as revoke with a cti that is not hex",
        lambda r, w: ["as", "revoke", "zz", "--db", w["db"]],
        2,
        "not a hexadecimal string",
    ),
    Case(
        "a device bundle passed as a key",
        lambda r, w: ["token", "inspect", "--key", str(r / "sensor-1.json"), "a1"],
        2,
        "this is a keybound-device-bundle file, not a key",
    ),
    Case(
        "key generate over an existing key",
        lambda r, w: ["key", "generate", str(r / "key.jwk")],
        2,
        "exists already; refusing to replace it (use --force)",
    ),
    Case(
        "a read-only command on a database that does not exist",
        lambda r, w: ["as", "list", "--db", str(r / "notaurl")],
        2,
        "no AS database at",
    ),
    Case(
        "as init in a directory that does not exist",
        lambda r, w: ["as", "init", "--db", f"sqlite:///{r / 'no' / 'dir' / 'x.db'}"],
        2,
        "does not exist",
    ),
    Case(
        "rs.toml with a misspelt key",
        lambda r, w: ["rs", "serve", "--config", _rs_toml(r, 'listn = "127.0.0.1:1"\n')],
        2,
        "unknown key 'listn' (did you mean 'listen'?)",
    ),
    Case(
        "a missing option",
        lambda r, w: ["rs", "serve"],
        2,
        "rs serve: Missing option '--config'",
    ),
    Case(
        "a bad --log-level",
        lambda r, w: ["rs", "serve", "--config", "x.toml", "--log-level", "loud"],
        2,
        "--log-level: 'loud' is not one of",
    ),
    Case(
        "an unknown COSE algorithm",
        lambda r, w: [
            "token",
            "mint",
            "--claims",
            str(r / "key.jwk"),
            "--key",
            str(r / "key.jwk"),
            "--alg",
            "NOPE",
        ],
        2,
        "--alg: unknown COSE algorithm 'NOPE'",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_one_line_never_a_traceback(case: Case, world: dict[str, str]) -> None:
    root = Path(world["root"])
    result = run_keybound(*case.args(root, world), cwd=root)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert STYLE.match(lines[0]), lines[0]
    assert not PYTHON_NOISE.search(lines[0]), lines[0]
    assert case.says in lines[0], lines[0]
    assert result.returncode == case.code, (result.returncode, lines[0])


def test_read_only_commands_create_nothing(tmp_path: Path) -> None:
    result = run_keybound("as", "list", "--db", "notaurl", cwd=tmp_path)
    assert result.returncode == 2
    result = run_keybound("as", "show", "x", "--db", f"sqlite:///{tmp_path / 'a.db'}")
    assert result.returncode == 2
    assert list(tmp_path.iterdir()) == []


def test_init_creates_no_directory_tree(tmp_path: Path) -> None:
    result = run_keybound("as", "init", "--db", f"sqlite:///{tmp_path / 'a' / 'b' / 'x.db'}")
    assert result.returncode == 2
    assert result.stderr == (
        f"keybound: cannot create the database {tmp_path / 'a' / 'b' / 'x.db'}: "
        f"the directory {tmp_path / 'a' / 'b'} does not exist\n"
    )
    assert list(tmp_path.iterdir()) == []


def test_key_generate_keeps_an_existing_key_unless_forced(tmp_path: Path) -> None:
    key = tmp_path / "as.jwk"
    assert run_keybound("key", "generate", str(key)).returncode == 0
    before = key.read_bytes()
    assert run_keybound("key", "generate", str(key)).returncode == 2
    assert key.read_bytes() == before
    assert run_keybound("key", "generate", str(key), "--force").returncode == 0
    assert key.read_bytes() != before


def test_postgres_without_its_driver_names_the_extra(tmp_path: Path) -> None:
    """psycopg is an extra: without it, say which one to install."""
    script = (
        "import sys; sys.modules['psycopg'] = None\n"
        "from keybound.tools.cli.app import main\n"
        "main(['as', 'list', '--db', 'postgresql+psycopg://u@127.0.0.1:1/x'])\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 2
    assert result.stderr == (
        "keybound: postgresql needs the psycopg driver: install keybound[postgres]\n"
    )


def test_output_to_a_pipe_is_not_wrapped(tmp_path: Path) -> None:
    """Rich must not wrap at 80 columns when stdout is not a terminal (no COLUMNS set)."""
    key = tmp_path / ("k" * 120 + ".jwk")
    result = subprocess.run(
        [str(BIN / "keybound"), "key", "generate", str(key)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 1
    assert str(key) in lines[0]
