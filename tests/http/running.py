"""Servers for the HTTP tests: an asyncio loop in a thread, uvicorn started in it."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

import uvicorn

T = TypeVar("T")


class BackgroundLoop:
    """An asyncio loop in a daemon thread; :meth:`run` waits for a coroutine there."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=30)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


async def start_uvicorn(
    app: Any, port: int, **options: Any
) -> tuple[uvicorn.Server, asyncio.Task[None]]:
    """uvicorn serving ``app`` on 127.0.0.1:``port``, returned once it listens."""
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", lifespan="off", **options
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
            raise OSError(f"the API on port {port} did not start")
        await asyncio.sleep(0.01)
    return server, task


async def stop_uvicorn(server: uvicorn.Server, task: asyncio.Task[None]) -> None:
    server.should_exit = True
    await task


def assert_challenged(response: Any, scheme: str, description: str) -> None:
    """A 401 whose ``WWW-Authenticate`` is ``scheme`` with ``invalid_token`` and ``description``."""
    assert response.status_code == 401, response.text
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith(f"{scheme} "), challenge
    assert 'error="invalid_token"' in challenge
    assert description in challenge, challenge
