"""DPoP end to end over real HTTP (RFC 9449): the AS's token endpoint, a protected API, clients.

Everything listens on 127.0.0.1 in one background event loop: the AS
(:class:`RunningServer` with uvicorn) twice — one accepting proofs without a
nonce, one requiring server nonces (RFC 9449 §8) — and the Starlette API of
the README's DPoP section, loaded from the markdown and executed, once checking JWTs
with the RS bundle's AS key and once introspecting at the AS (RFC 7662).
Clients are httpx with :class:`DPoPAuth`, hand-made proofs, and
``keybound client http`` as a subprocess.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from joserfc.jwk import ECKey, OKPKey

from keybound.core import jwt
from keybound.core.dpop import jwk_thumbprint
from keybound.core.dpop_state import NonceIssuer
from keybound.core.dpop_token_endpoint import DPoPTokenEndpointPolicy
from keybound.core.keys import Key
from keybound.core.token import CnfJkt
from keybound.tools.authz_server.server import RunningServer
from keybound.tools.cli import client_commands as client_cli
from keybound.tools.http import DPoPAuth, InMemoryReplayCache, jwt_token_verifier_from_metadata
from tests.helpers.authz import ISSUER, provision
from tests.helpers.dpop import create_proof
from tests.helpers.paths import BIN, ROOT
from tests.helpers.pg import database_url
from tests.helpers.ports import free_port
from tests.helpers.processes import wait_for_log
from tests.http.running import BackgroundLoop, start_uvicorn, stop_uvicorn

T = TypeVar("T")

EXAMPLE = re.compile(r"<!-- dpop-example: ([\w-]+) -->\s*```python\n(.*?)```", re.DOTALL)


def documented_examples() -> dict[str, str]:
    """The Python examples of the README's DPoP section, by name."""
    found = dict(EXAMPLE.findall((ROOT / "README.md").read_text()))
    assert set(found) == {"client", "api", "api-introspection"}, sorted(found)
    return found


@dataclass
class World:
    setup: dict[str, Any]
    as_url: str
    nonce_as_url: str
    api_url: str
    introspecting_api_url: str
    bundle_path: Path
    client_id: str
    secret: str

    @property
    def token_url(self) -> str:
        return f"{self.as_url}/token"

    def basic(self) -> dict[str, str]:
        raw = f"{self.client_id}:{self.secret}".encode()
        return {"Authorization": "Basic " + base64.b64encode(raw).decode()}

    def token_form(self, **extra: str) -> dict[str, str]:
        return {"grant_type": "client_credentials", "audience": "temp", "scope": "read", **extra}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    where = tmp_path_factory.mktemp("dpop-flow")
    setup = provision(f"sqlite:///{where / 'as.db'}")
    store = setup["store"]
    bundle_path = where / "temp-rs.json"
    bundle_path.write_text(json.dumps(setup["temp_bundle"]))
    as_port, nonce_port, api_port, api2_port = (free_port(socket.SOCK_STREAM) for _ in range(4))
    as_url = f"http://127.0.0.1:{as_port}"
    api_url = f"http://127.0.0.1:{api_port}"
    api2_url = f"http://127.0.0.1:{api2_port}"

    examples = documented_examples()
    namespace: dict[str, Any] = {"__name__": "dpop_example"}
    with pytest.MonkeyPatch.context() as env:
        env.setenv("API_PUBLIC_URL", api_url)
        env.setenv("KEYBOUND_RS_BUNDLE", str(bundle_path))
        env.setenv("KEYBOUND_DPOP_REPLAY_DB", f"sqlite:///{where / 'dpop-replay.db'}")
        env.setenv("KEYBOUND_AS_URL", as_url)
        exec(compile(examples["api"], "README.md:api", "exec"), namespace)
        env.setenv("API_PUBLIC_URL", api2_url)  # the second example runs on its own port
        exec(
            compile(examples["api-introspection"], "README.md:api-introspection", "exec"), namespace
        )

    loop = BackgroundLoop()
    auth_server = RunningServer(store, http=("127.0.0.1", as_port), state_dir=where / "s1")
    nonce_server = RunningServer(
        store,
        http=("127.0.0.1", nonce_port),
        state_dir=where / "s2",
        dpop=DPoPTokenEndpointPolicy(
            nonce_issuer=NonceIssuer(os.urandom(32)), replay_cache=InMemoryReplayCache()
        ),
    )
    loop.run(auth_server.start())
    loop.run(nonce_server.start())
    api = loop.run(start_uvicorn(namespace["api"], api_port))
    api2 = loop.run(start_uvicorn(namespace["api_introspecting"], api2_port))
    try:
        yield World(
            setup=setup,
            as_url=as_url,
            nonce_as_url=f"http://127.0.0.1:{nonce_port}",
            api_url=api_url,
            introspecting_api_url=api2_url,
            bundle_path=bundle_path,
            client_id="web-1",
            secret=setup["web"].http_secret,
        )
    finally:
        loop.run(stop_uvicorn(*api))
        loop.run(stop_uvicorn(*api2))
        loop.run(auth_server.stop())
        loop.run(nonce_server.stop())
        loop.close()
        store.close()


