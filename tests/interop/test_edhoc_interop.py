"""aiocoap's own EDHOC client against keybound's RS (the EDHOC and OSCORE profile).

The device's key is made by ``aiocoap-keygen`` and ``aiocoap-client`` runs EDHOC
from an aiocoap credentials file (EDN): nothing of keybound's client code is
involved. Its credential, as aiocoap prints it, is what the AS binds in the token.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import cbor2
import cbor_diag

from keybound.core.edhoc_credentials import Ccs
from tests.helpers.edhoc import Party, mint_edhoc, post_token, serving_edhoc
from tests.helpers.paths import BIN
from tests.helpers.rs import Keys, client_ctx, run


async def _run(*argv: str, cwd: Path, timeout: float = 30) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *argv, cwd=cwd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def _aiocoap_device(root: Path, name: str, kid: str) -> tuple[Path, str, Ccs]:
    """A key made by aiocoap-keygen: its file, its ``{14: CCS}`` in EDN, the CCS."""
    key = root / f"{name}.key"
    code, printed = await _run(
        str(BIN / "aiocoap-keygen"), "generate", str(key), "--kid", kid, "--subject", name, cwd=root
    )
    assert code == 0, printed
    kccs = cbor2.loads(cbor_diag.diag2cbor(printed.strip()))
    return key, printed.strip(), Ccs.decode(cbor2.dumps(kccs[14], canonical=True))


def _credentials(root: Path, port: int, key: Path, own_edn: str, rs_ccs: Ccs) -> Path:
    rs_edn = cbor_diag.cbor2diag(cbor2.dumps({14: cbor2.loads(rs_ccs.encoded)}))
    path = root / f"{key.stem}-credentials.diag"
    path.write_text(
        f'{{"coap://127.0.0.1:{port}/*": {{"edhoc-oscore": {{'
        f'"suite": 2, "method": 3, "own_cred_style": "by-key-id", "own_cred": {own_edn}, '
        f'"private_key_file": "{key}", "peer_cred": {rs_edn}}}}}}}'
    )
    return path


def test_aiocoap_client_is_accepted_with_its_token_posted_and_refused_without(
    tmp_path: Path,
) -> None:
    keys = Keys()
    rs = Party.make(b"\x32", "rs.example")

    async def body() -> None:
        posted_key, posted_edn, posted_ccs = await _aiocoap_device(tmp_path, "dev-a", "2a")
        other_key, other_edn, _other_ccs = await _aiocoap_device(tmp_path, "dev-b", "2b")
        async with serving_edhoc(keys, rs) as (site, port), client_ctx() as plain:
            answer = await post_token(plain, port, mint_edhoc(keys, posted_ccs))
            assert int(answer.code) == 65  # 2.01
            accepted = _credentials(tmp_path, port, posted_key, posted_edn, rs.ccs)
            code, out = await _run(
                str(BIN / "aiocoap-client"), "--credentials", str(accepted),
                f"coap://127.0.0.1:{port}/temp", cwd=tmp_path,
            )  # fmt: skip
            assert code == 0, out
            assert out.strip() == "21.50"
            assert site.edhoc is not None
            assert site.edhoc.session(posted_ccs.fingerprint) is not None
            refused = _credentials(tmp_path, port, other_key, other_edn, rs.ccs)
            code, out = await _run(
                str(BIN / "aiocoap-client"), "--credentials", str(refused),
                f"coap://127.0.0.1:{port}/temp", cwd=tmp_path,
            )  # fmt: skip
            # The RS answered the combined EDHOC + OSCORE request with an unprotected 4.01,
            # which aiocoap-client reports as a response without OSCORE.
            assert code != 0
            assert "21.50" not in out
            assert "NotAProtectedMessage" in out, out
            assert len(site.edhoc) == 1  # only the accepted client's session

    run(body(), timeout=90)
