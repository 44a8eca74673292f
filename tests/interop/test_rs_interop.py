"""Wire interop with other CoAP implementations, as separate processes.

* Debian's libcoap client (``coap-client-notls``) posts a token to ``/authz-info``.
* ``aiocoap-client``, with an OSCORE context in files that this test derives from
  the RFC 9203 rules (not from keybound's client code), reads a protected resource.

Together they show that a client built from the RFCs alone, on two other stacks,
completes the flow against keybound's RS.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import cbor2
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from keybound.coap.resource_server_site import ResourceServerSite
from keybound.core.oscore_derivation import derive_context_parameters, derive_keys
from keybound.core.resource_server import ResourceServer, RsPolicy
from tests.helpers.paths import BIN
from tests.helpers.ports import free_udp_port
from tests.helpers.require import require
from tests.helpers.rs import AS_URI, AUDIENCE, ISSUER, Keys, Temperature, material, mint, run

LIBCOAP_CLIENT = shutil.which("coap-client-notls") or shutil.which("coap-client")


@asynccontextmanager
async def rs_serving(keys: Keys) -> AsyncIterator[int]:
    rs = ResourceServer(
        RsPolicy(
            audience=AUDIENCE, as_uri=AS_URI, token_keys=(keys.token_key,),
            as_public_keys=(keys.as_key.public_key(),), issuer=ISSUER,
        )
    )  # fmt: skip
    site = ResourceServerSite(rs)
    site.add_protected("/temp", Temperature(), scopes={"GET": ["temp.read"]})
    port = free_udp_port()
    await site.serve(("127.0.0.1", port))
    try:
        yield port
    finally:
        await site.shutdown()


async def _run(*argv: str, timeout: float = 30) -> tuple[int, bytes, bytes]:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    return proc.returncode, out, err


def rfc9203_master_salt(salt: bytes, nonce1: bytes, nonce2: bytes) -> bytes:
    """RFC 9203 §4.3: the CBOR byte strings of salt, N1 and N2, concatenated."""
    return cbor2.dumps(salt) + cbor2.dumps(nonce1) + cbor2.dumps(nonce2)


def hkdf(secret: bytes, salt: bytes, info: list[object], length: int) -> bytes:
    return HKDF(hashes.SHA256(), length, salt, cbor2.dumps(info)).derive(secret)


def test_libcoap_posts_a_token_and_aiocoap_client_reads_over_oscore(tmp_path: Path) -> None:
    require(
        LIBCOAP_CLIENT,
        "libcoap's coap-client is not installed (Debian package libcoap3-bin; .ci/run installs it)",
    )
    assert LIBCOAP_CLIENT is not None
    keys = Keys()
    mat = material(b"\x07")
    token = mint(keys, mat)
    nonce1, id1 = os.urandom(8), b"\x21"
    post = tmp_path / "authz-info.cbor"
    post.write_bytes(cbor2.dumps({1: token, 40: nonce1, 43: id1}))
    answer_file = tmp_path / "answer.cbor"

    async def body() -> None:
        async with rs_serving(keys) as port:
            code, out, err = await _run(
                LIBCOAP_CLIENT, "-m", "post", "-t", "19", "-f", str(post), "-o", str(answer_file),
                f"coap://127.0.0.1:{port}/authz-info",
            )  # fmt: skip
            assert code == 0, (out, err)
            answer = cbor2.loads(answer_file.read_bytes())
            assert set(answer) == {42, 44}, answer
            nonce2, id2 = answer[42], answer[44]
            assert id2 != id1

            # The client's context, derived here from RFC 9203 §4.3 and RFC 8613 §3.2:
            # Sender ID = ID2, Recipient ID = ID1, Master Salt = bstr(salt) | bstr(N1) | bstr(N2).
            salt = rfc9203_master_salt(b"", nonce1, nonce2)
            context_dir = tmp_path / "client-context"
            context_dir.mkdir()
            (context_dir / "settings.json").write_text(json.dumps({
                "sender-id_hex": id2.hex(), "recipient-id_hex": id1.hex(),
                "secret_hex": mat.ms.hex(), "salt_hex": salt.hex(),
                "algorithm": "AES-CCM-16-64-128", "kdf-hashfun": "sha256",
            }))  # fmt: skip
            credentials = tmp_path / "credentials.json"
            credentials.write_text(json.dumps({
                f"coap://127.0.0.1:{port}/*": {"oscore": {"basedir": f"{context_dir}/"}}
            }))  # fmt: skip
            code, out, err = await _run(
                str(BIN / "aiocoap-client"), "--credentials", str(credentials),
                f"coap://127.0.0.1:{port}/temp",
            )  # fmt: skip
            assert code == 0, (out, err)
            float(out.decode().strip())  # the temperature, read over OSCORE

            # The RS's keys (keybound's derivation) mirror the ones RFC 8613 §3.2.1 gives
            # for the client's inputs, computed here with a bare HKDF.
            rs_side = derive_keys(
                derive_context_parameters(mat, nonce1, nonce2, id1, id2, role="rs")
            )
            assert rs_side.recipient_key == hkdf(mat.ms, salt, [id2, None, 10, "Key", 16], 16)
            assert rs_side.sender_key == hkdf(mat.ms, salt, [id1, None, 10, "Key", 16], 16)
            assert rs_side.common_iv == hkdf(mat.ms, salt, [b"", None, 10, "IV", 13], 13)
            # Without the context the same request is refused with 4.01.
            code, out, err = await _run(
                str(BIN / "aiocoap-client"), f"coap://127.0.0.1:{port}/temp"
            )
            assert b"4.01" in out + err

    run(body(), timeout=90)