def get_token(
    world: World, auth: DPoPAuth, *, as_url: str | None = None, scope: str = "read"
) -> str:
    with httpx.Client() as http:
        answer = http.post(
            f"{as_url or world.as_url}/token",
            data=world.token_form(scope=scope),
            headers=world.basic(),
            auth=auth,
        )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["token_type"] == "DPoP"
    assert "refresh_token" not in body  # the AS issues none (RFC 6749 §4.4.3)
    token = body["access_token"]
    assert isinstance(token, str)
    return str(token)


def challenge(response: httpx.Response) -> str:
    return str(response.headers.get("www-authenticate", ""))


# ---- the full flow ----------------------------------------------------------------------------


def test_dpop_bound_token_calls_the_protected_api(world: World) -> None:
    key = ECKey.generate_key("P-256")
    auth = DPoPAuth(key)
    token = get_token(world, auth)
    jkt = jwk_thumbprint(key.as_dict(private=False))

    decoded = jwt.decode(token, Key.from_jwk(world.setup["temp_bundle"]["as_public_key"]))
    assert decoded.header["typ"] == "at+jwt"
    assert decoded.token.cnf == CnfJkt(jkt)  # RFC 9449 §6.1
    assert decoded.token.iss == ISSUER

    auth.access_token = token
    response = httpx.get(f"{world.api_url}/whoami", auth=auth)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["jkt"] == jkt
    assert body["claims"]["cnf"] == {"jkt": jkt}
    assert body["claims"]["aud"] == "temp"
    assert body["claims"]["scope"] == "read"


def test_introspecting_api_accepts_the_token(world: World) -> None:
    auth = DPoPAuth(OKPKey.generate_key("Ed25519"), alg="EdDSA")
    auth.access_token = get_token(world, auth)
    response = httpx.get(f"{world.introspecting_api_url}/whoami", auth=auth)
    assert response.status_code == 200, response.text
    claims = response.json()["claims"]
    assert claims["active"] is True
    assert claims["token_type"] == "DPoP"  # RFC 9449 §6.2
    assert claims["client_id"] == "web-1"


def test_introspecting_api_refuses_a_token_it_cannot_confirm(world: World) -> None:
    auth = DPoPAuth(ECKey.generate_key("P-256"))
    token = get_token(world, auth)
    auth.access_token = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    response = httpx.get(f"{world.introspecting_api_url}/whoami", auth=auth)
    assert response.status_code == 401
    assert 'error="invalid_token"' in challenge(response)


def test_copied_token_with_another_key_is_refused(world: World) -> None:
    owner = DPoPAuth(ECKey.generate_key("P-256"))
    token = get_token(world, owner)
    thief = DPoPAuth(ECKey.generate_key("P-256"), access_token=token)
    response = httpx.get(f"{world.api_url}/whoami", auth=thief)
    assert response.status_code == 401
    assert 'error="invalid_token"' in challenge(response)
    assert "key binding" in challenge(response)


