"""Block-wise request bodies are bounded while they arrive (RFC 7959 §2.9.3, §4).

Real aiocoap servers (the RS site and the AS site) on 127.0.0.1; the client
sends Block1 blocks by hand so that the block at which the server refuses is
known exactly.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import aiocoap
from aiocoap.numbers.codes import Code
from aiocoap.optiontypes import BlockOption

from keybound.coap.authz_server_site import build_site
from keybound.coap.upload_limits import UploadTracker
from keybound.core import cbor
from keybound.core.authz_info import AuthzInfoRequest
from keybound.core.authz_server import MAX_REQUEST_BYTES
from keybound.tools.authz_server.provision import as_config
from tests.helpers.authz import provision
from tests.helpers.ports import free_port
from tests.helpers.rs import (
    Keys,
    client_ctx,
    establish,
    material,
    mint,
    post_authz_info,
    request,
    run,
    serving,
)

SZX_1024 = 6
SZX_256 = 4


def block(
    port: int, path: str, number: int, more: bool, szx: int, payload: bytes, **options: Any
) -> aiocoap.Message:
    message = aiocoap.Message(
        code=aiocoap.POST, uri=f"coap://127.0.0.1:{port}/{path}", payload=payload
    )
    message.opt.content_format = 19
    message.opt.block1 = BlockOption.BlockwiseTuple(number, more, szx)
    for name, value in options.items():
        setattr(message.opt, name, value)
    return message


async def send(client: aiocoap.Context, message: aiocoap.Message) -> aiocoap.Message:
    response: aiocoap.Message = await client.request(message, handle_blockwise=False).response
    return response


async def upload_until_refused(
    client: aiocoap.Context,
    port: int,
    path: str,
    total: int,
    szx: int,
    uploads: UploadTracker,
    **options: Any,
) -> tuple[int, aiocoap.Message, int]:
    """Send ``total`` bytes in blocks; return (refused block number, response, most bytes held)."""
    size = 2 ** (szx + 4)
    most_held = 0
    for number in range(total // size):
        more = (number + 1) * size < total
        response = await send(
            client, block(port, path, number, more, szx, os.urandom(size), **options)
        )
        most_held = max(most_held, uploads.held_bytes())
        if response.code != Code.CONTINUE:
            return number, response, most_held
    raise AssertionError("every block was taken")


def assert_too_large(response: aiocoap.Message, bound: int) -> None:
    assert response.code == Code.REQUEST_ENTITY_TOO_LARGE, response
    assert response.opt.size1 == bound
    assert response.opt.content_format == 19
    assert cbor.loads(response.payload)[30] == 1  # invalid_request (RFC 9200 §5.8.3)


# ---- the Resource Server ---------------------------------------------------------------------


def test_rs_authz_info_refuses_at_the_first_block_past_its_bound() -> None:
    async def body() -> None:
        async with serving(Keys()) as (site, port), client_ctx() as client:
            bound = site.max_payload
            number, response, most_held = await upload_until_refused(
                client, port, "authz-info", 64 * 1024, SZX_256, site.uploads
            )
            assert number == bound // 256  # blocks 0-3 fill the 1024 bytes exactly
            assert_too_large(response, bound)
            assert most_held <= bound
            assert len(site.uploads) == 0  # the refused upload is forgotten

    run(body())


def test_rs_protected_resource_refuses_an_oversized_oscore_put() -> None:
    keys = Keys()

    async def body() -> None:
        async with serving(keys) as (site, port), client_ctx() as client:
            mat = material()
            await establish(client, port, mint(keys, mat, scope="led.write"), mat)
            # aiocoap's client sends the body in inner Block1 blocks under OSCORE
            response = await request(client, port, aiocoap.PUT, "/led", os.urandom(64 * 1024))
            assert response.code == Code.REQUEST_ENTITY_TOO_LARGE
            assert response.opt.size1 == 4096
            assert len(site.uploads) == 0
            small = await request(client, port, aiocoap.PUT, "/led", b"x" * 3000)
            assert small.code == Code.CHANGED
            assert small.payload == b"x" * 3000

    run(body())


def test_rs_size1_announcing_too_much_is_refused_at_once() -> None:
    async def body() -> None:
        async with serving(Keys()) as (site, port), client_ctx() as client:
            first = block(port, "authz-info", 0, True, SZX_256, b"\0" * 256, size1=20_000_000)
            assert_too_large(await send(client, first), site.max_payload)
            assert len(site.uploads) == 0
            unblocked = aiocoap.Message(
                code=aiocoap.POST, uri=f"coap://127.0.0.1:{port}/authz-info", payload=b"\xa0"
            )
            unblocked.opt.size1 = 5000
            assert_too_large(await send(client, unblocked), site.max_payload)

    run(body())


def test_rs_bounds_concurrent_partial_uploads_per_peer() -> None:
    async def body() -> None:
        async with serving(Keys()) as (site, port), client_ctx() as client:
            limit = site.uploads.max_per_peer
            for n in range(limit):
                first = block(port, "authz-info", 0, True, SZX_256, b"\0" * 256, uri_query=[f"{n}"])
                assert (await send(client, first)).code == Code.CONTINUE
            assert len(site.uploads) == limit
            extra = block(port, "authz-info", 0, True, SZX_256, b"\0" * 256, uri_query=["x"])
            refused = await send(client, extra)
            assert refused.code == Code.SERVICE_UNAVAILABLE
            assert refused.opt.max_age is not None
            assert refused.opt.max_age >= 1
            assert len(site.uploads) == limit
            # another port of the same host is the same peer
            other = await aiocoap.Context.create_client_context()
            try:
                again = block(port, "authz-info", 0, True, SZX_256, b"\0" * 256, uri_query=["y"])
                assert (await send(other, again)).code == Code.SERVICE_UNAVAILABLE
            finally:
                await other.shutdown()

    run(body())


def test_rs_blockwise_token_within_the_bound_is_accepted() -> None:
    keys = Keys()

    async def body() -> None:
        async with serving(keys) as (site, port), client_ctx() as client:
            payload = AuthzInfoRequest(mint(keys, material()), os.urandom(8), b"\x42").encode()
            assert 4 * 16 < len(payload) <= site.max_payload
            size = 16
            chunks = [payload[i : i + size] for i in range(0, len(payload), size)]
            for number, chunk in enumerate(chunks):
                more = number + 1 < len(chunks)
                response = await send(client, block(port, "authz-info", number, more, 0, chunk))
                if more:
                    assert response.code == Code.CONTINUE
            assert response.code == Code.CREATED, response
            assert len(site.uploads) == 0
            # the plain datagram path is unchanged
            response = await post_authz_info(client, port, payload)
            assert response.code == Code.CREATED

    run(body())


def test_rs_block_without_its_start_is_incomplete() -> None:
    async def body() -> None:
        async with serving(Keys()) as (site, port), client_ctx() as client:
            orphan = block(port, "authz-info", 2, True, SZX_256, b"\0" * 256)
            assert (await send(client, orphan)).code == Code.REQUEST_ENTITY_INCOMPLETE
            await send(client, block(port, "authz-info", 0, True, SZX_256, b"\0" * 256))
            gap = block(port, "authz-info", 2, True, SZX_256, b"\0" * 256)
            assert (await send(client, gap)).code == Code.REQUEST_ENTITY_INCOMPLETE
            assert len(site.uploads) == 0

    run(body())


# ---- the Authorization Server ----------------------------------------------------------------


def test_as_token_refuses_an_unauthenticated_20_mb_upload_at_the_bound(
    db_url: str, tmp_path: Path
) -> None:
    setup = provision(db_url)
    store = setup["store"]
    port = free_port()

    async def main() -> None:
        site, credentials = build_site(store, as_config(store), tmp_path / "state")
        server = await aiocoap.Context.create_server_context(site, bind=("127.0.0.1", port))
        client = await aiocoap.Context.create_client_context()
        try:
            uploads = site.uploads
            for path in ("token", "introspect"):
                number, response, most_held = await upload_until_refused(
                    client, port, path, 20 * 1024 * 1024, SZX_1024, uploads
                )
                assert number == MAX_REQUEST_BYTES // 1024
                assert_too_large(response, MAX_REQUEST_BYTES)
                assert most_held <= MAX_REQUEST_BYTES
                assert len(uploads) == 0
            announced = block(port, "token", 0, True, SZX_1024, b"\0" * 1024, size1=20 << 20)
            assert_too_large(await send(client, announced), MAX_REQUEST_BYTES)
        finally:
            await client.shutdown()
            await server.shutdown()
            credentials.close()

    try:
        run(main(), timeout=60)
    finally:
        store.close()