def test_token_presented_as_bearer_is_refused(world: World) -> None:
    token = get_token(world, DPoPAuth(ECKey.generate_key("P-256")))
    response = httpx.get(f"{world.api_url}/whoami", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401
    assert 'error="invalid_token"' in challenge(response)
    assert "Bearer" in response.json()["error_description"]


def test_token_without_the_required_scope_is_refused(world: World) -> None:
    auth = DPoPAuth(ECKey.generate_key("P-256"))
    auth.access_token = get_token(world, auth, scope="write")
    response = httpx.get(f"{world.api_url}/whoami", auth=auth)
    assert response.status_code == 403
    assert 'error="insufficient_scope"' in challenge(response)


def test_nonce_requiring_as_answers_use_dpop_nonce_and_dpopauth_retries(world: World) -> None:
    seen: list[int] = []
    auth = DPoPAuth(ECKey.generate_key("P-256"))
    with httpx.Client(event_hooks={"response": [lambda r: seen.append(r.status_code)]}) as http:
        answer = http.post(
            f"{world.nonce_as_url}/token",
            data=world.token_form(),
            headers=world.basic(),
            auth=auth,
        )
    assert answer.status_code == 200, answer.text
    assert answer.json()["token_type"] == "DPoP"
    assert seen == [400, 200]  # one use_dpop_nonce, one retry (RFC 9449 §8)
    assert auth.nonce_for(world.nonce_as_url) is not None
    auth.access_token = answer.json()["access_token"]
    assert httpx.get(f"{world.api_url}/whoami", auth=auth).status_code == 200


def test_nonce_requiring_as_refuses_missing_and_stale_nonces(world: World) -> None:
    key = ECKey.generate_key("P-256")
    url = f"{world.nonce_as_url}/token"
    now = int(time.time())
    for nonce in (None, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"):
        proof = create_proof(key, "POST", url, now=now, nonce=nonce)
        answer = httpx.post(url, data=world.token_form(), headers={**world.basic(), "DPoP": proof})
        assert answer.status_code == 400
        assert answer.json()["error"] == "use_dpop_nonce"
        assert answer.headers["dpop-nonce"]
        assert answer.headers["cache-control"] == "no-store"


# ---- refusals at the token endpoint (RFC 9449 §4.3, §5, §10) --------------------------------


def post_with_proof(
    world: World, proof: str | list[str], form: dict[str, str] | None = None
) -> httpx.Response:
    proofs = [proof] if isinstance(proof, str) else proof
    headers = [("Authorization", world.basic()["Authorization"])]
    headers += [("DPoP", value) for value in proofs]
    return httpx.post(world.token_url, data=form or world.token_form(), headers=headers)


def assert_refused(answer: httpx.Response, error: str = "invalid_dpop_proof") -> None:
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"] == error, answer.text


@pytest.mark.parametrize(
    "case",
    ["garbage", "wrong-htu", "host-header-htu", "wrong-htm", "old-iat", "bad-signature", "hs256"],
)
def test_bad_proof_is_400_invalid_dpop_proof(world: World, case: str) -> None:
    key = ECKey.generate_key("P-256")
    now = int(time.time())
    port = world.as_url.rsplit(":", 1)[1]
    makers: dict[str, Callable[[], str]] = {
        "garbage": lambda: "not.a.proof",
        "wrong-htu": lambda: create_proof(key, "POST", "https://as.example/token", now=now),
        "host-header-htu": lambda: create_proof(
            key, "POST", f"http://localhost:{port}/token", now=now
        ),
        "wrong-htm": lambda: create_proof(key, "GET", world.token_url, now=now),
        "old-iat": lambda: create_proof(key, "POST", world.token_url, now=now - 3600),
        "bad-signature": lambda: (
            create_proof(key, "POST", world.token_url, now=now)[:-8] + "AAAAAAAA"
        ),
        "hs256": lambda: ".".join(
            [
                base64.urlsafe_b64encode(b'{"typ":"dpop+jwt","alg":"HS256"}').decode().rstrip("="),
                create_proof(key, "POST", world.token_url, now=now).split(".")[1],
                "AAAA",
            ]
        ),
    }
    proof = makers[case]()
    # A client may choose the Host header; the AS checks htu against its own URL only.
    headers = {"Host": f"localhost:{port}"} if case == "host-header-htu" else {}
    answer = httpx.post(
        world.token_url,
        data=world.token_form(),
        headers={**world.basic(), "DPoP": proof, **headers},
    )
    assert_refused(answer)
    assert answer.headers["cache-control"] == "no-store"


def test_replayed_proof_is_refused(world: World) -> None:
    key = ECKey.generate_key("P-256")
    proof = create_proof(key, "POST", world.token_url, now=int(time.time()))
    first = post_with_proof(world, proof)
    assert first.status_code == 200, first.text
    again = post_with_proof(world, proof)
    assert_refused(again)
    assert "already used" in again.json()["error_description"]


def test_two_dpop_headers_are_refused(world: World) -> None:
    key = ECKey.generate_key("P-256")
    now = int(time.time())
    proofs = [create_proof(key, "POST", world.token_url, now=now) for _ in range(2)]
    assert_refused(post_with_proof(world, proofs))


def test_dpop_jkt_must_match_the_proof(world: World) -> None:
    key = ECKey.generate_key("P-256")
    other = ECKey.generate_key("P-256")
    now = int(time.time())
    mismatch = world.token_form(dpop_jkt=jwk_thumbprint(other.as_dict(private=False)))
    answer = post_with_proof(world, create_proof(key, "POST", world.token_url, now=now), mismatch)
    assert_refused(answer)
    assert "dpop_jkt" in answer.json()["error_description"]

    match = world.token_form(dpop_jkt=jwk_thumbprint(key.as_dict(private=False)))
    answer = post_with_proof(world, create_proof(key, "POST", world.token_url, now=now), match)
    assert answer.status_code == 200, answer.text
    assert answer.json()["token_type"] == "DPoP"


def test_dpop_jkt_without_a_proof_is_refused(world: World) -> None:
    key = ECKey.generate_key("P-256")
    form = world.token_form(dpop_jkt=jwk_thumbprint(key.as_dict(private=False)))
    assert_refused(httpx.post(world.token_url, data=form, headers=world.basic()))


def test_dpop_with_a_pop_key_parameter_is_refused(world: World) -> None:
    key = ECKey.generate_key("P-256")
    form = world.token_form(key=json.dumps(key.as_dict(private=False)))
    proof = create_proof(key, "POST", world.token_url, now=int(time.time()))
    assert_refused(post_with_proof(world, proof, form), "invalid_request")


def test_client_authentication_still_comes_first(world: World) -> None:
    key = ECKey.generate_key("P-256")
    proof = create_proof(key, "POST", world.token_url, now=int(time.time()))
    answer = httpx.post(
        world.token_url,
        data=world.token_form(),
        headers={"DPoP": proof},
        auth=("web-1", "wrong secret"),
    )
    assert answer.status_code == 401
    assert answer.json()["error"] == "invalid_client"


def test_without_dpop_the_token_is_not_dpop_bound(world: World) -> None:
    answer = httpx.post(world.token_url, data=world.token_form(), headers=world.basic())
    assert answer.status_code == 200, answer.text
    assert answer.json()["token_type"] == "pop"
    auth = DPoPAuth(ECKey.generate_key("P-256"), access_token=answer.json()["access_token"])
    refused = httpx.get(f"{world.api_url}/whoami", auth=auth)
    assert refused.status_code == 401
    assert "cnf.jkt" in refused.json()["error_description"]


# ---- metadata and the key from it (RFC 8414, RFC 9449 §5.1) ----------------------------------


def test_metadata_and_jwks_verify_tokens(world: World) -> None:
    metadata = httpx.get(f"{world.as_url}/.well-known/oauth-authorization-server").json()
    assert metadata["dpop_signing_alg_values_supported"] == ["ES256", "ES384", "EdDSA"]
    assert metadata["token_endpoint"] == world.token_url
    assert "refresh_token" not in metadata["grant_types_supported"]

    auth = DPoPAuth(ECKey.generate_key("P-256"))
    token = get_token(world, auth)
    verify = asyncio.run(
        jwt_token_verifier_from_metadata(
            f"{world.as_url}/.well-known/oauth-authorization-server",
            audience="temp",
            issuer=ISSUER,
        )
    )
    claims = verify(token)
    assert claims["cnf"]["jkt"] == jwk_thumbprint(auth.private_key.as_dict(private=False))


# ---- the documented client example and `keybound client http` ---------------------------------


def test_documented_client_example_runs(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.MonkeyPatch.context() as env:
        env.setenv("KEYBOUND_AS_URL", world.as_url)
        env.setenv("API_PUBLIC_URL", world.api_url)
        env.setenv("KEYBOUND_CLIENT_ID", world.client_id)
        env.setenv("KEYBOUND_CLIENT_SECRET", world.secret)
        exec(compile(documented_examples()["client"], "README.md:client", "exec"), {})
    out = capsys.readouterr().out
    assert out.startswith("200 ")
    assert "'jkt'" in out


def http_cli_command() -> list[str]:
    """``keybound client http`` once registered, else the module's own entry point."""
    if any(command.name == "http" for command in client_cli.app.registered_commands):
        return [str(BIN / "keybound"), "client", "http"]
    return [sys.executable, "-m", "keybound.tools.cli.http_commands"]


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run(
        [*http_cli_command(), *args], capture_output=True, text=True, timeout=60, env=env,
        check=False,
    )  # fmt: skip


def cli_args(world: World, *extra: str) -> list[str]:
    return [
        "--token-url", world.token_url, "--client-id", world.client_id,
        "--client-secret", world.secret, "--audience", "temp", *extra,
    ]  # fmt: skip


def test_client_http_command_end_to_end(world: World) -> None:
    proc = run_cli("GET", f"{world.api_url}/whoami", *cli_args(world, "--scope", "read"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    status, _, body = proc.stdout.partition("\n")
    assert status == "200 OK"
    claims = json.loads(body)["claims"]
    assert claims["aud"] == "temp"
    assert claims["cnf"]["jkt"] == json.loads(body)["jkt"]


def test_client_http_command_with_a_key_file(world: World, tmp_path: Path) -> None:
    key = OKPKey.generate_key("Ed25519")
    path = tmp_path / "dpop.jwk"
    path.write_text(json.dumps(key.as_dict(private=True)))
    proc = run_cli(
        "GET", f"{world.introspecting_api_url}/whoami", *cli_args(world, "--key", str(path))
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    body = json.loads(proc.stdout.partition("\n")[2])
    assert body["jkt"] == jwk_thumbprint(key.as_dict(private=False))


def test_client_http_command_exits_1_when_refused(world: World) -> None:
    proc = run_cli("GET", f"{world.api_url}/whoami", *cli_args(world, "--scope", "write"))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert proc.stdout.startswith("403 ")
    assert "insufficient_scope" in proc.stdout

    bad_secret = run_cli(
        "GET", f"{world.api_url}/whoami",
        "--token-url", world.token_url, "--client-id", "web-1", "--client-secret", "nope",
    )  # fmt: skip
    assert bad_secret.returncode == 1
    assert "invalid_client" in bad_secret.stderr


@pytest.mark.parametrize(
    ("method", "url", "extra", "message"),
    [
        ("G E T", "http://127.0.0.1:1/x", [], "not an HTTP method"),
        ("GET", "ftp://127.0.0.1/x", [], "URL must be an http"),
        ("GET", "http://127.0.0.1:1/x", ["--key", "/nonexistent/key.jwk"], "No such file"),
    ],
)
def test_client_http_command_bad_input_exits_2(
    world: World, method: str, url: str, extra: list[str], message: str
) -> None:
    proc = run_cli(method, url, *cli_args(world, *extra))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_client_http_command_refuses_a_public_key_file(world: World, tmp_path: Path) -> None:
    path = tmp_path / "public.jwk"
    path.write_text(json.dumps(ECKey.generate_key("P-256").as_dict(private=False)))
    proc = run_cli("GET", f"{world.api_url}/whoami", *cli_args(world, "--key", str(path)))
    assert proc.returncode == 2
    assert "private key" in proc.stderr


# ---- `keybound as serve --http` as a process, with --dpop-nonce and --public-url ---------------


def test_as_serve_process_with_dpop_nonce_and_public_url(tmp_path: Path) -> None:
    setup = provision(f"sqlite:///{tmp_path / 'as.db'}")
    secret = setup["web"].http_secret
    setup["store"].close()
    port = free_port(socket.SOCK_STREAM)
    public = f"http://127.0.0.1:{port}/"  # the trailing slash is dropped
    log = (tmp_path / "as.log").open("w")
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "keybound.tools.cli.as_commands", "serve",
            "--http", f"127.0.0.1:{port}", "--db", f"sqlite:///{tmp_path / 'as.db'}",
            "--state-dir", str(tmp_path / "state"),
            "--dpop-nonce", "--public-url", public,
        ],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        for _ in range(300):
            if "listening" in (tmp_path / "as.log").read_text():
                break
            assert proc.poll() is None, (tmp_path / "as.log").read_text()
            time.sleep(0.05)
        base = f"http://127.0.0.1:{port}"
        metadata = httpx.get(f"{base}/.well-known/oauth-authorization-server").json()
        assert metadata["token_endpoint"] == f"{base}/token"
        auth = DPoPAuth(ECKey.generate_key("P-256"))
        answer = httpx.post(
            f"{base}/token",
            data={"grant_type": "client_credentials", "audience": "temp", "scope": "read"},
            auth=auth,
            headers={
                "Authorization": "Basic " + base64.b64encode(f"web-1:{secret}".encode()).decode()
            },
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["token_type"] == "DPoP"
        assert auth.nonce_for(base) is not None  # the first try was answered use_dpop_nonce
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        log.close()


# ---- one replay cache for several processes (RFC 9449 §11.1) -----------------------------------


@contextmanager
def _processes(
    commands: list[list[str]], env: dict[str, str], where: Path, ready: str
) -> Iterator[None]:
    """Start each command, wait until its log shows ``ready``; stop them afterwards."""
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for number, command in enumerate(commands):
            log = where / f"process-{number}.log"
            with log.open("w") as out:
                procs.append(
                    subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
                )
            wait_for_log(log, ready, procs[-1])
        yield
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=20)


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_readme_api_in_two_processes_refuses_a_proof_replayed_to_the_other(
    world: World, tmp_path: Path, database: str
) -> None:
    """The README's API as two uvicorn processes behind one public URL: each proof is
    accepted by one of them and refused, 401 ``invalid_dpop_proof``, by the other."""
    module = tmp_path / "readme_api.py"
    module.write_text(documented_examples()["api"])
    public_url = "https://api.example.com"
    ports = [free_port(socket.SOCK_STREAM) for _ in range(2)]
    with database_url(database, tmp_path, "shared-replay.db") as replay_url:
        env = {
            **os.environ,
            "API_PUBLIC_URL": public_url,
            "KEYBOUND_RS_BUNDLE": str(world.bundle_path),
            "KEYBOUND_DPOP_REPLAY_DB": replay_url,
        }
        commands = [
            [sys.executable, "-m", "uvicorn", "readme_api:api", "--app-dir", str(tmp_path),
             "--host", "127.0.0.1", "--port", str(port), "--log-level", "info"]
            for port in ports
        ]  # fmt: skip
        with _processes(commands, env, tmp_path, "Uvicorn running on"):
            key = ECKey.generate_key("P-256")
            token = get_token(world, DPoPAuth(key))
            workers = [f"http://127.0.0.1:{port}/whoami" for port in ports]
            accepted_replays = 0
            for attempt in range(10):
                first, other = workers[attempt % 2], workers[(attempt + 1) % 2]
                proof = create_proof(
                    key, "GET", f"{public_url}/whoami", now=int(time.time()), access_token=token
                )
                headers = {"Authorization": f"DPoP {token}", "DPoP": proof}
                assert httpx.get(first, headers=headers).status_code == 200
                replay = httpx.get(other, headers=headers)
                if replay.status_code == 200:
                    accepted_replays += 1
                else:
                    assert replay.status_code == 401
                    assert 'error="invalid_dpop_proof"' in challenge(replay)
                    assert "already used" in replay.json()["error_description"]
            assert accepted_replays == 0


def test_two_as_processes_on_one_database_refuse_a_replayed_token_request(
    tmp_path: Path,
) -> None:
    """``keybound as serve`` keeps DPoP jti values in its database: a token request
    replayed to another AS process on the same database is 400 ``invalid_dpop_proof``."""
    db = f"sqlite:///{tmp_path / 'as.db'}"
    setup = provision(db)
    secret = setup["web"].http_secret
    setup["store"].close()
    public = "https://as.example.com"
    ports = [free_port(socket.SOCK_STREAM) for _ in range(2)]
    commands = [
        [sys.executable, "-m", "keybound.tools.cli.as_commands", "serve",
         "--http", f"127.0.0.1:{port}", "--db", db,
         "--state-dir", str(tmp_path / f"state-{port}"), "--public-url", public]
        for port in ports
    ]  # fmt: skip
    with _processes(commands, dict(os.environ), tmp_path, "listening"):
        key = ECKey.generate_key("P-256")
        basic = base64.b64encode(f"web-1:{secret}".encode()).decode()
        form = {"grant_type": "client_credentials", "audience": "temp", "scope": "read"}
        proof = create_proof(key, "POST", f"{public}/token", now=int(time.time()))
        headers = {"Authorization": f"Basic {basic}", "DPoP": proof}
        first = httpx.post(f"http://127.0.0.1:{ports[0]}/token", data=form, headers=headers)
        assert first.status_code == 200, first.text
        replay = httpx.post(f"http://127.0.0.1:{ports[1]}/token", data=form, headers=headers)
        assert replay.status_code == 400, replay.text
        assert replay.json()["error"] == "invalid_dpop_proof"
